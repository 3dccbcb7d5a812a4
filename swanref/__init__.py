"""swanref: reference and verification library for SWAN's gradient operators.

The definitions live in docs/spec.md; every public function cites its section.
"""
from .api import grad_norm, sinkgd_update, swan_update, whiten
from .errors import DivergenceError, DivergenceWarning
from .readings import SPEC_VERSION, WHITEN_METHODS
from .routing import swan_route
from ._backends import available as available_backends

__version__ = "0.1.0"
__all__ = ["grad_norm", "whiten", "swan_update", "sinkgd_update", "swan_route",
           "DivergenceError", "DivergenceWarning", "SPEC_VERSION", "WHITEN_METHODS",
           "available_backends"]
