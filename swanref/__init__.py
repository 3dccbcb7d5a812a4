"""swanref: reference and verification library for SWAN's gradient operators.

The definitions live in docs/spec.md; every public function cites its section.  The package is
layered (docs/architecture.md): ``spec`` <- ``backends`` <- ``presets`` <- ``ops`` <- ``verify``
<- ``testing`` <- ``tools`` <- ``cli``; each imports only the layers to its left.
"""
from importlib import metadata as _metadata

from swanref.ops import deferred_checks, grad_norm, sinkgd_update, swan_update, whiten
from swanref.spec.errors import DivergenceError, DivergenceWarning
from swanref.spec.readings import SPEC_VERSION, WHITEN_METHODS
from swanref.spec.routing import swan_route
from swanref.backends.registry import available as available_backends
from swanref.update import orthogonalized_update

try:
    __version__ = _metadata.version("swanref")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["grad_norm", "whiten", "swan_update", "sinkgd_update", "swan_route",
           "DivergenceError", "DivergenceWarning", "SPEC_VERSION", "WHITEN_METHODS",
           "available_backends", "orthogonalized_update", "deferred_checks"]
