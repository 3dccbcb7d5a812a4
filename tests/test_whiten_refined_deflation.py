"""The refined eigh route of ``whiten_svd`` at large kappa (docs/performance.md, "Exact whitening").

Beyond kappa ~ 1e5 the route re-diagonalises the rows of small singular values on their own
before its first-order step, so that the step stays accurate up to kappa ~ 1e7 instead of falling
back to the SVD. Whichever path a slice takes, the result must be as accurate as the SVD route:
checked on constructed G = U diag(s) V^T (log-spaced s) against the known polar factor U V^T.
"""

from __future__ import annotations

import numpy as np
import pytest

from swanref.backends import cpp as _cpp_backend
from swanref.spec.tolerance import exact_whitening_tolerance

pytestmark = pytest.mark.skipif(not _cpp_backend.available(), reason=_cpp_backend.unavailable_reason())


def constructed(m, n, kappa, seed):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    s = np.logspace(0, -np.log10(kappa), m)
    return (U * s) @ V.T, U @ V.T


@pytest.mark.parametrize("shape", [(48, 160), (96, 96), (1, 7, 40)])
@pytest.mark.parametrize("kappa", [1e3, 1e5, 1e6, 1e7, 1e9])
def test_refined_route_as_accurate_as_svd(shape, kappa):
    from swanref import _core

    *batch, m, n = shape
    parts = [constructed(m, n, kappa, seed) for seed in range(max(1, int(np.prod(batch))))]
    G = np.stack([p[0] for p in parts]).reshape(shape)
    P = np.stack([p[1] for p in parts]).reshape(shape)
    err = lambda X: np.linalg.norm((X - P).reshape(-1, m * n), axis=-1) / np.sqrt(m)  # noqa: E731
    refined = _core.whiten_svd(G, 0.0)                 # float64 default: the refined route
    svd = _core.whiten_svd(G, 0.0, route="svd")
    bound = exact_whitening_tolerance(m, n, kappa, np.float64)
    assert np.all(err(refined) <= bound)
    # rounding-level agreement with the SVD route: its error, plus a few kappa eps of slack
    assert np.all(err(refined) <= 1.5 * err(svd) + 4 * kappa * np.finfo(np.float64).eps)
