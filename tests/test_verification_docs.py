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


#: ``<!-- output: group=NAME -->`` before a ```text block: an excerpt of what the group's last
#: ``run`` line printed (checked by test_doc_example; see _excerpt_matches).
_OUTPUT = re.compile(r"<!--\s*output:\s*group=(?P<group>\S+)\s*-->\s*\n```[^\n]*\n(?P<body>.*?)\n```",
                     re.S)


def _number(token):
    try:
        return float(token.strip("(),;:"))
    except ValueError:
        return None


def _same_token(doc, out):
    """Equal, or two numbers at the rounding level (|x| < 1e-9: they move with the BLAS build)
    within a factor 3 of each other."""
    if doc == out:
        return True
    a, b = _number(doc), _number(out)
    if a is None or b is None or doc.strip("(),;:.e0123456789+-") != out.strip("(),;:.e0123456789+-"):
        return False
    return 0 < a < 1e-9 and 0 < b < 1e-9 and a / 3 <= b <= 3 * a


def _excerpt_matches(line, output_lines):
    """An excerpt line is one output line, whitespace collapsed; a line ending in ``...`` is a
    prefix; ``timing:`` lines (wall time) are not compared."""
    want = line.split()
    prefix = bool(want) and want[-1].endswith("...")
    if prefix:
        last = want.pop()[:-3]
        if last:
            want.append(last)
    for out in output_lines:
        got = out.split()
        if (len(got) >= len(want) if prefix else len(got) == len(want)) and all(
                _same_token(a, b) for a, b in zip(want, got)):
            return True
    return False


def outputs(text):
    """{(group, command): excerpt}: the command is the last line of the nearest ``run`` block
    of the group before the excerpt."""
    found = {}
    for m in _OUTPUT.finditer(text):
        runs = [r for r in _MARK.finditer(text, 0, m.start())
                if f"group={m.group('group')}" in r.group("attrs").split()
                and "run" in r.group("attrs").split()]
        assert runs, f"output excerpt of group {m.group('group')} follows no run block"
        command = [ln for ln in runs[-1].group("body").splitlines() if ln.strip()][-1]
        found[(m.group("group"), command)] = m.group("body")
    return found


OUTPUTS = outputs(open(DOC).read())


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
            excerpt = OUTPUTS.get((group, line))
            for shown in (excerpt or "").splitlines():
                if shown.strip() and not shown.startswith("timing:"):
                    assert _excerpt_matches(shown, p.stdout.splitlines()), \
                        f"docs/verification.md shows {shown!r}; {line!r} printed:\n{p.stdout}"


def test_excerpt_matching_rules():
    out = ["agrees_with_reference   pass   2.22e-16   3.55e-15   10  shape (1, 2), seed 2534"]
    assert _excerpt_matches("agrees_with_reference pass 2.2e-16 3.55e-15 10 shape (1, 2), seed 2534", out)
    assert _excerpt_matches("agrees_with_reference pass ...", out)
    assert not _excerpt_matches("agrees_with_reference pass 2.22e-16 3.55e-15 10 shape (1, 3), seed 2534", out)
    assert not _excerpt_matches("agrees_with_reference pass 2.22e-16 3.55e-13 10 shape (1, 2), seed 2534", out)
    assert not _excerpt_matches("agrees_with_reference FAIL ...", out)
    assert not _excerpt_matches("agrees_with_reference pass 0.5 3.55e-15 10 shape (1, 2), seed 2534",
                                ["agrees_with_reference pass 0.51 3.55e-15 10 shape (1, 2), seed 2534"])
    assert {g for g, _ in OUTPUTS} == {"numpy", "sharded"}


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
