"""Building a vector set: the cases, their expected outputs and tolerances, the mpmath
cross-check, and ``write_vectors`` (manifest.json, index.tsv, SHA256SUMS, cases/*.npy)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess

import numpy as np

from swanref import ops as api
from swanref.spec import spectral
from swanref.spec.output_files import real_directory, replace_file
from swanref.spec.readings import SPEC_VERSION, default_rank_rtol
from swanref.spec.tolerance import (TRUSTED_LIMIT, condition_number, exact_whitening_tolerance,
                                    grad_norm_tolerance, newton_schulz_tolerance)
from swanref.verify import highprec
from swanref.verify import measure as A
from swanref.verify import matrices
from swanref.verify.vectors.check import metric_error
from swanref.verify.vectors.files import npy_bytes, sha256
from swanref.verify.vectors.schema import FLAGS, GENERATOR, METRICS, NAN_RULES, SCHEMA
from swanref import __version__

MPMATH_DPS = 50


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

def _mpmath_check(case, expected, metric, extra):
    """Cross-check small cases slice by slice at 50 digits (mpmath)."""
    G = case["G"]
    if G.size > 100 or not np.isfinite(G).all():
        return None, None
    try:
        import mpmath  # noqa: F401
    except ImportError:
        return None, None
    m, n = G.shape[-2:]
    rtol = default_rank_rtol(m, n, float(np.finfo(G.dtype).eps))
    flat = G.reshape((-1,) + G.shape[-2:])
    parts = [highprec.operator(case["op"], case["reading"], g.astype(np.float64),
                               rank_rtol=rtol, dps=MPMATH_DPS) for g in flat]
    if any(p is None for p in parts):
        return None, None
    hp = np.stack(parts).reshape(G.shape)
    err = metric_error(metric, expected, hp, extra)
    return {"mpmath_dps": MPMATH_DPS, "error_of_float64_reference": err}, hp


# -- writing ------------------------------------------------------------------------------------

def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("scipy", "mpmath"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
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


def reading_text(rd) -> str:
    return ";".join(f"{k}={v}" for k, v in rd.items())


def write_vectors(outdir: str, *, provenance_extra: dict | None = None) -> dict:
    """Generate the vector set into ``outdir`` (created; existing set files overwritten)."""
    cases = build_cases()
    # every file is written by rename into a real folder: a link planted in outdir (or as
    # outdir/cases) is replaced or refused, never written through (spec 6.7)
    real_directory(outdir, "vector-set folder")
    real_directory(os.path.join(outdir, "cases"), "vector-set folder")
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
        bin_, bexp = npy_bytes(G), npy_bytes(expected)
        for rel, data in ((fin, bin_), (fexp, bexp)):
            replace_file(os.path.join(outdir, rel), data)
            files[rel] = sha256(data)
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
                              reading_text(case["reading"])]))
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
    replace_file(os.path.join(outdir, "manifest.json"), mbytes)
    files["manifest.json"] = sha256(mbytes)
    tbytes = ("\n".join(tsv) + "\n").encode()
    replace_file(os.path.join(outdir, "index.tsv"), tbytes)
    files["index.tsv"] = sha256(tbytes)
    replace_file(os.path.join(outdir, "SHA256SUMS"),
                 "".join(f"{files[rel]}  {rel}\n" for rel in sorted(files)).encode())
    return manifest
