"""Reading a vector set safely: manifest loading and type checks, path confinement, size
limits, checksums, ``.npy`` header checks; and the bytes the writer produces (npy, sha256).

A vector set comes from elsewhere: every path it names is confined to its folder, every size
is checked against the manifest before a byte of data is read, every field is type-checked,
and whatever is wrong ends in VectorError (one line, exit status 2), never a traceback.
"""
from __future__ import annotations

import hashlib
import io
import math
import os

import numpy as np

from swanref.spec.input_files import (InputFileError, check_regular_file, open_binary,
                                      read_json, read_text)
from swanref.verify.vectors.schema import (CASE_DTYPES, MAX_ELEMENTS, MAX_FILE_BYTES,
                                           MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH, METRICS, OPS,
                                           SCHEMA, VectorError)


def npy_bytes(arr) -> bytes:
    arr = np.ascontiguousarray(arr)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



def confined(directory: str, rel, what: str = "path") -> str:
    """``directory/rel`` when ``rel`` is a relative path inside ``directory`` (symbolic links
    resolved); VectorError for absolute paths, '..' components and links that lead out."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise VectorError(f"{what} must be a non-empty relative path, got {rel!r}")
    if os.path.isabs(rel) or rel[0] in "/\\" or os.path.splitdrive(rel)[0]:
        raise VectorError(f"{what} {rel!r} is an absolute path; a vector set may only name "
                          "files inside its own folder")
    if ".." in rel.replace("\\", "/").split("/"):
        raise VectorError(f"{what} {rel!r} leaves the vector set's folder ('..')")
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, path]) != root:
        raise VectorError(f"{what} {rel!r} resolves outside the vector set's folder")
    return path


def file_size(path: str, rel: str, limit: int = MAX_FILE_BYTES) -> int:
    """The size of a regular file of at most ``limit`` bytes (VectorError otherwise: a FIFO or
    device is never opened for reading, spec 6.7)."""
    try:
        return check_regular_file(path, f"file {rel} of a vector set", limit)
    except InputFileError as exc:
        raise VectorError(str(exc)) from None


def sha256_file(path: str, limit: int = max(MAX_FILE_BYTES, MAX_MANIFEST_BYTES)) -> str:
    h = hashlib.sha256()
    try:
        with open_binary(path, "file of a vector set", limit) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except InputFileError as exc:
        raise VectorError(str(exc)) from None
    return h.hexdigest()


def read_npy(path: str, *, shape=None, dtype=None) -> np.ndarray:
    """A ``.npy`` file as an array, checked before its data is read: no pickles (object
    dtypes), a header whose shape fits the file's size and :data:`MAX_ELEMENTS`, and the
    ``shape`` / ``dtype`` the manifest states when given.  ValueError (one line) otherwise."""
    check_regular_file(path, ".npy file", MAX_FILE_BYTES)  # no FIFO/device, size (spec 6.7)
    try:
        # mmap reads and checks the header only; a header claiming more data than the file
        # holds, or Python objects, fails here without allocating anything.  Whatever else
        # np.load raises (a truncated zip is zipfile.BadZipFile) is a malformed file too.
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is "not a .npy file"
        raise ValueError(f"not a valid numeric .npy file ({type(exc).__name__}: {exc})") \
            from None
    if not isinstance(mm, np.ndarray):
        if hasattr(mm, "close"):
            mm.close()  # an .npz archive: NpzFile holds the file open
        raise ValueError("not a .npy array file (a .npz archive or other container)")
    if mm.dtype.kind not in "biuf" or mm.dtype.hasobject:
        raise ValueError(f"dtype {mm.dtype} is not a real numeric dtype")
    if not mm.dtype.isnative:  # big-endian on a little-endian machine: the same numbers
        mm = mm.astype(mm.dtype.newbyteorder("="))
    if mm.size > MAX_ELEMENTS:
        raise ValueError(f"{mm.size} entries, above the limit of {MAX_ELEMENTS}")
    if shape is not None and list(mm.shape) != list(shape):
        raise ValueError(f"shape {list(mm.shape)} != {list(shape)} stated in manifest.json")
    if dtype is not None and str(mm.dtype) != dtype:
        raise ValueError(f"dtype {mm.dtype} != {dtype} stated in manifest.json")
    arr = np.array(mm)  # into memory, detached from the file
    del mm
    return arr


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_array_entry(entry, where: str, directory: str | None):
    if not isinstance(entry, dict):
        raise VectorError(f"{where} must be an object with file, sha256, dtype, shape")
    for key in ("file", "sha256", "dtype", "shape"):
        if key not in entry:
            raise VectorError(f"{where} has no {key!r}")
    if directory is not None:
        confined(directory, entry["file"], f"{where}.file")
    sha = entry["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise VectorError(f"{where}.sha256 must be 64 lowercase hex digits, got {sha!r}")
    if entry["dtype"] not in CASE_DTYPES:
        raise VectorError(f"{where}.dtype must be one of {', '.join(CASE_DTYPES)}, got "
                          f"{entry['dtype']!r}")
    shape = entry["shape"]
    if not (isinstance(shape, list) and len(shape) >= 2 and all(_is_count(s) for s in shape)):
        raise VectorError(f"{where}.shape must be a list of >= 2 non-negative integers, got "
                          f"{shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise VectorError(f"{where}.shape {shape} has more than {MAX_ELEMENTS} entries")


def validate_manifest(manifest, directory: str | None = None, where: str = "manifest.json"):
    """Type-check a manifest (and confine its paths to ``directory``); VectorError if bad."""
    def bad(msg):
        raise VectorError(f"{where}: {msg}")
    if not isinstance(manifest, dict):
        bad("not a JSON object")
    if manifest.get("schema") != SCHEMA:
        bad(f"schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    groups = manifest.get("testGroups")
    if not isinstance(groups, list):
        bad("testGroups must be a list")
    names = set()
    for gi, g in enumerate(groups):
        w = f"testGroups[{gi}]"
        if not isinstance(g, dict):
            bad(f"{w} is not an object")
        if g.get("op") not in OPS:
            bad(f"{w}.op must be one of {', '.join(OPS)}, got {g.get('op')!r}")
        if not isinstance(g.get("reading"), dict):
            bad(f"{w}.reading must be an object")
        if g.get("metric") not in METRICS:
            bad(f"{w}.metric must be one of {', '.join(METRICS)}, got {g.get('metric')!r}")
        if not isinstance(g.get("tests"), list):
            bad(f"{w}.tests must be a list")
        for ti, t in enumerate(g["tests"]):
            wt = f"{w}.tests[{ti}]"
            if not isinstance(t, dict):
                bad(f"{wt} is not an object")
            name = t.get("name")
            if not isinstance(name, str) or not name or not name.isprintable():
                bad(f"{wt}.name must be a non-empty printable string, got {name!r}")
            if name in names:
                bad(f"{wt}: duplicate case name {name!r}")
            names.add(name)
            tol = t.get("tolerance")
            if (isinstance(tol, bool) or not isinstance(tol, (int, float))
                    or not (0 <= tol < math.inf)):
                bad(f"{wt} ({name}): tolerance must be a finite number >= 0, got {tol!r}")
            if not isinstance(t.get("flags", []), list):
                bad(f"{wt} ({name}): flags must be a list")
            for part in ("input", "expected"):
                try:
                    _check_array_entry(t.get(part), f"{wt}.{part}", directory)
                except VectorError as exc:
                    bad(f"({name}) {exc}")
            if t["expected"]["shape"] != t["input"]["shape"]:
                bad(f"{wt} ({name}): expected.shape differs from input.shape")
            out = t.get("output")
            if directory is not None:
                confined(directory, out, f"{where}: {wt} ({name}) output")
            elif not isinstance(out, str):
                bad(f"{wt} ({name}): output must be a relative path")
            rank = t.get("rank")
            if rank is not None and not (isinstance(rank, list) and all(_is_count(r) for r in rank)
                                         and len(rank) == max(1, math.prod(t["input"]["shape"][:-2]))):
                bad(f"{wt} ({name}): rank must list one non-negative integer per slice")
    return manifest


def load_manifest(directory: str) -> dict:
    path = os.path.join(directory, "manifest.json")
    if not os.path.lexists(path):
        raise VectorError(f"no manifest.json in {directory!r}")
    try:
        manifest = read_json(path, "vector-set manifest", MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH)
    except InputFileError as exc:
        raise VectorError(str(exc)) from None
    return validate_manifest(manifest, directory)


def iter_tests(manifest):
    for group in manifest["testGroups"]:
        for test in group["tests"]:
            yield group, test


def verify_checksums(directory: str, manifest: dict | None = None) -> list[str]:
    """Problems with SHA256SUMS and the manifest's per-file digests (empty if none).

    Paths outside the set's folder and oversized files raise VectorError; files are hashed in
    chunks, never read whole."""
    problems = []
    sums = os.path.join(directory, "SHA256SUMS")
    if not os.path.lexists(sums):
        return [f"no SHA256SUMS in {directory!r}"]
    try:
        lines = read_text(sums, "checksum file", MAX_MANIFEST_BYTES).splitlines()
    except InputFileError as exc:
        raise VectorError(str(exc)) from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep:
            raise VectorError(f"SHA256SUMS line {lineno}: expected '<sha256>  <path>'")
        path = confined(directory, rel, f"SHA256SUMS line {lineno}")
        if not os.path.isfile(path):
            problems.append(f"{rel}: missing")
            continue
        file_size(path, rel, max(MAX_FILE_BYTES, MAX_MANIFEST_BYTES))
        if sha256_file(path) != digest:
            problems.append(f"{rel}: sha256 mismatch")
    manifest = manifest or load_manifest(directory)
    for _, test in iter_tests(manifest):
        for part in ("input", "expected"):
            rel = test[part]["file"]
            path = confined(directory, rel, f"{test['name']} {part}.file")
            if not os.path.isfile(path):
                problems.append(f"{rel}: missing")
                continue
            file_size(path, rel)
            if sha256_file(path) != test[part]["sha256"]:
                problems.append(f"{rel}: sha256 differs from manifest.json")
    return sorted(set(problems))


def case_array(directory, test, part):
    """The input or expected array of a case, checked against the manifest (VectorError)."""
    entry = test[part]
    path = confined(directory, entry["file"], f"{test['name']} {part}.file")
    try:
        return read_npy(path, shape=entry["shape"], dtype=entry["dtype"])
    except ValueError as exc:
        raise VectorError(f"{entry['file']}: {exc}") from None


def output_path(directory, test, outputs):
    if outputs is None:
        return confined(directory, test["output"], f"{test['name']} output")
    base = os.path.basename(test["output"].replace("\\", "/"))
    return confined(outputs, base, f"{test['name']} output")
