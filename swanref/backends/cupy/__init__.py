"""The CuPy backend ("cupy"): the operators of docs/spec.md on NVIDIA GPUs.

Implements the backend protocol of docs/backends.md on CuPy arrays and computes what
swanref/backends/reference.py computes (docs/gpu.md describes the GPU path). Modules by job:

* ``kernels``: the run-time compiled kernels (NVRTC): GradNorm from the host/device C++ header
  ``cpp/include/swanref/device/grad_norm_row.hpp``, helpers and the 16-bit preset kernels;
* ``blas``: cuBLAS products (GEMM, strided-batched GEMM, GemmEx on bfloat16/float16);
* ``gradnorm``: GradNorm, one fused kernel, with the public call's finite check folded in;
* ``exact``: exact whitening through cuSOLVER (float32 via the float64 eigh route);
* ``iterative``: Newton-Schulz, NSDS, SinkGD;
* ``presets``: the polynomial presets in the input precision or natively in bfloat16/float16;
* ``graphs``: opt-in CUDA-graph replay of small iterative calls;
* ``interop``: stacks, exact power-of-two scaling, finite checks and Frobenius norms.

TF32 is OFF by default: every float32 product is a true float32 product. ``set_tf32(True)``
(or the environment variable ``SWANREF_CUPY_TF32=1`` read at import) lets cuBLAS round float32
operands to TF32 on tensor cores (about 3e-4 relative error per product): faster, no longer a
reference. float64 is never affected.

Importing this package does not import CuPy; ``available()`` does, and says False without
CuPy, a driver or a GPU.
"""
from __future__ import annotations

from swanref.backends.cupy._runtime import (available, set_graphs, set_tf32,  # noqa: F401
                                            state as _state, tf32, tf32_enabled)
from swanref.backends.cupy.blas import blas_mode as _blas_mode, gemm as _gemm  # noqa: F401
from swanref.backends.cupy.exact import whiten_eigh, whiten_svd
from swanref.backends.cupy import gradnorm as _gradnorm
from swanref.backends.cupy.gradnorm import grad_norm, grad_norm_bf16, grad_norm_bf16_finite
from swanref.backends.cupy.interop import (all_finite, bfloat16_all_finite,
                                           bfloat16_finite_flag, bfloat16_nonfinite_count,
                                           finite_flag, fro_norms)
from swanref.backends.cupy.iterative import (newton_schulz_flops, sinkgd, whiten_newton_schulz,
                                             whiten_nsds)
from swanref.backends.cupy.kernels import HEADER, compile_path, include_dir
from swanref.backends.cupy.presets import whiten_polynomial

name = "cupy"


def grad_norm_finite(G, eps: float, check: bool, defer: bool = False):
    """GradNorm with the public call's finite-input policy folded in (gradnorm.py): ``(out,
    ok)``; ``defer``: ok stays a device flag. Calls this package's ``grad_norm`` attribute, so
    that a wrapper put there sees it."""
    return _gradnorm.grad_norm_finite(G, eps, check, impl=grad_norm, defer=defer)

#: emulation formats whiten_polynomial runs natively (swanref.presets.lowprec's model)
LOWPREC_FORMATS = ("bfloat16", "float16")

__all__ = ["available", "set_tf32", "tf32", "tf32_enabled", "set_graphs", "grad_norm",
           "grad_norm_finite", "grad_norm_bf16", "grad_norm_bf16_finite", "whiten_svd",
           "whiten_eigh", "whiten_newton_schulz",
           "whiten_nsds", "whiten_polynomial", "sinkgd", "all_finite", "bfloat16_all_finite",
           "bfloat16_finite_flag", "bfloat16_nonfinite_count", "finite_flag", "fro_norms",
           "newton_schulz_flops", "compile_path", "include_dir", "HEADER", "LOWPREC_FORMATS",
           "name"]
