"""Independent high-precision references (mpmath) for small matrices.

The input is taken as exact (its float64 values), the computation runs with ``dps`` decimal
digits, and the result is rounded to float64 at the end, so it is correct to ~1e-16 relative
whatever the condition number (up to ``10**(dps/2)``).
"""
from __future__ import annotations

import numpy as np

from swanref.spec import spectral


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


def newton_schulz(G, steps: int, beta: float, scaling: str, dps: int = 50) -> np.ndarray:
    """The coupled Newton-Schulz iteration itself (spec 3.3) on a 2-D matrix at ``dps`` digits:
    an independent check of the spectral prediction (:func:`predicted_newton_schulz`)."""
    mp = _mp()
    G = np.asarray(G, dtype=np.float64)
    tall = G.shape[0] > G.shape[1]
    W = G.T if tall else G
    m = W.shape[0]
    with mp.workdps(dps):
        X = mp.matrix(W.tolist())
        A = X * X.T
        if scaling == "gram_fro":
            c = mp.sqrt(mp.fsum(A[i, j] ** 2 for i in range(m) for j in range(m)))
        elif scaling == "grad_fro":
            c = mp.fsum(X[i, j] ** 2 for i in range(m) for j in range(W.shape[1]))
        else:
            c = mp.mpf(1)
        if c == 0:
            return np.zeros_like(G)
        eye = mp.eye(m)
        Y, Z = A / c, mp.eye(m)
        b = mp.mpf(beta)
        for _ in range(steps):
            T = 3 * eye - Z * Y
            Y, Z = b * (Y * T), b * (T * Z)
        out = Z * X / mp.sqrt(c)
        res = np.array([[float(out[i, j]) for j in range(W.shape[1])] for i in range(m)])
    return res.T if tall else res


def sinkgd(G, iters: int, dps: int = 50) -> np.ndarray:
    """SR-Sinkhorn of a 2-D matrix at ``dps`` digits: ``iters`` rounds of rows to norm
    sqrt(n), then columns to norm sqrt(m) (zero lines stay zero)."""
    mp = _mp()
    G = np.asarray(G, dtype=np.float64)
    m, n = G.shape
    with mp.workdps(dps):
        X = [[mp.mpf(float(v)) for v in row] for row in G]
        for _ in range(iters):
            for i in range(m):
                nr = mp.sqrt(mp.fsum(x ** 2 for x in X[i]))
                if nr > 0:
                    X[i] = [x * mp.sqrt(n) / nr for x in X[i]]
            for j in range(n):
                nc = mp.sqrt(mp.fsum(X[i][j] ** 2 for i in range(m)))
                if nc > 0:
                    for i in range(m):
                        X[i][j] = X[i][j] * mp.sqrt(m) / nc
        return np.array([[float(x) for x in row] for row in X])


def operator(op: str, reading: dict, G, rank_rtol: float, dps: int = 50):
    """One operator of the spec (``op`` with a golden-vector ``reading``) on a 2-D float64
    matrix at ``dps`` digits, or None where there is no mpmath route (e.g. a SWAN update whose
    GradNorm is not over rows)."""
    rd = reading
    G = np.asarray(G, dtype=np.float64)
    m, n = G.shape
    if op == "grad_norm":
        if rd["axis"] == -1 or (rd["axis"] == "long" and n >= m):
            return grad_norm(G, dps=dps, eps=rd["eps"])
        return grad_norm(G.T, dps=dps, eps=rd["eps"]).T
    if op == "whiten" and rd["method"] == "svd":
        return polar_factor(G, dps=dps, rank_rtol=rank_rtol)
    if op == "whiten" and rd["method"] == "newton_schulz":
        return newton_schulz(G, rd["steps"], rd["beta"], rd["scaling"], dps=dps)
    if op == "sinkgd_update":
        return sinkgd(G, rd["iters"], dps=dps)
    if op == "swan_update" and rd["axis"] == -1:
        g = grad_norm(G, dps=dps, eps=rd["eps"])
        if rd["whiten_method"] == "svd":
            hp = polar_factor(g, dps=dps, rank_rtol=rank_rtol)
        elif rd["whiten_method"] == "newton_schulz":
            hp = newton_schulz(g, rd["steps"], rd["beta"], rd["scaling"], dps=dps)
        else:
            return None
        if rd["rescale"]:
            f = np.linalg.norm(hp)
            hp = hp * (np.sqrt(hp.size) / f) if f > 0 else hp
        return hp
    return None
