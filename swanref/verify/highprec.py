"""Independent high-precision references (mpmath) for small matrices.

The input is taken as exact (its float64 values), the computation runs with ``dps`` decimal
digits, and the result is rounded to float64 at the end, so it is correct to ~1e-16 relative
whatever the condition number (up to ``10**(dps/2)``).
"""
from __future__ import annotations

import numpy as np


def _mp():
    import mpmath
    return mpmath


def polar_factor(G, dps: int = 50, rank_rtol: float | None = None) -> np.ndarray:
    """``U_r V_r^T`` of a 2-D float matrix, computed with mpmath's SVD at ``dps`` digits."""
    mp = _mp()
    G = np.asarray(G, dtype=np.float64)
    m, n = G.shape
    tall = m > n
    if tall:
        G = G.T
        m, n = n, m
    with mp.workdps(dps):
        A = mp.matrix(G.tolist())
        U, S, V = mp.svd_r(A, full_matrices=False)
        s = [S[i] for i in range(m)]
        smax = max(s) if s else 0
        rtol = mp.mpf(rank_rtol) if rank_rtol is not None else mp.mpf(2) ** (-dps * 3)
        keep = [si > rtol * smax and si > 0 for si in s]
        out = np.zeros((m, n))
        for i in range(m):
            for j in range(n):
                acc = mp.mpf(0)
                for k in range(m):
                    if keep[k]:
                        acc += U[i, k] * V[k, j]
                out[i, j] = float(acc)
    return out.T if tall else out


def grad_norm(G, dps: int = 50, eps: float = 0.0) -> np.ndarray:
    """Row standardisation of a 2-D matrix at ``dps`` digits (constant rows -> 0)."""
    mp = _mp()
    G = np.asarray(G, dtype=np.float64)
    out = np.zeros_like(G)
    with mp.workdps(dps):
        for i, row in enumerate(G):
            xs = [mp.mpf(float(x)) for x in row]
            mu = mp.fsum(xs) / len(xs)
            var = mp.fsum((x - mu) ** 2 for x in xs) / len(xs) + mp.mpf(eps)
            if var == 0:
                continue
            sd = mp.sqrt(var)
            out[i] = [float((x - mu) / sd) for x in xs]
    return out


def predicted_newton_schulz(G, steps: int, beta: float, scaling: str, dps: int = 40):
    """``U diag(phi_K(s)) V^T`` (spec 3.6) with U, s, V from mpmath's SVD (2-D, m <= n).

    The float64 SVD's small singular triplets carry errors of order kappa u, which is what an
    iterative result's error is being compared with at high kappa; this reference does not.
    """
    from swanref.spec import spectral
    mp = _mp()
    G = np.asarray(G, dtype=np.float64)
    m, n = G.shape
    if m > n:
        raise ValueError("predicted_newton_schulz expects m <= n")
    with mp.workdps(dps):
        U, S, V = mp.svd_r(mp.matrix(G.tolist()), full_matrices=False)
        s = np.array([float(S[i]) for i in range(m)])
        Un = np.array([[float(U[i, j]) for j in range(m)] for i in range(m)])
        Vn = np.array([[float(V[i, j]) for j in range(n)] for i in range(m)])
    phi = spectral.newton_schulz_singular_values(s, steps, beta, scaling)
    return (Un * phi) @ Vn
