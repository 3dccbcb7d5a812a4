"""The input policy of spec section 6, shared by every public operator.

Accepted: real floating arrays.  float64 and float32 are computed natively; float16 and
bfloat16 (ml_dtypes) are computed in float32 and returned in the input dtype.  Everything else
(integers, bool, complex, object, strings) is a TypeError.  Non-finite entries are a ValueError
unless ``check_finite=False``, in which case the affected slices come back as NaN.

Every host array passes :func:`normalise_host` before any backend sees it: masked arrays are
rejected, subclasses become base ndarrays, non-native byte order and misaligned buffers are
copied.  Iteration counts are bounded by :data:`MAX_ITERATIONS` (spec 6.5).
"""
from __future__ import annotations

import difflib
import functools
import inspect

import numpy as np

from swanref.spec.readings import ON_DIVERGENCE

NATIVE = (np.dtype(np.float32), np.dtype(np.float64))

#: Largest accepted ``steps`` / ``iters`` (spec 6.5).  The iterations converge (quadratically,
#: or for the presets run a fixed schedule) within a few hundred steps from any finite start
#: (the cubic map needs log_1.5(1/eps) ~ 90 steps to lift a singular value of eps), so a
#: larger count only burns time; at the bound a tiny matrix takes seconds in the reference
#: backend (measured in spec 6.5) and a preset schedule is a few MB.
MAX_ITERATIONS = 100_000


def normalise_host(G, name: str = "G"):
    """One host-array path for every backend (spec 6.1): returns a base-class ``np.ndarray``.

    * ``np.ma.MaskedArray``: TypeError -- a mask has no meaning for these operators and
      NumPy's reductions would skip masked NaN/Inf past the finite check;
    * other ndarray subclasses (``np.matrix``, ``np.memmap``, ...): viewed as ``np.ndarray``
      (no copy), so every backend sees the same array and the result is a plain ndarray;
    * non-native byte order (``>f8`` on a little-endian machine): converted (a copy);
    * a misaligned buffer (``np.frombuffer(buf, offset=1)``): copied to aligned memory.

    Anything that is not an ``np.ndarray`` is returned unchanged.
    """
    if not isinstance(G, np.ndarray):
        return G
    if isinstance(G, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; swanref operators take plain arrays (a mask has no "
            "meaning for GradNorm, whitening or SinkGD). Pass G.filled(value) or "
            "np.asarray(G) (which drops the mask) explicitly")
    arr = G if type(G) is np.ndarray else G.view(np.ndarray)
    dt = arr.dtype
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr


def _is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16"


COMPLEX = (np.dtype(np.complex64), np.dtype(np.complex128))


def compute_dtype(dtype: np.dtype, allow_complex: bool = False) -> np.dtype:
    """The dtype the arithmetic runs in for an input of ``dtype`` (spec 6.1).

    ``allow_complex``: whitening and the presets also take complex64/complex128, computed in
    their own dtype with conjugate transposes (spec 9.7).
    """
    dtype = np.dtype(dtype)
    if dtype in NATIVE:
        return dtype
    if dtype == np.float16 or _is_bfloat16(dtype):
        return np.dtype(np.float32)
    if dtype.kind == "c":
        if allow_complex and dtype in COMPLEX:
            return dtype
        raise TypeError(
            f"this operator is defined for real matrices; got complex dtype {dtype}"
            + (" (whiten and swanref.orthogonalized_update accept complex64/complex128)"
               if not allow_complex else " (complex64 and complex128 are supported)"))
    raise TypeError(
        f"unsupported dtype {dtype}: expected float64, float32, float16 or bfloat16 "
        "(cast integer or boolean gradients explicitly)")


def as_matrix_stack(G, name: str = "G", allow_complex: bool = False) -> np.ndarray:
    """Return ``G`` as a NumPy array of shape (*batch, m, n) without copying if possible."""
    if isinstance(G, np.ndarray):
        arr = normalise_host(G, name)
    elif hasattr(G, "__cuda_array_interface__"):
        arr = G  # a GPU array (CuPy) that must not be copied to the host
    else:
        try:
            arr = np.asarray(G)
        except Exception as exc:
            raise TypeError(f"{name} must be an array, got {type(G).__name__}: {exc}") from exc
        arr = normalise_host(arr, name)
    if arr.dtype == object:
        raise TypeError(f"{name} has dtype object; expected a floating array")
    compute_dtype(arr.dtype, allow_complex)  # raises TypeError for unsupported dtypes
    require_matrix_shape(arr.shape, name)
    return arr


def require_matrix_shape(shape, name: str = "G") -> None:
    """ValueError unless ``shape`` is ``(*batch, m, n)`` with ``m, n > 0`` (every frontend)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (*batch, m, n); got shape {shape}. "
            "SWAN operators act on weight matrices; reshape vectors explicitly.")
    if shape[-1] == 0 or shape[-2] == 0:
        raise ValueError(f"{name} has an empty matrix dimension: shape {shape}")


def resolve_axis(axis, shape) -> int:
    """GradNorm's ``axis`` (-1, -2, their positive forms, or 'long') as -1 or -2."""
    if isinstance(axis, str):
        if axis != "long":
            raise ValueError(f"axis must be -1, -2 or 'long', got {axis!r}")
        return -1 if shape[-1] >= shape[-2] else -2
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be -1, -2 or 'long', got {axis!r}")
    ndim = len(shape)
    if axis in (-1, ndim - 1):
        return -1
    if axis in (-2, ndim - 2):
        return -2
    raise ValueError(
        f"axis must name one of the two matrix axes (-1, -2) or be 'long', got {axis} "
        f"for an input of shape {tuple(shape)}")


def nonfinite_slices(arr: np.ndarray, ndim_core: int) -> np.ndarray:
    """Boolean mask over the leading ``arr.ndim - ndim_core`` axes: slices with NaN/Inf."""
    finite = np.isfinite(arr)
    axes = tuple(range(arr.ndim - ndim_core, arr.ndim))
    return ~finite.all(axis=axes)


def nonfinite_error(count: int, name: str = "G") -> ValueError:
    """The ValueError of spec 6.2 for ``count`` NaN/Inf entries (one message everywhere)."""
    return ValueError(
        f"{name} contains {count} non-finite value(s) (NaN or Inf); pass check_finite=False "
        "to get NaN in the affected slices instead")


def check_finite(arr: np.ndarray, name: str = "G") -> None:
    if not np.isfinite(arr).all():
        raise nonfinite_error(int(np.size(arr) - np.count_nonzero(np.isfinite(arr))), name)


def host_matrix_stack(G, who: str, name: str = "G", allow_complex: bool = False) -> np.ndarray:
    """:func:`as_matrix_stack` for functions that compute on NumPy arrays only (the presets'
    transcriptions): the same errors, and a TypeError for a GPU array."""
    arr = as_matrix_stack(G, name, allow_complex=allow_complex)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{who} computes on NumPy arrays; got {type(G).__module__}."
                        f"{type(G).__name__} (swanref.whiten runs the presets on GPU arrays)")
    return arr


def flag(value, name: str) -> bool:
    """A boolean keyword (``check_finite``, ``rescale``, ...): ``True``/``False`` or a NumPy
    bool, nothing else (spec 6.6) -- ``"no"``, ``0.5`` or an array would otherwise be read by
    their truth value, ``"no"`` as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def positive_int(value, name: str, *, allow_zero: bool = True,
                 maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum} (spec 6.5: more iterations change "
                         f"nothing but the run time), got {value}")
    return value


def iteration_count(value, name: str = "steps") -> int:
    """``steps`` / ``iters``: an integer in [0, MAX_ITERATIONS] (spec 6.5)."""
    return positive_int(value, name, maximum=MAX_ITERATIONS)


def real_number(value, name: str, *, minimum: float | None = None,
                strict: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    return value


#: keywords people pass by analogy with another operator -> the one this operator takes
KEYWORD_ALIASES = {"method": "whiten_method", "iterations": "iters", "steps": "iters",
                   "num_steps": "steps", "ns_steps": "steps", "epsilon": "eps"}


def clear_keyword_errors(fn):
    """Unknown keywords raise a TypeError naming the keyword this function does take."""
    params = inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for key in kwargs:
            if key not in params:
                hint = KEYWORD_ALIASES.get(key)
                hint = hint if hint in params else None
                close = [hint] if hint else difflib.get_close_matches(key, list(params), 1)
                raise TypeError(
                    f"{fn.__name__}() got an unexpected keyword argument {key!r}"
                    + (f"; did you mean {close[0]!r}?" if close else
                       f"; it takes {', '.join(p for p in params if p != 'G')}"))
        return fn(*args, **kwargs)
    return wrapper


def preset_options(method, steps, beta, scaling, rank_rtol, on_divergence):
    """The options a polynomial preset takes, validated as every frontend does: ``beta``,
    ``scaling`` and ``rank_rtol`` do not apply; ``steps`` is an iteration count or None."""
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence must be one of {ON_DIVERGENCE}, got {on_divergence!r}")
    for key, value in {"beta": beta, "scaling": scaling, "rank_rtol": rank_rtol}.items():
        if value is not None:
            raise ValueError(f"{key} does not apply to method {method!r}")
    return None if steps is None else iteration_count(steps, "steps")
