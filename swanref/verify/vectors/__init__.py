"""Golden test vectors: ``swanref vectors OUTDIR`` and ``swanref check-vectors DIR``.

A vector set is a directory (layout and formats: docs/verification.md, "Golden vectors")::

    manifest.json      Wycheproof-style description of every case (self-describing)
    index.tsv          the same cases, one tab-separated line each (for C/C++/Fortran readers)
    SHA256SUMS         sha256 of every other file (``sha256sum -c SHA256SUMS``)
    cases/<name>.in.npy         input, in the case's dtype
    cases/<name>.expected.npy   expected output, float64 (exact result for the input values)

An implementation under test writes ``cases/<name>.out.npy`` (same shape and dtype as the
input) next to the input, or into a separate directory given with ``--outputs``; then
``swanref check-vectors DIR`` compares each output with the expected one under the case's
metric and tolerance.  Exit status: 0 all present outputs pass (and none is missing unless
``--allow-missing``), 1 a case fails or is missing, 2 usage error or a corrupted vector set.

The ``.npy`` files are format version 1.0, little-endian, C order, no pickles, so a reader
needs no NumPy: magic ``\\x93NUMPY``, two bytes version (1, 0), a little-endian uint16 header
length ``H``, ``H`` bytes of ASCII Python-literal dict (``{'descr': '<f8', 'fortran_order':
False, 'shape': (3, 4), }`` padded with spaces and a final newline so data starts at a
multiple of 64), then the raw data.

The package, one job a module: ``schema`` (the format's fixed names and VectorError),
``build`` (cases, expected outputs, tolerances, ``write_vectors``), ``files`` (safe reading:
manifest, paths, sizes, checksums, npy headers), ``check`` (metrics, ``check_outputs``,
``write_outputs``), ``cli`` (the two commands).  Every name is re-exported here.
"""
from __future__ import annotations

from swanref.verify.vectors.build import (MPMATH_DPS, build_cases, reading_text,
                                          write_vectors)
from swanref.verify.vectors.check import (check_outputs, metric_error, swanref_impl,
                                          write_outputs)
from swanref.verify.vectors.cli import main_check, main_write
from swanref.verify.vectors.files import (confined, iter_tests, load_manifest, npy_bytes,
                                          read_npy, sha256, validate_manifest,
                                          verify_checksums)
from swanref.verify.vectors.schema import (CASE_DTYPES, FLAGS, GENERATOR, MAX_ELEMENTS,
                                           MAX_FILE_BYTES, MAX_MANIFEST_BYTES, METRICS,
                                           NAN_RULES, OPS, SCHEMA, SHIPPED, VectorError)

# the names these helpers had when the package was one module (tests use them)
_npy_bytes, _sha256, _reading_text = npy_bytes, sha256, reading_text

__all__ = ["CASE_DTYPES", "FLAGS", "GENERATOR", "MAX_ELEMENTS", "MAX_FILE_BYTES",
           "MAX_MANIFEST_BYTES", "METRICS", "MPMATH_DPS", "NAN_RULES", "OPS", "SCHEMA",
           "SHIPPED", "VectorError", "build_cases", "check_outputs", "confined", "iter_tests",
           "load_manifest", "main_check", "main_write", "metric_error", "npy_bytes",
           "read_npy", "reading_text", "sha256", "swanref_impl", "validate_manifest",
           "verify_checksums", "write_outputs", "write_vectors"]
