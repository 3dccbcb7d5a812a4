"""Reading a file that comes from elsewhere: type and size checked before a byte is read.

Every file swanref reads on a user's behalf (coefficient files, golden-vector sets, claim
files) goes through here (spec 6.7):

* only a **regular file** is read: a FIFO, device, socket or folder is refused.  The file is
  opened non-blocking and checked on the open descriptor (``fstat``), so a FIFO swapped in
  after a check cannot block the open, and ``/dev/zero`` is never read;
* its **size** is checked against the caller's documented limit before reading, and at most
  ``limit + 1`` bytes are ever read (a file growing meanwhile is refused too);
* **JSON** is parsed only after its bracket nesting is measured (at most ``max_depth``: no
  ``RecursionError``), with ``NaN``/``Infinity`` and numbers that overflow to infinity refused.

Every failure is an :class:`InputFileError` (a ``ValueError``) with one line naming the file;
command-line tools print it and exit with status 2.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat

import numpy as np

__all__ = ["InputFileError", "MAX_JSON_DEPTH", "check_regular_file", "open_binary", "read_bytes",
           "read_text", "parse_json", "read_json", "json_depth"]

#: nesting a JSON file may have (coefficient tables need 2, vector manifests 6)
MAX_JSON_DEPTH = 32


class InputFileError(ValueError):
    """A file swanref was asked to read is missing, not a regular file, too big or malformed."""


def _path(path, what: str) -> str:
    try:
        path = os.fspath(path)
    except TypeError:
        raise InputFileError(f"{what} must be a file path, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or "\0" in path:
        raise InputFileError(f"{what} must be a non-empty file path, got {path!r}")
    return path


def _open_regular(path: str, what: str, limit: int):
    """``(fd, size)`` of ``path`` opened read-only, after the type and size checks."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputFileError(f"{what} {path}: not found") from None
    except OSError as exc:
        raise InputFileError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket or other special file")
            raise InputFileError(f"{what} {path}: not a regular file ({kind}); only a regular "
                                 "file is read")
        if st.st_size > limit:
            raise InputFileError(f"{what} {path}: {st.st_size} bytes, above the {limit}-byte "
                                 f"limit for a {what}")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def check_regular_file(path, what: str, limit: int) -> int:
    """The size of ``path`` if it is a regular file of at most ``limit`` bytes; else
    InputFileError.  For readers that need the path itself (``np.load`` memory-maps by name)."""
    fd, size = _open_regular(_path(path, what), what, limit)
    os.close(fd)
    return size


def open_binary(path, what: str, limit: int):
    """A binary file object on a regular file of at most ``limit`` bytes, for reading in
    chunks (InputFileError otherwise); the caller closes it (``with``)."""
    path = _path(path, what)
    fd, _ = _open_regular(path, what, limit)
    return os.fdopen(fd, "rb")


def read_bytes(path, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (InputFileError otherwise)."""
    path = _path(path, what)
    fd, _ = _open_regular(path, what, limit)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"{what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputFileError(f"{what} {path}: grew above the {limit}-byte limit while read")
    return data


def read_text(path, what: str, limit: int) -> str:
    """UTF-8 text of a regular file of at most ``limit`` bytes (InputFileError otherwise)."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {os.fspath(path)}: not UTF-8 text ({exc.reason} at byte "
                             f"{exc.start})") from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text, strings skipped (linear, no recursion)."""
    code = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    step = (np.isin(code, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(code, (ord("]"), ord("}"))))
    return int(np.cumsum(step).max(initial=0))


def _finite_float(token: str) -> float:
    v = float(token)
    if not math.isfinite(v):
        raise ValueError(f"number {token} overflows to infinity")
    return v


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed (values must be finite numbers)")


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH):
    """JSON text parsed with bounded nesting and finite numbers only (InputFileError)."""
    depth = json_depth(text)
    if depth > max_depth:
        raise InputFileError(f"{where}: JSON nested {depth} levels deep, above the limit of "
                             f"{max_depth}")
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InputFileError(f"{where}: not valid JSON ({exc})") from None


def read_json(path, what: str, limit: int, max_depth: int = MAX_JSON_DEPTH):
    """A JSON file: :func:`read_text`'s checks, then :func:`parse_json`'s."""
    return parse_json(read_text(path, what, limit), f"{what} {os.fspath(path)}", max_depth)
