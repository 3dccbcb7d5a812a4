"""Coefficient files (spec 9.6): the one reader behind ``--coefficients``, ``swanref schedule
FILE`` and ``coefficients=PATH``.

A file is JSON -- a list of triples, or ``{"coefficients": [...], "divisor": d}`` (which
includes PolarExpress's ``save_coefficients`` files) -- or text with one ``a b c`` (or
``a, b, c``, ``(a, b, c),``) per line, ``#`` starting a comment.  A triple may be a pair
``(a, b)`` (``c = 0``).  The file is read through :mod:`swanref.spec.input_files` (a regular
file of at most :data:`MAX_BYTES`, JSON nested at most :data:`MAX_DEPTH` levels), then
validated: finite numbers only, 2 or 3 per step, 1 to ``MAX_ITERATIONS`` steps, a divisor that
is a finite number > 0.  Every problem is an InputFileError (a ValueError) naming the file.
"""
from __future__ import annotations

import math
import os

from swanref.spec.input_files import InputFileError, json_depth, parse_json, read_text
from swanref.spec.validate import MAX_ITERATIONS

__all__ = ["MAX_BYTES", "MAX_DEPTH", "read_coefficient_file"]

#: a coefficient file is at most 1 MiB: ~13,000 full-precision triples, far more steps than
#: any schedule uses; a bigger file (a 1M-line table, /dev/zero's worth) is refused unread
MAX_BYTES = 1 << 20
#: {"coefficients": [[a, b, c], ...]} is 3 levels deep
MAX_DEPTH = 3


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise InputFileError(f"{where}: {v!r} is not a number")
    try:
        x = float(v)
    except (ValueError, OverflowError):
        raise InputFileError(f"{where}: cannot read {v!r} as a number") from None
    if not math.isfinite(x):
        raise InputFileError(f"{where}: {v!r} is not finite")
    return x


def _from_text(text: str, where: str) -> list:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip().strip("(),[]").replace(",", " ")
        if line:
            rows.append([_number(v, f"{where} line {lineno}") for v in line.split()])
    return rows


def read_coefficient_file(path, what: str = "coefficient file"):
    """``(triples, divisor)`` from a coefficient file; InputFileError if it is not one."""
    where = f"{what} {os.fspath(path)}"
    text = read_text(path, what, MAX_BYTES)
    divisor = 1.0
    if text.lstrip().startswith(("[", "{")):
        depth = json_depth(text)
        if depth > MAX_DEPTH:
            raise InputFileError(f"{where}: nested {depth} levels deep, above the limit of "
                                 f"{MAX_DEPTH} for a coefficient table")
        try:
            data = parse_json(text, where, MAX_DEPTH)
        except InputFileError:
            if text.lstrip().startswith("{"):
                raise
            data = _from_text(text, where)  # '[a, b, c]' per line: the text form
        if isinstance(data, dict):
            if "coefficients" not in data:
                raise InputFileError(f"{where}: a JSON object needs a 'coefficients' list")
            if "divisor" in data:
                divisor = _number(data["divisor"], f"{where}: divisor")
            data = data["coefficients"]
    else:
        data = _from_text(text, where)
    if not isinstance(data, list):
        raise InputFileError(f"{where}: coefficients must be a list of [a, b, c] triples")
    if not data:
        raise InputFileError(f"{where}: no coefficients found")
    if len(data) > MAX_ITERATIONS:
        raise InputFileError(f"{where}: {len(data)} steps, above the limit of {MAX_ITERATIONS}")
    triples = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) not in (2, 3):
            raise InputFileError(f"{where}: step {i + 1} must be [a, b, c] or [a, b], got "
                                 f"{row!r:.80}")
        t = tuple(_number(v, f"{where}: step {i + 1}") for v in row)
        triples.append(t if len(t) == 3 else t + (0.0,))
    if not divisor > 0:
        raise InputFileError(f"{where}: divisor must be > 0, got {divisor!r}")
    return triples, divisor
