"""Testing helpers: tolerance-aware assertions, generators and (optional) hypothesis strategies."""
from ..tolerance import (condition_number, exact_whitening_tolerance, grad_norm_tolerance,
                         newton_schulz_tolerance, unit_roundoff)

__all__ = ["condition_number", "exact_whitening_tolerance", "grad_norm_tolerance",
           "newton_schulz_tolerance", "unit_roundoff"]
