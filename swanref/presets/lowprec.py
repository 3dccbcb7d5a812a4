"""Low-precision emulation: bfloat16 / float16 arithmetic the way PyTorch eager runs it on a GPU.

The model (docs/presets.md, "bf16 emulation"):

* every tensor lives in the low-precision format; values are kept here in a float32 container
  and are always exactly representable in that format;
* an elementwise op (``a * X``, ``X + Y``, ``X / d``, ``max(x, eps)``) is computed in float32
  ("opmath") from the rounded operands -- a Python scalar operand enters as float32 -- and the
  result is rounded once, round-to-nearest-even, to the format;
* a matrix product multiplies low-precision operands (every product is exact in float32),
  accumulates in float32 and rounds the sum once to the format (cuBLAS ``CUBLAS_COMPUTE_32F``);
* ``addmm(C, A, B, beta, alpha)`` is one cuBLAS call: ``alpha * acc(A @ B) + beta * C`` in
  float32, then one rounding (the epilogue does not round the product first);
* a norm reduces in float32 and rounds the result to the format.

What is not modelled: the summation order inside a product (OpenBLAS here, cuBLAS tiles with
possible split-K on the GPU), so products can differ by one unit in the last place of the
format; and fused Triton/``torch.compile`` kernels, which round fewer intermediates.
"""
from __future__ import annotations

import numpy as np

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - rounding falls back to round_bits_bf16
    ml_dtypes = None

#: formats this module emulates -> (numpy dtype or None, unit roundoff u = 2^-p)
FORMATS = {
    "bfloat16": (np.dtype(ml_dtypes.bfloat16) if ml_dtypes else None, 2.0 ** -8),
    "float16": (np.dtype(np.float16), 2.0 ** -11),
}

__all__ = ["FORMATS", "round_to", "round_bits_bf16", "is_representable", "ulp", "Arith",
           "arith"]


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown emulation format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def round_to(x, fmt: str = "bfloat16") -> np.ndarray:
    """Round to ``fmt`` (round-to-nearest-even; overflow to +-inf; NaN stays NaN).

    The result is a float32 array holding representable values.  float64 input is first
    rounded to float32, as ``torch.Tensor.bfloat16()`` does for a double tensor.
    """
    dt = FORMATS[_check_format(fmt)][0]
    x32 = np.asarray(x, dtype=np.float32)
    if dt is None:  # bfloat16 without ml_dtypes
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(x32), x32, round_bits_bf16(np.where(np.isnan(x32), 0, x32)))
    with np.errstate(over="ignore"):
        return x32.astype(dt).astype(np.float32)


def round_bits_bf16(x) -> np.ndarray:
    """Bit-manipulation RNE to bfloat16 (finite or infinite input), independent of ml_dtypes.

    ``u + 0x7FFF + ((u >> 16) & 1)`` then truncation of the low 16 bits: round to nearest, ties
    to even, as PyTorch's and ml_dtypes' float32 -> bfloat16 casts do.  Used by the tests as a
    second transcription of :func:`round_to`.
    """
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + (((u >> 16) & 1) + 0x7FFF)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32)


def is_representable(x, fmt: str = "bfloat16") -> bool:
    """True when every entry of ``x`` is exactly a value of ``fmt`` (NaN/inf count as such)."""
    x = np.asarray(x)
    x32 = x.astype(np.float32)
    if not np.array_equal(x32.astype(x.dtype), x, equal_nan=True):
        return False  # not even a float32 value
    return bool(np.array_equal(round_to(x32, fmt), x32, equal_nan=True))


def ulp(x, fmt: str = "bfloat16") -> np.ndarray:
    """Spacing of ``fmt`` at ``|x|`` (the gap to the next larger magnitude), as float64."""
    _check_format(fmt)
    nmant, emin = (7, -126) if fmt == "bfloat16" else (10, -14)
    a = np.abs(np.asarray(x, dtype=np.float64))
    e = np.floor(np.log2(np.maximum(a, 2.0 ** emin)))
    return np.ldexp(1.0, (e - nmant).astype(int))


class Arith:
    """Arithmetic of one compute precision.

    ``Arith(None, dtype)`` is plain NumPy in ``dtype`` (float32/float64): the reference path.
    ``Arith("bfloat16")`` / ``Arith("float16")`` round like PyTorch eager (module docstring).
    All operations return arrays of the container dtype.
    """

    def __init__(self, fmt: str | None, dtype=np.float64):
        self.fmt = None if fmt is None else _check_format(fmt)
        self.dtype = np.dtype(np.float32 if fmt is not None else dtype)
        self.unit_roundoff = (FORMATS[fmt][1] if fmt is not None
                              else float(np.finfo(self.dtype).eps) / 2)

    # rounding of a float32 (or native) intermediate
    def r(self, x):
        if self.fmt is None:
            return np.asarray(x, dtype=self.dtype)
        return round_to(x, self.fmt)

    def cast_in(self, G):
        """The ``G.bfloat16()`` cast (or a cast to the native dtype)."""
        return self.r(np.asarray(G))

    def scalar(self, s):
        """A Python scalar as the op sees it: float32 opmath in emulation, native otherwise."""
        return self.dtype.type(s)

    def scale(self, s, X):
        with np.errstate(over="ignore", invalid="ignore"):
            return self.r(self.scalar(s) * X)

    def add(self, X, Y):
        with np.errstate(over="ignore", invalid="ignore"):
            return self.r(X + Y)

    def div(self, X, d):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self.r(X / d)

    def maximum(self, X, s):
        return self.r(np.maximum(X, self.scalar(s)))

    def mm_acc(self, A, B):
        """Unrounded product: float32 accumulation of exact products (emulation), native else."""
        with np.errstate(over="ignore", invalid="ignore"):
            return np.matmul(A, B, dtype=self.dtype)

    def mm(self, A, B):
        return self.r(self.mm_acc(A, B))

    def addmm(self, C, A, B, beta, alpha):
        """``torch.addmm``: ``beta * C + alpha * (A @ B)`` with a single rounding."""
        acc = self.mm_acc(A, B)
        with np.errstate(over="ignore", invalid="ignore"):
            return self.r(self.scalar(beta) * C + self.scalar(alpha) * acc)

    def fro_norm(self, X):
        """Per-matrix Frobenius norm over the last two axes (keepdims).

        Emulation: float32 reduction (through float64 here: the order is not modelled),
        rounded to the format.  Native: ``sqrt(sum(X*X))`` in the compute dtype, unscaled, so
        that float32 squares underflow like ``torch.linalg.vector_norm`` does on tiny input.
        """
        if self.fmt is None:
            with np.errstate(under="ignore", over="ignore"):
                return np.sqrt(np.sum(X * X, axis=(-2, -1), keepdims=True, dtype=self.dtype))
        with np.errstate(under="ignore", over="ignore"):
            s = np.sum(X.astype(np.float64) ** 2, axis=(-2, -1), keepdims=True)
            return self.r(np.sqrt(s).astype(np.float32))


def arith(emulate: str | None, dtype) -> Arith:
    return Arith(emulate, dtype)
