"""Run the examples of docs/verification.md exactly as written.

An example is a fenced block preceded by ``<!-- example: group=NAME [requires=X] (file=F | run)
[expect=N] -->``.  Blocks of one group run in order in a fresh directory: ``file=`` blocks are
written there, ``run`` blocks are executed line by line with bash, with ``swanref`` and
``python`` on PATH pointing at this checkout, and each line must exit with ``expect`` (default
0).  ``requires=`` names a Python module or an executable; the group is skipped without it.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "verification.md")

_MARK = re.compile(r"<!--\s*example:\s*(?P<attrs>[^>]*?)\s*-->\s*\n```[^\n]*\n(?P<body>.*?)\n```",
                   re.S)


def parse(text):
    groups: dict[str, list[dict]] = {}
    for m in _MARK.finditer(text):
        attrs = {}
        for tok in m.group("attrs").split():
            key, _, value = tok.partition("=")
            attrs[key] = value if value else True
        attrs["body"] = m.group("body")
        groups.setdefault(attrs["group"], []).append(attrs)
    return groups


GROUPS = parse(open(DOC).read())


def _available(req):
    """A Python module (identifier) or an executable on PATH (e.g. g++)."""
    if req.isidentifier():
        return importlib.util.find_spec(req) is not None
    return shutil.which(req) is not None


def _plugin_entry_point_installed():
    from importlib.metadata import entry_points
    return any(ep.name == "swanref" for ep in entry_points(group="pytest11"))


def _shims(tmp):
    bindir = os.path.join(tmp, ".bin")
    os.makedirs(bindir)
    for name, cmd in (("swanref", f'exec "{sys.executable}" -m swanref.cli "$@"'),
                      ("python", f'exec "{sys.executable}" "$@"')):
        path = os.path.join(bindir, name)
        with open(path, "w") as fh:
            fh.write(f"#!/bin/sh\n{cmd}\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return bindir


def test_doc_has_examples_for_every_framework():
    assert {"numpy", "torch", "jax", "assertions", "plugin", "vectors", "cpp"} <= set(GROUPS)
    for name, blocks in GROUPS.items():
        assert any("run" in b for b in blocks), name


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_doc_example(group, tmp_path):
    blocks = GROUPS[group]
    for req in {b.get("requires") for b in blocks if b.get("requires")}:
        if not _available(req):
            pytest.skip(f"{req} not available")
    env = dict(os.environ)
    env["PATH"] = _shims(str(tmp_path)) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    for block in blocks:
        if "file" in block:
            (tmp_path / block["file"]).write_text(block["body"] + "\n")
            continue
        assert "run" in block, block
        expect = int(block.get("expect", 0))
        for line in block["body"].splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if _plugin_entry_point_installed():
                line = line.replace("-p swanref.pytest_plugin", "")
            p = subprocess.run(["bash", "-c", line], cwd=str(tmp_path), env=env,
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == expect, (
                f"{line!r} exited {p.returncode}, expected {expect}\n{p.stdout}\n{p.stderr}")
            if expect == 1 and "swanref check " in line:
                assert "[FAIL]" in p.stdout


def test_doc_lists_every_checker_option_and_property():
    from swanref.verify.checker import build_parser
    from swanref.verify.properties import CATALOGUE
    text = open(DOC).read()
    for action in build_parser()._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                assert opt in text, f"{opt} is not documented in docs/verification.md"
    undocumented = {p.name for p in CATALOGUE} - set(re.findall(r"`(\w+)`", text))
    assert not undocumented, f"properties missing from docs/verification.md: {undocumented}"
