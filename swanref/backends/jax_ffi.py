"""The C++ core as XLA FFI custom calls: loading ``swanref._jax_ffi`` and registering its targets.

``swanref._jax_ffi`` is built only on request (:data:`BUILD_COMMAND`, docs/jax.md);
it holds typed XLA FFI handlers around the same headers ``swanref._core`` binds, with its
BLAS/LAPACK table filled from SciPy's capsules at import exactly as ``_core``'s.  The public
JAX functions are in :mod:`swanref.jax`; this module only finds the extension and registers its
handlers with ``jax.ffi.register_ffi_target`` (CPU) once per process.
"""
from __future__ import annotations

try:  # built only with SWANREF_JAX (a default install has no such module)
    from swanref import _jax_ffi
except ImportError as exc:  # pragma: no cover - depends on the build
    _jax_ffi = None
    import_error: BaseException | None = exc
else:
    import_error = None

#: FFI target names of the handlers (cpp/python/jax_ffi.cpp)
TARGETS = ("swanref_grad_norm", "swanref_whiten_svd", "swanref_whiten_eigh",
           "swanref_whiten_iterative", "swanref_whiten_polynomial", "swanref_sinkgd")

#: docs/jax.md's one build command, run in a source checkout with jax installed: pip's isolated
#: build gets the user's jax FFI headers through SWANREF_JAX_INCLUDE_DIR (CMakeLists.txt)
BUILD_COMMAND = ("pip install -Ccmake.define.SWANREF_JAX_INCLUDE_DIR=\"$(python -c "
                 "'import jax.ffi; print(jax.ffi.include_dir())')\" .")

_registered = False


def available() -> bool:
    """True when the extension imported and its BLAS/LAPACK table is complete."""
    return _jax_ffi is not None and bool(_jax_ffi.blas_info()["complete"])


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True)."""
    if _jax_ffi is None:
        return ("swanref was built without its JAX FFI module (swanref._jax_ffi: "
                f"{import_error!r}); rebuild from a source checkout with jax installed: "
                f"{BUILD_COMMAND} (docs/jax.md)")
    info = _jax_ffi.blas_info()
    if not info["complete"]:
        return info["error"] or f"BLAS/LAPACK entries missing: {info['missing']}"
    return ""


def register() -> None:
    """Register the handlers as CPU FFI targets (idempotent); RuntimeError when unavailable."""
    global _registered
    if _registered:
        return
    if not available():
        raise RuntimeError(unavailable_reason())
    import jax  # the caller (swanref.jax) has imported it; a plain swanref import never does
    for name, capsule in _jax_ffi.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    _registered = True
