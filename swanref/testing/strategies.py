"""Hypothesis strategies for gradients with controlled spectrum (hypothesis is optional).

``gradients()`` draws ``G = scale * U diag(s) V^T`` with a chosen condition number, rank and
scale, so the ill-conditioned and rank-deficient regimes are actually exercised (random
Gaussian matrices almost never are).  ``gradients_with_rows()`` draws rows of very different
offsets and scales, some constant or zero.  ``array_hook`` converts each drawn NumPy array to a
caller's framework (e.g. ``torch.from_numpy``).

The public path of the strategies defined in swanref.verify.strategies (which the checker's
property catalogue shares).
"""
from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without hypothesis
    raise ImportError("swanref.testing.strategies needs hypothesis: pip install hypothesis") \
        from exc

from swanref.verify.strategies import (SPECTRUM_KINDS, gradients, gradients_with_rows,
                                       matrix_shapes)

__all__ = ["SPECTRUM_KINDS", "matrix_shapes", "gradients", "gradients_with_rows"]
