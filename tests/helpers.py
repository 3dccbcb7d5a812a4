"""Small numerical helpers shared by the spec tests."""
from __future__ import annotations

import numpy as np


def fro(x):
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64)))


def rel_err(x, ref):
    """``||x - ref||_F / sqrt(rank-ish)``: per-singular-direction error (spec 8)."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return fro(x - ref) / np.sqrt(max(min(ref.shape[-2:]), 1))


def random_orthogonal(rng, k):
    Q, R = np.linalg.qr(rng.standard_normal((k, k)))
    return Q * np.sign(np.diag(R))


def singular_values(x):
    return np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
