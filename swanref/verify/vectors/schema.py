"""The vector-set format's fixed names: schema, metrics, flags, limits, and its one error."""
from __future__ import annotations

import os

from swanref.spec.readings import VECTORS_VERSION

SCHEMA = "swanref_vectors_v1"
GENERATOR = "swanref.vectors/1"  # a format name, kept stable across module moves
#: the copy shipped in the wheel: swanref/data/vectors/v<VECTORS_VERSION>
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "data", "vectors", "v" + VECTORS_VERSION)

METRICS = {
    "max_mixed": "max over entries of |out - expected| / (1 + |expected|)",
    "fro_per_sqrt_rank": "max over slices of ||out - expected||_F / sqrt(max(rank, 1))",
    "fro_per_sqrt_min_side": "max over slices of ||out - expected||_F / sqrt(min(m, n))",
    "rel_fro": "max over slices of ||out - expected||_F / ||expected||_F "
               "(||out - expected||_F where expected is zero)",
}
NAN_RULES = ("every metric is total: NaN vs NaN and equal infinities count as agreement, NaN "
             "or Inf against anything else is an infinite error")
FLAGS = {
    "well_conditioned": "condition number below 100",
    "ill_conditioned": "condition number of 1e4 or more",
    "rank_deficient": "rank below min(m, n): the expected result is the partial isometry",
    "tall": "m > n",
    "wide": "m < n",
    "square": "m == n",
    "batched": "leading batch axes: every slice is an independent problem",
    "zero": "all-zero input: the output must be exactly zero",
    "constant_row": "some lines are constant: GradNorm maps them to zero",
    "zero_line": "some rows or columns are zero",
    "large_offset": "lines whose |mean| is much larger than their std",
    "tiny_variance": "lines with variance far below 1e-8 (detects an eps added to the std)",
    "huge_scale": "entries around 1e150 (1e15 for float32): squares overflow if formed naively",
    "tiny_scale": "entries around 1e-150 (1e-15 for float32): squares underflow",
    "single_line": "one row or one column",
    "float32": "input is float32: compute in float32, tolerance for float32",
    "mpmath_checked": "expected output computed with mpmath at 50 digits (and swanref's float64 "
                      "reference agreed with it)",
}


class VectorError(Exception):
    """The vector set is missing, malformed or corrupted (exit status 2)."""


#: ops a vector set may name
OPS = ("grad_norm", "whiten", "swan_update", "sinkgd_update")
#: input dtypes a case may have (outputs have the input's dtype)
CASE_DTYPES = ("float64", "float32", "float16")
#: limits far above any golden vector (the shipped set is ~100 KB, its largest array 24
#: entries) and far below what would exhaust memory: a bigger file is refused unread
MAX_MANIFEST_BYTES = 64 << 20
#: JSON nesting of a manifest (the shipped one is 7 deep)
MAX_MANIFEST_DEPTH = 16
MAX_ELEMENTS = 1 << 24            # entries of one array (128 MiB in float64)
MAX_FILE_BYTES = 8 * MAX_ELEMENTS + (1 << 16)   # largest array plus the largest npy header

