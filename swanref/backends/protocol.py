"""The backend protocol as code (docs/backends.md): what every backend provides, and the
optional kernels a backend may add.

The operators in ``swanref.ops`` own validation, dtype policy, transposes and the divergence
guard; a backend only does arithmetic on float32/float64 arrays of shape ``(*batch, m, n)``,
``m <= n`` for the whitening functions, all entries finite, any strides; it returns a new array
of the input's dtype and shape and never writes into its input.

A backend may set ``NONFINITE_PROPAGATES = True`` when its ``grad_norm`` and ``sinkgd`` are
plain arithmetic that turn a NaN/Inf entry into a non-finite row (matrix): the operators then
run them on the unchecked input and check finiteness on the result (spec 6.4).
"""
from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "REQUIRED", "OPTIONAL", "capabilities", "has", "missing"]


@runtime_checkable
class Backend(Protocol):
    """Functions every backend module defines (the signatures are checked by the tests)."""

    name: str

    def available(self) -> bool: ...

    def grad_norm(self, G: Any, eps: float) -> Any: ...

    def whiten_svd(self, G: Any, sigma_rtol: float) -> Any: ...

    def whiten_eigh(self, G: Any, lambda_rtol: float) -> Any: ...

    def whiten_newton_schulz(self, G: Any, steps: int, beta: float, scaling: str) -> Any: ...

    def whiten_nsds(self, G: Any, steps: int, beta: float, scaling: str) -> Any: ...

    def sinkgd(self, G: Any, iters: int) -> Any: ...


#: required function -> its positional parameters after the array (the protocol's signatures)
REQUIRED = {
    "grad_norm": ("G", "eps"),
    "whiten_svd": ("G", "sigma_rtol"),
    "whiten_eigh": ("G", "lambda_rtol"),
    "whiten_newton_schulz": ("G", "steps", "beta", "scaling"),
    "whiten_nsds": ("G", "steps", "beta", "scaling"),
    "sinkgd": ("G", "iters"),
}

#: optional kernel -> (parameters, what the operators do without it)
OPTIONAL = {
    "whiten_polynomial": (("G", "coefficients", "norm", "eps", "norm_scale"),
                          "the presets run on the NumPy transcription (swanref.presets)"),
    "grad_norm_finite": (("G", "eps", "check"),
                         "grad_norm after a separate finite check of the input"),
    "grad_norm_bf16_finite": (("W", "eps", "check"),
                              "bfloat16 GPU tensors are widened to float32 in their framework "
                              "and the result is rounded back (two more passes)"),
    "all_finite": (("X",), "the finite check builds an isfinite mask"),
    "finite_flag": (("X",), "the iterative methods check the input before they start (one "
                            "more host synchronisation)"),
    "fro_norms": (("X",), "the divergence guard squares a float64 copy of the output"),
}


def _params(fn) -> tuple:
    sig = inspect.signature(fn)
    return tuple(p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                 and p.default is p.empty)


def missing(backend) -> list[str]:
    """What ``backend`` lacks or gets wrong against the protocol ([] when it conforms)."""
    problems = []
    if not isinstance(getattr(backend, "name", None), str):
        problems.append("name: missing or not a str")
    if not callable(getattr(backend, "available", None)):
        problems.append("available(): missing")
    for fn_name, params in {**REQUIRED, **{k: v[0] for k, v in OPTIONAL.items()}}.items():
        fn = getattr(backend, fn_name, None)
        if fn is None:
            if fn_name in REQUIRED:
                problems.append(f"{fn_name}: missing")
            continue
        if not callable(fn):
            problems.append(f"{fn_name}: not callable")
            continue
        got = _params(fn)
        if got != params:
            problems.append(f"{fn_name}{got}: expected required parameters {params}")
    return problems


def has(backend, kernel: str) -> bool:
    """Does ``backend`` provide the optional ``kernel`` (a name in :data:`OPTIONAL`)?"""
    if kernel not in OPTIONAL:
        raise ValueError(f"unknown optional kernel {kernel!r}; one of {', '.join(OPTIONAL)}")
    return callable(getattr(backend, kernel, None))


def capabilities(backend) -> dict[str, bool]:
    """Capability table of one backend: every required and optional function -> present."""
    return {k: callable(getattr(backend, k, None)) for k in (*REQUIRED, *OPTIONAL)}
