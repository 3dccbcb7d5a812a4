"""Claim files: TOML or JSON, ``format = "swanref-claim"``, ``version = 1`` (docs/spec.md 11.2).

A claim file is untrusted input: only a regular file is read (no FIFO, device or directory),
at most :data:`MAX_BYTES`, nesting at most :data:`MAX_DEPTH` levels; anything else is a
:class:`ClaimError` naming the file, never a hang or a traceback.  TOML is read with the
standard library's ``tomllib`` (Python >= 3.11) or the ``tomli`` backport (declared for 3.10 in
pyproject.toml); writing TOML needs no library (the format is flat: scalars, number lists, one
table of tolerance overrides).
"""
from __future__ import annotations

import json
import math
import os

from swanref.spec import input_files
from swanref.spec.input_files import InputFileError
from swanref.verify.claims.knobs import ClaimError
from swanref.verify.claims.model import Claim

try:  # Python >= 3.11
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10 with the tomli backport
    try:
        import tomli as _toml
    except ImportError:
        _toml = None

MAX_BYTES = 64 * 1024
MAX_DEPTH = 4


def _depth(x, level=0):
    if level > MAX_DEPTH:
        return level
    if isinstance(x, dict):
        return max([_depth(v, level + 1) for v in x.values()] or [level + 1])
    if isinstance(x, list):
        return max([_depth(v, level + 1) for v in x] or [level + 1])
    return level


def read_text(path) -> str:
    """The text of a regular file of at most MAX_BYTES bytes (ClaimError otherwise), read
    through swanref.spec.input_files (spec 6.7: no FIFO or device, size checked first)."""
    try:
        return input_files.read_text(path, "claim file", MAX_BYTES)
    except InputFileError as exc:
        raise ClaimError(str(exc)) from exc


def parse_text(text: str, kind: str, where: str = "claim") -> Claim:
    """A claim from TOML (``kind='toml'``) or JSON (``kind='json'``) text."""
    if kind == "json":
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ClaimError(f"{where}: not valid JSON ({exc})") from exc
    elif kind == "toml":
        if _toml is None:  # pragma: no cover - only without tomli on Python 3.10
            raise ClaimError(f"{where}: reading TOML on Python < 3.11 needs the 'tomli' package "
                             "(pip install tomli); JSON claim files need nothing")
        try:
            data = _toml.loads(text)
        except (_toml.TOMLDecodeError, RecursionError) as exc:
            raise ClaimError(f"{where}: not valid TOML ({exc})") from exc
    else:
        raise ClaimError(f"{where}: claim files are .toml or .json, not {kind!r}")
    if _depth(data) > MAX_DEPTH:
        raise ClaimError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        return Claim.from_dict(data)
    except ClaimError as exc:
        raise ClaimError(f"{where}: {exc}") from exc


def _no_constant(name):
    raise ValueError(f"{name} is not a claim value")


def load_claim(path) -> Claim:
    """Read a claim file; the suffix (.toml / .json) picks the syntax."""
    text = read_text(path)
    kind = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    return parse_text(text, kind, f"claim file {os.fspath(path)}")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ClaimError(f"cannot write the non-finite number {v!r}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ClaimError(f"cannot write {type(v).__name__} {v!r} as a claim value")


def dumps(claim: Claim, kind: str = "toml", *, defaults: bool = False) -> str:
    """The claim as TOML or JSON text (``load_claim`` reads it back equal)."""
    d = claim.to_dict(defaults=defaults)
    if kind == "json":
        return json.dumps(d, indent=2) + "\n"
    if kind != "toml":
        raise ClaimError(f"claim files are toml or json, not {kind!r}")
    tables = {k: d.pop(k) for k in list(d) if isinstance(d[k], dict)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items()]
    for name, table in tables.items():
        for key, entry in table.items():
            lines.append("")
            lines.append(f"[{name}.{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items())
    return "\n".join(lines) + "\n"


def save_claim(claim: Claim, path, *, defaults: bool = False) -> None:
    kind = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    text = dumps(claim, kind, defaults=defaults)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
