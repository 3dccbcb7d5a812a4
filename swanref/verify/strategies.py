"""Hypothesis strategies for gradients with controlled spectrum.

``gradients()`` draws ``G = scale * U diag(s) V^T`` with a chosen condition number, rank and
scale, so the ill-conditioned and rank-deficient regimes are actually exercised (random
Gaussian matrices almost never are).  ``array_hook`` converts each drawn NumPy array to a
caller's framework (e.g. ``torch.from_numpy``).

The one definition of each: the public namespace ``swanref.testing.strategies`` re-exports
them, and the checker's property catalogue (swanref.verify.properties) draws its spectral cases
with the same spectrum kinds and :func:`conditioned_batch`.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from swanref.verify import matrices

SPECTRUM_KINDS = ("geometric", "linear", "cluster")


@st.composite
def matrix_shapes(draw, max_side: int = 12, min_side: int = 1, tall: bool | None = None):
    m = draw(st.integers(min_side, max_side))
    n = draw(st.integers(min_side, max_side))
    if tall is True and m < n:
        m, n = n, m
    if tall is False and m > n:
        m, n = n, m
    return m, n


@st.composite
def gradients(draw, *, shape=None, max_side: int = 12, batch_shape=(), max_kappa: float = 1e6,
              rank: str | int | None = "full", log_scale=(-3.0, 3.0), dtype=np.float64,
              array_hook=None):
    """A gradient (or batch of them) with controlled condition number, rank and scale.

    rank: "full", "deficient" (1 <= r < min(m, n)), "any", or an int.
    """
    m, n = shape if shape is not None else draw(matrix_shapes(max_side))
    k = min(m, n)
    if rank == "full" or k == 1 and rank == "deficient":
        r = k
    elif rank == "deficient":
        r = draw(st.integers(1, k - 1))
    elif rank == "any":
        r = draw(st.integers(1, k))
    else:
        r = min(int(rank), k)
    kappa = 10 ** draw(st.floats(0, np.log10(max_kappa)))
    kind = draw(st.sampled_from(SPECTRUM_KINDS))
    scale = 10 ** draw(st.floats(*log_scale))
    _, G = conditioned_batch(draw, m, n, kappa, rank=r, scale=scale, kind=kind,
                             batch=batch_shape)
    G = G.astype(dtype)
    return array_hook(G) if array_hook is not None else G


def conditioned_batch(draw, m, n, kappa, *, rank, scale, kind, batch=()):
    """Draw a seed and build ``batch + (m, n)`` float64 matrices of swanref.verify.matrices'
    ``conditioned`` from it; returns ``(seed, G)``.  Called inside a composite strategy."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    count = int(np.prod(batch)) if batch else 1
    mats = [matrices.conditioned(rng, m, n, kappa, rank=rank, scale=scale, kind=kind)
            for _ in range(count)]
    return seed, np.stack(mats).reshape(tuple(batch) + (m, n))


@st.composite
def gradients_with_rows(draw, max_side: int = 12, dtype=np.float64, array_hook=None):
    """Matrices whose rows have very different offsets and scales, some constant or zero."""
    m, n = draw(matrix_shapes(max_side))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    offsets = 10 ** rng.uniform(-3, 4, size=(m, 1)) * rng.choice([-1, 1], size=(m, 1))
    scales = 10 ** rng.uniform(-6, 6, size=(m, 1))
    G = offsets + scales * rng.standard_normal((m, n))
    special = draw(st.lists(st.sampled_from(["constant", "zero", "none"]), min_size=m,
                            max_size=m))
    for i, kind in enumerate(special):
        if kind == "constant":
            G[i] = offsets[i, 0]
        elif kind == "zero":
            G[i] = 0
    G = G.astype(dtype)
    return array_hook(G) if array_hook is not None else G
