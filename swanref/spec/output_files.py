"""Writing a file into a folder the user gave, never through what is already there.

``open(path, "wb")`` follows a symbolic link planted at ``path`` (and overwrites the file it
points to, outside the folder) and blocks forever on a FIFO.  :func:`replace_file` instead
writes a new file under a fresh name in the same folder and renames it over ``path``: the
rename replaces the directory entry itself -- a link, FIFO or old file -- and nothing it
pointed to is touched (spec 6.7).
"""
from __future__ import annotations

import os
import tempfile

__all__ = ["replace_file", "real_directory", "output_path_problem"]


def output_path_problem(path: str, option: str) -> str | None:
    """Why ``path`` cannot take an output file (its folder is missing or not a folder, or it
    is a folder itself), or None.  Tools check this before a long run, not after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{option} {path}: the folder {folder} does not exist"
    if os.path.isdir(path):
        return f"{option} {path}: is a folder, not a file name"
    return None


def real_directory(path: str, what: str = "folder") -> str:
    """``path`` created if missing; OSError if it is a symbolic link or not a directory (a
    folder swanref writes into must not lead elsewhere)."""
    if os.path.islink(path):
        raise NotADirectoryError(f"{what} {path} is a symbolic link; swanref writes only into "
                                 "a real folder")
    os.makedirs(path, exist_ok=True)
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path} exists and is not a folder")
    return path


def replace_file(path: str, data: bytes) -> None:
    """Write ``data`` as a new regular file at ``path`` (a link or other entry there is
    replaced, not followed); OSError when ``path`` is a folder or cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError(f"{path} is a folder; cannot write a file there")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".swanref-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
