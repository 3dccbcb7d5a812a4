"""Golden test vectors: ``swanref vectors OUTDIR`` and ``swanref check-vectors DIR``.

A vector set is a directory (layout and formats: docs/verification.md, "Golden vectors")::

    manifest.json      Wycheproof-style description of every case (self-describing)
    index.tsv          the same cases, one tab-separated line each (for C/C++/Fortran readers)
    SHA256SUMS         sha256 of every other file (``sha256sum -c SHA256SUMS``)
    cases/<name>.in.npy         input, in the case's dtype
    cases/<name>.expected.npy   expected output, float64 (exact result for the input values)

An implementation under test writes ``cases/<name>.out.npy`` (same shape and dtype as the
input) next to the input, or into a separate directory given with ``--outputs``; then
``swanref check-vectors DIR`` compares each output with the expected one under the case's
metric and tolerance.  Exit status: 0 all present outputs pass (and none is missing unless
``--allow-missing``), 1 a case fails or is missing, 2 usage error or a corrupted vector set.

The ``.npy`` files are format version 1.0, little-endian, C order, no pickles, so a reader
needs no NumPy: magic ``\\x93NUMPY``, two bytes version (1, 0), a little-endian uint16 header
length ``H``, ``H`` bytes of ASCII Python-literal dict (``{'descr': '<f8', 'fortran_order':
False, 'shape': (3, 4), }`` padded with spaces and a final newline so data starts at a
multiple of 64), then the raw data.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys

import numpy as np

from swanref import ops as api
from swanref.spec import spectral
from swanref.spec.readings import SPEC_VERSION, VECTORS_VERSION, default_rank_rtol
from swanref.verify import measure as A
from swanref.verify import matrices
from swanref.spec.tolerance import (TRUSTED_LIMIT, condition_number, exact_whitening_tolerance,
                        grad_norm_tolerance, newton_schulz_tolerance)

SCHEMA = "swanref_vectors_v1"
GENERATOR = "swanref.vectors/1"  # a format name, kept stable across module moves
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "vectors",
                       "v" + VECTORS_VERSION)
MPMATH_DPS = 50

METRICS = {
    "max_mixed": "max over entries of |out - expected| / (1 + |expected|)",
    "fro_per_sqrt_rank": "max over slices of ||out - expected||_F / sqrt(max(rank, 1))",
    "fro_per_sqrt_min_side": "max over slices of ||out - expected||_F / sqrt(min(m, n))",
    "rel_fro": "max over slices of ||out - expected||_F / ||expected||_F "
               "(||out - expected||_F where expected is zero)",
}
NAN_RULES = ("every metric is total: NaN vs NaN and equal infinities count as agreement, NaN "
             "or Inf against anything else is an infinite error")
FLAGS = {
    "well_conditioned": "condition number below 100",
    "ill_conditioned": "condition number of 1e4 or more",
    "rank_deficient": "rank below min(m, n): the expected result is the partial isometry",
    "tall": "m > n",
    "wide": "m < n",
    "square": "m == n",
    "batched": "leading batch axes: every slice is an independent problem",
    "zero": "all-zero input: the output must be exactly zero",
    "constant_row": "some lines are constant: GradNorm maps them to zero",
    "zero_line": "some rows or columns are zero",
    "large_offset": "lines whose |mean| is much larger than their std",
    "tiny_variance": "lines with variance far below 1e-8 (detects an eps added to the std)",
    "huge_scale": "entries around 1e150 (1e15 for float32): squares overflow if formed naively",
    "tiny_scale": "entries around 1e-150 (1e-15 for float32): squares underflow",
    "single_line": "one row or one column",
    "float32": "input is float32: compute in float32, tolerance for float32",
    "mpmath_checked": "expected output computed with mpmath at 50 digits (and swanref's float64 "
                      "reference agreed with it)",
}


# -- case construction ------------------------------------------------------------------------

class _Builder:
    def __init__(self):
        self.cases = []

    def add(self, op, name, G, reading, flags, comment):
        G = np.ascontiguousarray(G)
        self.cases.append({"op": op, "name": name, "G": G, "reading": dict(reading),
                           "flags": list(flags), "comment": comment})


def _rng(key: str):
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _shape_flags(G):
    m, n = G.shape[-2:]
    f = ["tall" if m > n else "wide" if m < n else "square"]
    if G.ndim > 2:
        f.append("batched")
    if G.dtype == np.float32:
        f.append("float32")
    if min(m, n) == 1:
        f.append("single_line")
    return f


def _rows(rng, m, n, scale=1.0, offset=0.0):
    z = rng.standard_normal((m, n))
    return offset + scale * z


def build_cases() -> list[dict]:
    b = _Builder()
    gn = {"axis": -1, "eps": 0.0}
    # -- grad_norm
    G = _rows(_rng("gn-basic"), 4, 6)
    b.add("grad_norm", "grad_norm_basic", G, gn, ["well_conditioned"], "4x6 standard normal")
    G = _rows(_rng("gn-rows"), 6, 5) * (10.0 ** np.arange(-3, 3))[:, None]
    G[1] = 0.1
    G[3] = 0.0
    G[4] = -7.25
    b.add("grad_norm", "grad_norm_constant_rows", G, gn, ["constant_row", "zero_line"],
          "rows of scales 1e-3..1e2; rows 1, 4 constant (0.1 and -7.25: their mean rounds), "
          "row 3 zero")
    G = _rows(_rng("gn-tall"), 7, 3)
    b.add("grad_norm", "grad_norm_tall", G, gn, [], "7x3: statistics still over each row")
    G = _rows(_rng("gn-offset"), 4, 8, scale=1e-2, offset=1e4)
    b.add("grad_norm", "grad_norm_large_offset", G, gn, ["large_offset"],
          "rows 1e4 + 1e-2 N(0,1): naive two-pass loses |mean|/std * u")
    G = _rows(_rng("gn-tiny"), 3, 6, scale=1e-9)
    b.add("grad_norm", "grad_norm_tiny_variance", G, gn, ["tiny_variance"],
          "variance 1e-18: an eps of 1e-8 in the std would shrink the output")
    G = _rows(_rng("gn-huge"), 3, 5, scale=1e150)
    b.add("grad_norm", "grad_norm_huge_scale", G, gn, ["huge_scale"], "entries ~1e150")
    G = _rows(_rng("gn-tinyscale"), 3, 5, scale=1e-150)
    b.add("grad_norm", "grad_norm_tiny_scale", G, gn, ["tiny_scale"], "entries ~1e-150")
    G = _rows(_rng("gn-col"), 5, 1)
    b.add("grad_norm", "grad_norm_single_column", G, gn, ["constant_row"],
          "n = 1: every row is constant, output all zeros")
    G = _rows(_rng("gn-f32"), 5, 8).astype(np.float32)
    b.add("grad_norm", "grad_norm_float32", G, gn, [], "float32 input")
    G = _rows(_rng("gn-batch"), 6, 5).reshape(2, 3, 5)
    b.add("grad_norm", "grad_norm_batched", G, gn, [], "2 x (3x5)")
    G = _rows(_rng("gn-zero"), 3, 4) * 0
    b.add("grad_norm", "grad_norm_zero", G, gn, ["zero", "constant_row"], "zero matrix")
    G = _rows(_rng("gn-axis"), 5, 3)
    b.add("grad_norm", "grad_norm_axis_cols", G, {"axis": -2, "eps": 0.0}, [],
          "axis=-2 reading: statistics over each column")
    G = _rows(_rng("gn-long"), 7, 4)
    b.add("grad_norm", "grad_norm_axis_long", G, {"axis": "long", "eps": 0.0}, [],
          "axis='long' reading on a tall matrix: over columns (the longer axis)")
    G = _rows(_rng("gn-eps"), 3, 6, scale=1e-2)
    b.add("grad_norm", "grad_norm_eps", G, {"axis": -1, "eps": 1e-4}, ["tiny_variance"],
          "eps=1e-4 reading: sqrt(v + eps) with v ~ 1e-4")

    # -- whiten, exact
    ex = {"method": "svd"}

    def cond(key, m, n, kappa, rank=None, scale=1.0, kind="geometric", dtype=np.float64):
        return matrices.conditioned(_rng(key), m, n, kappa, rank=rank, scale=scale, kind=kind,
                                    dtype=dtype)
    b.add("whiten", "whiten_basic", cond("w-basic", 4, 6, 10), ex, ["well_conditioned"],
          "4x6, kappa 10")
    b.add("whiten", "whiten_ill_1e6", cond("w-ill6", 5, 5, 1e6), ex, ["ill_conditioned"],
          "5x5, kappa 1e6 (geometric spectrum)")
    b.add("whiten", "whiten_ill_1e10", cond("w-ill10", 4, 7, 1e10, kind="cluster"), ex,
          ["ill_conditioned"], "4x7, kappa 1e10, one small singular value: eigh of G G^T "
          "cannot resolve it")
    b.add("whiten", "whiten_rank_deficient", cond("w-rd", 6, 6, 10, rank=3), ex,
          ["rank_deficient"], "6x6 of rank 3: expected U_3 V_3^T, no completion")
    b.add("whiten", "whiten_rank_one", cond("w-r1", 3, 5, 1, rank=1), ex, ["rank_deficient"],
          "3x5 of rank 1: expected u v^T")
    b.add("whiten", "whiten_tall", cond("w-tall", 8, 3, 100), ex, [],
          "8x3: G (G^T G)^(-1/2)")
    b.add("whiten", "whiten_zero", np.zeros((3, 4)), ex, ["zero"], "zero matrix -> zero")
    Gb = np.stack([cond(f"w-b{i}", 3, 5, k) for i, k in enumerate((1, 1e3, 1e6))])
    b.add("whiten", "whiten_batched", Gb, ex, ["ill_conditioned"],
          "3 x (3x5), kappas 1, 1e3, 1e6")
    b.add("whiten", "whiten_float32", cond("w-f32", 5, 8, 1e3, dtype=np.float32), ex, [],
          "float32, kappa 1e3")
    b.add("whiten", "whiten_huge_scale", cond("w-huge", 4, 5, 10, scale=1e150), ex,
          ["huge_scale"], "||G|| ~ 1e150: G G^T overflows if formed naively")
    b.add("whiten", "whiten_tiny_scale", cond("w-tiny", 4, 5, 10, scale=1e-150), ex,
          ["tiny_scale"], "||G|| ~ 1e-150")
    b.add("whiten", "whiten_row_vector", cond("w-row", 1, 6, 1), ex, [], "1x6: g / ||g||")
    b.add("whiten", "whiten_square_cluster", cond("w-cl", 6, 6, 1e4, kind="cluster"), ex,
          ["ill_conditioned"], "6x6, five singular values 1 and one 1e-4")

    # -- whiten, newton_schulz
    ns = {"method": "newton_schulz", "steps": 10, "beta": 0.5, "scaling": "gram_fro"}
    b.add("whiten", "ns_basic", cond("ns-basic", 4, 6, 10), ns, ["well_conditioned"],
          "coupled Newton-Schulz, default reading, kappa 10: expected = spectral prediction")
    b.add("whiten", "ns_ill_1e3", cond("ns-ill", 5, 7, 1e3), ns, [],
          "kappa 1e3: the small singular values are far from 1 after 10 steps")
    b.add("whiten", "ns_tall", cond("ns-tall", 7, 4, 30), ns, [], "7x4")
    b.add("whiten", "ns_rank_deficient", cond("ns-rd", 5, 5, 5, rank=2), ns,
          ["rank_deficient"], "rank 2 of 5: null directions stay (near) zero")
    b.add("whiten", "ns_zero", np.zeros((3, 3)), ns, ["zero"], "zero -> zero")
    b.add("whiten", "ns_batched", np.stack([cond(f"ns-b{i}", 3, 4, k)
                                            for i, k in enumerate((1, 10, 100))]), ns, [],
          "3 x (3x4)")
    b.add("whiten", "ns_float32", cond("ns-f32", 4, 6, 20, dtype=np.float32), ns, [],
          "float32")
    b.add("whiten", "ns_grad_fro_5", cond("ns-gf", 4, 6, 10),
          {"method": "newton_schulz", "steps": 5, "beta": 0.5, "scaling": "grad_fro"}, [],
          "reading steps=5, scaling='grad_fro'")
    b.add("whiten", "ns_huge_scale", cond("ns-huge", 3, 5, 10, scale=1e150), ns,
          ["huge_scale"], "||G|| ~ 1e150")

    # -- swan_update
    sw = {"whiten_method": "newton_schulz", "steps": 10, "beta": 0.5, "scaling": "gram_fro",
          "rescale": True, "axis": -1, "eps": 0.0}
    swx = {"whiten_method": "svd", "rescale": True, "axis": -1, "eps": 0.0}
    b.add("swan_update", "swan_basic", _rows(_rng("s-basic"), 4, 6), sw, [],
          "default reading: GradNorm, 10 Newton-Schulz steps, rescale to RMS 1")
    b.add("swan_update", "swan_exact", _rows(_rng("s-exact"), 4, 6), swx, [],
          "exact whitening reading (whiten_method='svd')")
    G = _rows(_rng("s-const"), 5, 6)
    G[2] = 3.5
    b.add("swan_update", "swan_constant_row", G, swx, ["constant_row", "rank_deficient"],
          "a constant row makes GradNorm(G) rank-deficient")
    b.add("swan_update", "swan_tall", _rows(_rng("s-tall"), 7, 3), swx, [], "7x3")
    b.add("swan_update", "swan_batched", _rows(_rng("s-b"), 6, 4).reshape(2, 3, 4), sw, [],
          "2 x (3x4)")
    b.add("swan_update", "swan_float32", _rows(_rng("s-f32"), 4, 8).astype(np.float32), sw, [],
          "float32")
    b.add("swan_update", "swan_zero", np.zeros((3, 4)), sw, ["zero"], "zero -> zero")
    b.add("swan_update", "swan_no_rescale", _rows(_rng("s-nr"), 3, 5),
          dict(swx, rescale=False), [], "rescale=False reading: the polar factor itself")

    # -- sinkgd_update
    sk = {"iters": 5}
    b.add("sinkgd_update", "sinkgd_basic", _rows(_rng("k-basic"), 4, 6), sk, [],
          "5 iterations of row -> sqrt(n), column -> sqrt(m)")
    G = _rows(_rng("k-zero"), 5, 4)
    G[1] = 0
    G[:, 2] = 0
    b.add("sinkgd_update", "sinkgd_zero_lines", G, sk, ["zero_line"],
          "row 1 and column 2 zero: they stay zero")
    b.add("sinkgd_update", "sinkgd_tall", _rows(_rng("k-tall"), 7, 3) *
          (10.0 ** np.arange(-3, 4))[:, None], sk, [], "7x3, rows of scales 1e-3..1e3")
    b.add("sinkgd_update", "sinkgd_batched", _rows(_rng("k-b"), 6, 4).reshape(2, 3, 4), sk, [],
          "2 x (3x4)")
    b.add("sinkgd_update", "sinkgd_float32", _rows(_rng("k-f32"), 4, 6).astype(np.float32), sk,
          [], "float32")
    b.add("sinkgd_update", "sinkgd_one_iter", _rows(_rng("k-1"), 4, 6), {"iters": 1}, [],
          "iters=1 reading")
    b.add("sinkgd_update", "sinkgd_tiny_scale", _rows(_rng("k-tiny"), 3, 4, scale=1e-150), sk,
          ["tiny_scale"], "entries ~1e-150: a 1e-8 clamp on the norms would break it")
    b.add("sinkgd_update", "sinkgd_zero", np.zeros((2, 3)), sk, ["zero"], "zero -> zero")
    return b.cases


# -- expected outputs, tolerances, cross-checks -------------------------------------------------

def _expected(case):
    op, G, rd = case["op"], case["G"].astype(np.float64), case["reading"]
    if op == "grad_norm":
        return api.grad_norm(G, axis=rd["axis"], eps=rd["eps"])
    if op == "whiten":
        if rd["method"] == "svd":
            m, n = G.shape[-2:]
            rtol = default_rank_rtol(m, n, float(np.finfo(case["G"].dtype).eps))
            return api.whiten(G, "svd", rank_rtol=rtol)
        return _ns_prediction(G, rd)
    if op == "swan_update":
        kw = {k: v for k, v in rd.items() if k in ("steps", "beta", "scaling")}
        return api.swan_update(G, whiten_method=rd["whiten_method"], rescale=rd["rescale"],
                               axis=rd["axis"], eps=rd["eps"], **kw)
    return api.sinkgd_update(G, iters=rd["iters"])


def _ns_prediction(G, rd):
    tall = G.shape[-2] > G.shape[-1]
    W = np.swapaxes(G, -1, -2) if tall else G
    amax = np.max(np.abs(W), axis=(-2, -1), keepdims=True)
    if rd["scaling"] != "none":
        W = np.ldexp(W, -np.frexp(np.where(amax > 0, amax, 1))[1])
    P = spectral.predicted_newton_schulz(W, rd["steps"], rd["beta"], rd["scaling"])
    return np.swapaxes(P, -1, -2) if tall else P


def _tolerance(case):
    """(metric, tolerance, extra) for a case, from swanref.spec.tolerance (spec 8)."""
    op, G, rd = case["op"], case["G"], case["reading"]
    dt = G.dtype
    m, n = G.shape[-2:]
    G64 = G.astype(np.float64)
    if op == "grad_norm":
        ax = rd["axis"]
        L = (max(m, n) if ax == "long" else (n if ax == -1 else m))
        return "max_mixed", float(grad_norm_tolerance(L, dt) +
                                  grad_norm_tolerance(L, np.float64)), {}
    if op == "sinkgd_update":
        return "max_mixed", float(A.sinkgd_tolerance(m, n, rd["iters"], dt) +
                                  A.sinkgd_tolerance(m, n, rd["iters"], np.float64)), {}
    if op == "whiten" and rd["method"] == "svd":
        rtol = default_rank_rtol(m, n, float(np.finfo(dt).eps))
        kappa = np.atleast_1d(condition_number(G64, rank_rtol=rtol))
        s = np.linalg.svd(G64, compute_uv=False)
        rank = np.sum(s > rtol * s[..., :1], axis=-1)
        tol = {meth: float(np.max(exact_whitening_tolerance(m, n, kappa, dt, meth) +
                                  exact_whitening_tolerance(m, n, kappa, np.float64, "svd")))
               for meth in ("svd", "eigh")}
        return "fro_per_sqrt_rank", tol["svd"], {
            "tolerance_by_method": tol, "rank": np.atleast_1d(rank).tolist(),
            "kappa": [float(k) for k in kappa]}
    if op == "whiten":
        W = np.swapaxes(G64, -1, -2) if m > n else G64
        amax = np.max(np.abs(W), axis=(-2, -1), keepdims=True)
        W = np.ldexp(W, -np.frexp(np.where(amax > 0, amax, 1))[1])
        s = np.linalg.svd(W, compute_uv=False)
        mm, nn = W.shape[-2:]
        tol = np.max(newton_schulz_tolerance(s, mm, nn, rd["steps"], rd["beta"], rd["scaling"],
                                             dt) +
                     newton_schulz_tolerance(s, mm, nn, rd["steps"], rd["beta"], rd["scaling"],
                                             np.float64))
        if tol > TRUSTED_LIMIT:
            raise ValueError(f"{case['name']}: the tolerance model makes no claim ({tol})")
        return "fro_per_sqrt_min_side", float(tol), {}
    tol, claim = A.swan_update_tolerance(G64, whiten_method=rd["whiten_method"],
                                         steps=rd.get("steps"), beta=rd.get("beta"),
                                         scaling=rd.get("scaling"), rescale=rd["rescale"],
                                         axis=rd["axis"], eps=rd["eps"], dtype=dt)
    if not np.all(claim):
        raise ValueError(f"{case['name']}: the tolerance model makes no claim")
    return "rel_fro", float(np.max(tol)), {}


def metric_error(metric, out, expected, extra=None) -> float:
    """The case's error (total: never NaN)."""
    out = np.asarray(out)
    if metric == "max_mixed":
        e = A.mixed_error(out, expected)
        return float(np.max(e)) if e.size else 0.0
    fro = np.atleast_1d(A.fro_error(out, expected))
    if metric == "fro_per_sqrt_rank":
        rank = np.maximum(np.asarray((extra or {}).get("rank", [1])), 1).reshape(fro.shape)
        return float(np.max(fro / np.sqrt(rank)))
    if metric == "fro_per_sqrt_min_side":
        return float(np.max(fro / math.sqrt(min(np.shape(expected)[-2:]))))
    den = np.atleast_1d(np.sqrt(np.sum(np.asarray(expected, np.float64) ** 2, axis=(-2, -1))))
    return float(np.max(np.where(den > 0, fro / np.where(den > 0, den, 1), fro)))


def _mp_newton_schulz(G, steps, beta, scaling, dps=MPMATH_DPS):
    """The coupled iteration itself (spec 3.3) at ``dps`` digits: checks the prediction."""
    import mpmath as mp
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


def _mp_sinkgd(G, iters, dps=MPMATH_DPS):
    import mpmath as mp
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


def _mp_slice(case, g2d):
    """The 50-digit result for one 2-D slice, or None where there is no mpmath route."""
    from swanref.verify import highprec
    rd, op = case["reading"], case["op"]
    G = g2d.astype(np.float64)
    m, n = G.shape
    rtol = default_rank_rtol(m, n, float(np.finfo(case["G"].dtype).eps))
    if op == "grad_norm":
        if rd["axis"] == -1 or (rd["axis"] == "long" and n >= m):
            return highprec.grad_norm(G, dps=MPMATH_DPS, eps=rd["eps"])
        return highprec.grad_norm(G.T, dps=MPMATH_DPS, eps=rd["eps"]).T
    if op == "whiten" and rd["method"] == "svd":
        return highprec.polar_factor(G, dps=MPMATH_DPS, rank_rtol=rtol)
    if op == "whiten" and rd["method"] == "newton_schulz":
        return _mp_newton_schulz(G, rd["steps"], rd["beta"], rd["scaling"])
    if op == "sinkgd_update":
        return _mp_sinkgd(G, rd["iters"])
    if op == "swan_update" and rd["axis"] == -1:
        g = highprec.grad_norm(G, dps=MPMATH_DPS, eps=rd["eps"])
        if rd["whiten_method"] == "svd":
            hp = highprec.polar_factor(g, dps=MPMATH_DPS, rank_rtol=rtol)
        elif rd["whiten_method"] == "newton_schulz":
            hp = _mp_newton_schulz(g, rd["steps"], rd["beta"], rd["scaling"])
        else:
            return None
        if rd["rescale"]:
            f = np.linalg.norm(hp)
            hp = hp * (np.sqrt(hp.size) / f) if f > 0 else hp
        return hp
    return None


def _mpmath_check(case, expected, metric, extra):
    """Cross-check small cases slice by slice at 50 digits (mpmath)."""
    G = case["G"]
    if G.size > 100 or not np.isfinite(G).all():
        return None, None
    try:
        import mpmath  # noqa: F401
    except ImportError:
        return None, None
    flat = G.reshape((-1,) + G.shape[-2:])
    parts = [_mp_slice(case, g) for g in flat]
    if any(p is None for p in parts):
        return None, None
    hp = np.stack(parts).reshape(G.shape)
    err = metric_error(metric, expected, hp, extra)
    return {"mpmath_dps": MPMATH_DPS, "error_of_float64_reference": err}, hp


# -- writing ------------------------------------------------------------------------------------

def _npy_bytes(arr) -> bytes:
    arr = np.ascontiguousarray(arr)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("scipy", "mpmath"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    from swanref import __version__
    out["swanref"] = __version__
    return out


def _git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                           text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _reading_text(rd) -> str:
    return ";".join(f"{k}={v}" for k, v in rd.items())


def write_vectors(outdir: str, *, provenance_extra: dict | None = None) -> dict:
    """Generate the vector set into ``outdir`` (created; existing set files overwritten)."""
    cases = build_cases()
    os.makedirs(os.path.join(outdir, "cases"), exist_ok=True)
    groups: dict[str, dict] = {}
    files: dict[str, str] = {}
    tsv = ["# name\top\tdtype\tshape\tinput\texpected\toutput\tmetric\ttolerance\treading"]
    for tc_id, case in enumerate(cases, start=1):
        G = case["G"]
        expected = np.asarray(_expected(case), dtype=np.float64)
        metric, tol, extra = _tolerance(case)
        flags = list(case["flags"]) + [f for f in _shape_flags(G) if f not in case["flags"]]
        if case["op"] == "whiten" and case["reading"]["method"] == "svd":
            kap = max(extra["kappa"])
            if kap < 100 and "well_conditioned" not in flags and np.any(G):
                flags.append("well_conditioned")
            if kap >= 1e4 and "ill_conditioned" not in flags:
                flags.append("ill_conditioned")
        cross, hp = _mpmath_check(case, expected, metric, extra)
        if cross is not None:
            if not cross["error_of_float64_reference"] <= tol / 4:
                raise AssertionError(f"{case['name']}: swanref and mpmath disagree "
                                     f"({cross['error_of_float64_reference']} > {tol / 4})")
            flags.append("mpmath_checked")
            expected = np.asarray(hp, dtype=np.float64)   # the 50-digit value, rounded once
        name = case["name"]
        fin, fexp = f"cases/{name}.in.npy", f"cases/{name}.expected.npy"
        bin_, bexp = _npy_bytes(G), _npy_bytes(expected)
        for rel, data in ((fin, bin_), (fexp, bexp)):
            with open(os.path.join(outdir, rel), "wb") as fh:
                fh.write(data)
            files[rel] = _sha256(data)
        key = case["op"] + "|" + json.dumps(case["reading"], sort_keys=True)
        group = groups.setdefault(key, {"op": case["op"], "reading": case["reading"],
                                        "metric": metric, "metricDefinition": METRICS[metric],
                                        "tests": []})
        test = {"tcId": tc_id, "name": name, "comment": case["comment"], "flags": flags,
                "result": "valid",
                "input": {"file": fin, "sha256": files[fin], "dtype": str(G.dtype),
                          "shape": list(G.shape)},
                "expected": {"file": fexp, "sha256": files[fexp], "dtype": "float64",
                             "shape": list(expected.shape)},
                "output": f"cases/{name}.out.npy",
                "tolerance": tol}
        test.update(extra)
        test["expected_source"] = (f"mpmath, {MPMATH_DPS} digits" if cross is not None else
                                   "swanref float64 reference")
        if cross is not None:
            test["crosscheck"] = cross
        group["tests"].append(test)
        tsv.append("\t".join([name, case["op"], str(G.dtype), "x".join(map(str, G.shape)), fin,
                              fexp, test["output"], metric, repr(tol),
                              _reading_text(case["reading"])]))
    manifest = {
        "algorithm": "SWAN gradient operators (GradNorm, GradWhitening, SWAN update, SinkGD)",
        "schema": SCHEMA,
        "specVersion": SPEC_VERSION,
        "generator": GENERATOR,
        "numberOfTests": len(cases),
        "header": [
            "Golden vectors for the operators of swanref's docs/spec.md.",
            "Inputs are exact: expected outputs are the spec's result for the stored input "
            "values, in float64, for the named reading of each test group.",
            "An implementation passes a case when metric(output, expected) <= tolerance; "
            "tolerances follow the spec's model (section 8) for the input's dtype.",
        ],
        "notes": {"flags": FLAGS, "metrics": METRICS, "nan_rules": NAN_RULES,
                  "output_convention": "write cases/<name>.out.npy (the 'output' field), same "
                                       "shape and dtype as the input, npy format 1.0/2.0/3.0",
                  "result": "every case is 'valid': the expected output is the only accepted "
                            "answer within tolerance",
                  "npy": "format 1.0, little-endian, C order, no pickles; see "
                         "docs/verification.md"},
        "provenance": dict({"generator": GENERATOR, "spec_version": SPEC_VERSION,
                            "library_versions": _versions(), "git_commit": _git_commit(),
                            "reference": "expected outputs: mpmath at 50 digits where the case "
                                         "is small (flag mpmath_checked, field "
                                         "expected_source), else swanref's float64 reference "
                                         "(Newton-Schulz: the spectral prediction of "
                                         "swanref.spec.spectral)",
                            "crosscheck": f"mpmath at {MPMATH_DPS} digits for small 2-D cases: "
                                          "GradNorm and SVD polar factor "
                                          "(swanref.verify.highprec), the coupled "
                                          "Newton-Schulz iteration itself, SR-Sinkhorn, "
                                          "and their SWAN compositions"},
                           **(provenance_extra or {})),
        "testGroups": list(groups.values()),
    }
    mbytes = (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()
    with open(os.path.join(outdir, "manifest.json"), "wb") as fh:
        fh.write(mbytes)
    files["manifest.json"] = _sha256(mbytes)
    tbytes = ("\n".join(tsv) + "\n").encode()
    with open(os.path.join(outdir, "index.tsv"), "wb") as fh:
        fh.write(tbytes)
    files["index.tsv"] = _sha256(tbytes)
    with open(os.path.join(outdir, "SHA256SUMS"), "w") as fh:
        for rel in sorted(files):
            fh.write(f"{files[rel]}  {rel}\n")
    return manifest


# -- reading and checking ----------------------------------------------------------------------
#
# A vector set comes from elsewhere: every path it names is confined to its folder, every size
# is checked against the manifest before a byte of data is read, every field is type-checked,
# and whatever is wrong ends in VectorError (one line, exit status 2), never a traceback.

class VectorError(Exception):
    """The vector set is missing, malformed or corrupted (exit status 2)."""


#: ops a vector set may name
OPS = ("grad_norm", "whiten", "swan_update", "sinkgd_update")
#: input dtypes a case may have (outputs have the input's dtype)
CASE_DTYPES = ("float64", "float32", "float16")
#: limits far above any golden vector (the shipped set is ~100 KB, its largest array 24
#: entries) and far below what would exhaust memory: a bigger file is refused unread
MAX_MANIFEST_BYTES = 64 << 20
MAX_ELEMENTS = 1 << 24            # entries of one array (128 MiB in float64)
MAX_FILE_BYTES = 8 * MAX_ELEMENTS + (1 << 16)   # largest array plus the largest npy header


def confined(directory: str, rel, what: str = "path") -> str:
    """``directory/rel`` when ``rel`` is a relative path inside ``directory`` (symbolic links
    resolved); VectorError for absolute paths, '..' components and links that lead out."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise VectorError(f"{what} must be a non-empty relative path, got {rel!r}")
    if os.path.isabs(rel) or rel[0] in "/\\" or os.path.splitdrive(rel)[0]:
        raise VectorError(f"{what} {rel!r} is an absolute path; a vector set may only name "
                          "files inside its own folder")
    if ".." in rel.replace("\\", "/").split("/"):
        raise VectorError(f"{what} {rel!r} leaves the vector set's folder ('..')")
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, path]) != root:
        raise VectorError(f"{what} {rel!r} resolves outside the vector set's folder")
    return path


def _file_size(path: str, rel: str, limit: int = MAX_FILE_BYTES) -> int:
    size = os.path.getsize(path)
    if size > limit:
        raise VectorError(f"{rel}: {size} bytes, above the {limit}-byte limit for a file of a "
                          "vector set")
    return size


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_npy(path: str, *, shape=None, dtype=None) -> np.ndarray:
    """A ``.npy`` file as an array, checked before its data is read: no pickles (object
    dtypes), a header whose shape fits the file's size and :data:`MAX_ELEMENTS`, and the
    ``shape`` / ``dtype`` the manifest states when given.  ValueError (one line) otherwise."""
    try:
        # mmap reads and checks the header only; a header claiming more data than the file
        # holds, or Python objects, fails here without allocating anything
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"not a valid numeric .npy file ({exc})") from None
    if not isinstance(mm, np.ndarray):
        raise ValueError("not a .npy array file")
    if mm.dtype.kind not in "biuf" or mm.dtype.hasobject:
        raise ValueError(f"dtype {mm.dtype} is not a real numeric dtype")
    if mm.size > MAX_ELEMENTS:
        raise ValueError(f"{mm.size} entries, above the limit of {MAX_ELEMENTS}")
    if shape is not None and list(mm.shape) != list(shape):
        raise ValueError(f"shape {list(mm.shape)} != {list(shape)} stated in manifest.json")
    if dtype is not None and str(mm.dtype) != dtype:
        raise ValueError(f"dtype {mm.dtype} != {dtype} stated in manifest.json")
    arr = np.array(mm)  # into memory, detached from the file
    del mm
    return arr


def _load_npy(path):
    return read_npy(path)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_array_entry(entry, where: str, directory: str | None):
    if not isinstance(entry, dict):
        raise VectorError(f"{where} must be an object with file, sha256, dtype, shape")
    for key in ("file", "sha256", "dtype", "shape"):
        if key not in entry:
            raise VectorError(f"{where} has no {key!r}")
    if directory is not None:
        confined(directory, entry["file"], f"{where}.file")
    sha = entry["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise VectorError(f"{where}.sha256 must be 64 lowercase hex digits, got {sha!r}")
    if entry["dtype"] not in CASE_DTYPES:
        raise VectorError(f"{where}.dtype must be one of {', '.join(CASE_DTYPES)}, got "
                          f"{entry['dtype']!r}")
    shape = entry["shape"]
    if not (isinstance(shape, list) and len(shape) >= 2 and all(_is_count(s) for s in shape)):
        raise VectorError(f"{where}.shape must be a list of >= 2 non-negative integers, got "
                          f"{shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise VectorError(f"{where}.shape {shape} has more than {MAX_ELEMENTS} entries")


def validate_manifest(manifest, directory: str | None = None, where: str = "manifest.json"):
    """Type-check a manifest (and confine its paths to ``directory``); VectorError if bad."""
    def bad(msg):
        raise VectorError(f"{where}: {msg}")
    if not isinstance(manifest, dict):
        bad("not a JSON object")
    if manifest.get("schema") != SCHEMA:
        bad(f"schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    groups = manifest.get("testGroups")
    if not isinstance(groups, list):
        bad("testGroups must be a list")
    names = set()
    for gi, g in enumerate(groups):
        w = f"testGroups[{gi}]"
        if not isinstance(g, dict):
            bad(f"{w} is not an object")
        if g.get("op") not in OPS:
            bad(f"{w}.op must be one of {', '.join(OPS)}, got {g.get('op')!r}")
        if not isinstance(g.get("reading"), dict):
            bad(f"{w}.reading must be an object")
        if g.get("metric") not in METRICS:
            bad(f"{w}.metric must be one of {', '.join(METRICS)}, got {g.get('metric')!r}")
        if not isinstance(g.get("tests"), list):
            bad(f"{w}.tests must be a list")
        for ti, t in enumerate(g["tests"]):
            wt = f"{w}.tests[{ti}]"
            if not isinstance(t, dict):
                bad(f"{wt} is not an object")
            name = t.get("name")
            if not isinstance(name, str) or not name or not name.isprintable():
                bad(f"{wt}.name must be a non-empty printable string, got {name!r}")
            if name in names:
                bad(f"{wt}: duplicate case name {name!r}")
            names.add(name)
            tol = t.get("tolerance")
            if (isinstance(tol, bool) or not isinstance(tol, (int, float))
                    or not (0 <= tol < math.inf)):
                bad(f"{wt} ({name}): tolerance must be a finite number >= 0, got {tol!r}")
            if not isinstance(t.get("flags", []), list):
                bad(f"{wt} ({name}): flags must be a list")
            for part in ("input", "expected"):
                try:
                    _check_array_entry(t.get(part), f"{wt}.{part}", directory)
                except VectorError as exc:
                    bad(f"({name}) {exc}")
            if t["expected"]["shape"] != t["input"]["shape"]:
                bad(f"{wt} ({name}): expected.shape differs from input.shape")
            out = t.get("output")
            if directory is not None:
                confined(directory, out, f"{where}: {wt} ({name}) output")
            elif not isinstance(out, str):
                bad(f"{wt} ({name}): output must be a relative path")
            rank = t.get("rank")
            if rank is not None and not (isinstance(rank, list) and all(_is_count(r) for r in rank)
                                         and len(rank) == max(1, math.prod(t["input"]["shape"][:-2]))):
                bad(f"{wt} ({name}): rank must list one non-negative integer per slice")
    return manifest


def load_manifest(directory: str) -> dict:
    path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(path):
        raise VectorError(f"no manifest.json in {directory!r}")
    try:
        _file_size(path, "manifest.json", MAX_MANIFEST_BYTES)
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise VectorError(f"cannot read {path}: {exc}") from None
    except RecursionError:
        raise VectorError(f"cannot read {path}: JSON nested too deeply") from None
    return validate_manifest(manifest, directory)


def iter_tests(manifest):
    for group in manifest["testGroups"]:
        for test in group["tests"]:
            yield group, test


def verify_checksums(directory: str, manifest: dict | None = None) -> list[str]:
    """Problems with SHA256SUMS and the manifest's per-file digests (empty if none).

    Paths outside the set's folder and oversized files raise VectorError; files are hashed in
    chunks, never read whole."""
    problems = []
    sums = os.path.join(directory, "SHA256SUMS")
    if not os.path.isfile(sums):
        return [f"no SHA256SUMS in {directory!r}"]
    _file_size(sums, "SHA256SUMS", MAX_MANIFEST_BYTES)
    try:
        with open(sums, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, ValueError) as exc:
        raise VectorError(f"cannot read SHA256SUMS: {exc}") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep:
            raise VectorError(f"SHA256SUMS line {lineno}: expected '<sha256>  <path>'")
        path = confined(directory, rel, f"SHA256SUMS line {lineno}")
        if not os.path.isfile(path):
            problems.append(f"{rel}: missing")
            continue
        _file_size(path, rel, max(MAX_FILE_BYTES, MAX_MANIFEST_BYTES))
        if _sha256_file(path) != digest:
            problems.append(f"{rel}: sha256 mismatch")
    manifest = manifest or load_manifest(directory)
    for _, test in iter_tests(manifest):
        for part in ("input", "expected"):
            rel = test[part]["file"]
            path = confined(directory, rel, f"{test['name']} {part}.file")
            if not os.path.isfile(path):
                problems.append(f"{rel}: missing")
                continue
            _file_size(path, rel)
            if _sha256_file(path) != test[part]["sha256"]:
                problems.append(f"{rel}: sha256 differs from manifest.json")
    return sorted(set(problems))


def _case_array(directory, test, part):
    """The input or expected array of a case, checked against the manifest (VectorError)."""
    entry = test[part]
    path = confined(directory, entry["file"], f"{test['name']} {part}.file")
    try:
        return read_npy(path, shape=entry["shape"], dtype=entry["dtype"])
    except ValueError as exc:
        raise VectorError(f"{entry['file']}: {exc}") from None


def _output_path(directory, test, outputs):
    if outputs is None:
        return confined(directory, test["output"], f"{test['name']} output")
    base = os.path.basename(test["output"].replace("\\", "/"))
    return confined(outputs, base, f"{test['name']} output")


def check_outputs(directory, outputs=None, *, ops=None, dtypes=None, names=None,
                  allow_missing=False) -> list[dict]:
    """One result dict per selected case: status pass/FAIL/missing, error, tolerance."""
    manifest = load_manifest(directory)
    problems = verify_checksums(directory, manifest)
    if problems:
        raise VectorError("vector set corrupted: " + "; ".join(problems[:10]))
    results = []
    for group, test in iter_tests(manifest):
        if ops and group["op"] not in ops:
            continue
        if dtypes and test["input"]["dtype"] not in dtypes:
            continue
        if names and test["name"] not in names:
            continue
        out_path = _output_path(directory, test, outputs)
        res = {"tcId": test.get("tcId"), "name": test["name"], "op": group["op"],
               "reading": group["reading"], "flags": test.get("flags", []),
               "metric": group["metric"], "tolerance": test["tolerance"], "error": None,
               "status": "pass", "output": out_path, "message": ""}
        _case_array(directory, test, "input")  # a malformed input is a corrupted set too
        expected = _case_array(directory, test, "expected")
        if not os.path.isfile(out_path):
            res["status"] = "missing" if allow_missing else "FAIL"
            res["message"] = f"no output file {out_path}"
            results.append(res)
            continue
        try:
            if os.path.getsize(out_path) > MAX_FILE_BYTES:
                raise ValueError(f"{os.path.getsize(out_path)} bytes, above the limit")
            out = read_npy(out_path)
        except (ValueError, OSError) as exc:  # a malformed output is a failed case
            res["status"], res["message"] = "FAIL", f"cannot read output: {exc}"
            results.append(res)
            continue
        if list(out.shape) != test["input"]["shape"]:
            res["status"] = "FAIL"
            res["message"] = f"output shape {list(out.shape)} != input shape " \
                             f"{test['input']['shape']}"
        elif str(out.dtype) != test["input"]["dtype"]:
            res["status"] = "FAIL"
            res["message"] = f"output dtype {out.dtype} != input dtype {test['input']['dtype']}"
        elif out.dtype.kind != "f":
            res["status"], res["message"] = "FAIL", f"output dtype {out.dtype} is not floating"
        else:
            err = metric_error(group["metric"], out, expected, test)
            res["error"] = err
            if not err <= test["tolerance"]:
                res["status"] = "FAIL"
                res["message"] = f"{group['metric']} error {err:.3g} > tolerance " \
                                 f"{test['tolerance']:.3g}"
        results.append(res)
    return results


def write_outputs(directory, impl, outputs=None) -> dict:
    """Run ``impl(op, reading, G)`` on every case and save ``<name>.out.npy``.

    ``impl`` returns the output array, or None for a case it does not implement (no file is
    written; check with ``--allow-missing`` or select with ``--op``).  Outputs go next to the
    inputs (``directory/cases``) or into ``outputs``; an ``output`` path that would leave
    that folder (absolute, '..', a link out) is a VectorError, checked for every case before
    anything is written.  Returns {name: written?}.
    """
    manifest = load_manifest(directory)
    targets = {test["name"]: _output_path(directory, test, outputs)
               for _, test in iter_tests(manifest)}
    written = {}
    for group, test in iter_tests(manifest):
        G = _case_array(directory, test, "input")
        out = impl(group["op"], dict(group["reading"]), G)
        written[test["name"]] = out is not None
        if out is None:
            continue
        target = targets[test["name"]]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(_npy_bytes(np.asarray(out)))
    return written


def swanref_impl(op, reading, G):
    """swanref's own operators as an ``impl`` for :func:`write_outputs` (every reading)."""
    rd = dict(reading)
    if op == "grad_norm":
        return api.grad_norm(G, **rd)
    if op == "whiten":
        return api.whiten(G, rd.pop("method"), **rd)
    if op == "swan_update":
        return api.swan_update(G, **rd)
    return api.sinkgd_update(G, **rd)


# -- command line -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise VectorError(message)


def main_write(argv=None) -> int:
    """``swanref vectors OUTDIR [--force]``."""
    p = _Parser(prog="swanref vectors",
                description="Write the golden test vectors (manifest.json, index.tsv, "
                            "SHA256SUMS, cases/*.npy) into OUTDIR.")
    p.add_argument("outdir", metavar="OUTDIR",
                   help="folder to write the vector set into (created; must be empty "
                        "unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty OUTDIR")
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        p.print_help()
        return 0
    try:
        args = p.parse_args(argv)
        if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
            raise VectorError(f"{args.outdir!r} exists and is not a directory")
        if os.path.isdir(args.outdir) and os.listdir(args.outdir) and not args.force:
            raise VectorError(f"{args.outdir!r} is not empty (use --force to overwrite)")
        if args.force and os.path.isdir(os.path.join(args.outdir, "cases")):
            shutil.rmtree(os.path.join(args.outdir, "cases"))
        manifest = write_vectors(args.outdir)
    except (VectorError, OSError) as exc:
        print(f"swanref vectors: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest['numberOfTests']} cases (spec {SPEC_VERSION}, schema {SCHEMA}) "
          f"to {args.outdir}")
    return 0


def main_check(argv=None) -> int:
    """``swanref check-vectors DIR [--outputs OUTDIR] [--op OP] [--dtype DT] [--json]``."""
    p = _Parser(prog="swanref check-vectors",
                description="Verify an implementation's outputs (<case>.out.npy) against golden "
                            "vectors. Exit 0 all pass, 1 a case fails or is missing, 2 usage "
                            "error or corrupted vectors. DIR 'shipped' names the copy "
                            "shipped with swanref.")
    p.add_argument("dir", metavar="DIR",
                   help="the vector set (a folder written by 'swanref vectors'), or 'shipped'")
    p.add_argument("--outputs", default=None,
                   help="directory holding <name>.out.npy (default: DIR/cases)")
    p.add_argument("--op", action="append", default=None, help="only cases of this op")
    p.add_argument("--dtype", action="append", default=None, help="only inputs of this dtype")
    p.add_argument("--case", action="append", default=None, help="only this case name")
    p.add_argument("--allow-missing", action="store_true",
                   help="skip cases without an output instead of failing them")
    p.add_argument("--json", action="store_true",
                   help="print the results as JSON instead of a table (default: table)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        p.print_help()
        return 0
    try:
        args = p.parse_args(argv)
        directory = SHIPPED if args.dir == "shipped" else args.dir
        if not os.path.isdir(directory):
            raise VectorError(f"no such directory: {args.dir}")
        if args.outputs is not None and not os.path.isdir(args.outputs):
            raise VectorError(f"no such directory: {args.outputs}")
        manifest = load_manifest(directory)
        known_ops = {g["op"] for g in manifest["testGroups"]}
        for op in args.op or []:
            if op not in known_ops:
                raise VectorError(f"unknown --op {op!r}; the set has {sorted(known_ops)}")
        known = {t["name"] for _, t in iter_tests(manifest)}
        for name in args.case or []:
            if name not in known:
                raise VectorError(f"unknown --case {name!r}")
        results = check_outputs(directory, args.outputs, ops=args.op, dtypes=args.dtype,
                                names=args.case, allow_missing=args.allow_missing)
        if not results:
            raise VectorError("no case matches the selection")
    except VectorError as exc:
        print(f"swanref check-vectors: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError,
            MemoryError) as exc:
        # what validation did not foresee is still a malformed set, not a traceback
        print(f"swanref check-vectors: error: malformed vector set: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    failed = [r for r in results if r["status"] == "FAIL"]
    # every case skipped as missing checks nothing: that is not a pass
    nothing_checked = all(r["status"] == "missing" for r in results)
    code = 1 if failed or nothing_checked else 0
    if nothing_checked:
        print(f"swanref check-vectors: nothing checked: no output found for any of the "
              f"{len(results)} selected cases (--allow-missing skips some, not all)",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"spec_version": manifest.get("specVersion"), "schema": SCHEMA,
                          "passed": code == 0, "exit_code": code,
                          "counts": {s: sum(r["status"] == s for r in results)
                                     for s in ("pass", "FAIL", "missing")},
                          "results": results}, indent=1))
        return code
    w = max(len(r["name"]) for r in results)
    print(f"swanref check-vectors {args.dir} (spec {manifest.get('specVersion')}, "
          f"{len(results)} cases)")
    print(f"{'case':<{w}}  {'op':<13}  {'result':<7}  {'error':>9}  {'tolerance':>9}  flags")
    for r in results:
        err = "" if r["error"] is None else f"{r['error']:.3g}"
        print(f"{r['name']:<{w}}  {r['op']:<13}  {r['status']:<7}  {err:>9}  "
              f"{r['tolerance']:>9.3g}  {','.join(r['flags'])}")
    for r in failed:
        print(f"[FAIL] {r['name']}: {r['message']}")
    n_pass = sum(r["status"] == "pass" for r in results)
    n_missing = sum(r["status"] == "missing" for r in results)
    print(f"{n_pass} passed, {len(failed)} failed, {n_missing} missing (skipped)")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_write())
