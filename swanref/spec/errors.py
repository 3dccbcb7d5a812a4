"""Exceptions and warnings raised by swanref."""
from __future__ import annotations


class DivergenceError(FloatingPointError):
    """An iterative whitening method left its convergence region (spec section 3.5).

    Raised by ``whiten(..., on_divergence="raise")`` when an iterate or the output is
    non-finite, or the output's Frobenius norm exceeds the bound that every convergent run
    of the chosen reading satisfies.  ``slices`` holds the flat indices of the offending
    batch slices.
    """

    def __init__(self, message: str, slices=()):
        super().__init__(message)
        self.slices = tuple(int(i) for i in slices)


class DivergenceWarning(RuntimeWarning):
    """Emitted when ``on_divergence`` is ``"warn"`` or ``"fallback"``."""
