"""GPU benchmark: swanref's CuPy backend next to PyTorch eager and torch.compile, one process.

    python -m swanref.tools.bench_gpu [--sections ns,presets,gradnorm,exact] [--no-compile]
                                      [--markdown FILE] [--json FILE] [--quick]
    swanref bench --gpu ...            (the CLI forwards here)

Every row prints swanref's time, PyTorch eager's and torch.compile's (same algorithm, same
precision, TF32 off), the ratios and the goal they are held to (docs/performance_gpu.md):

* ns: Newton-Schulz (spec 3.3; 10 steps, beta 1/2, gram_fro) through the public
  ``swanref.whiten`` (finite check and divergence guard included) and the backend function,
  next to the reference's lines transcribed into torch. Goal: at least torch eager and within
  5% of torch.compile. Peak device memory of the public call (CuPy pool bytes in use, plus
  the buffers of captured CUDA graphs) next to torch eager's (``max_memory_allocated``).
* presets: muon_ns5 on a torch bfloat16 tensor with ``emulate='bfloat16'`` (native bf16 on
  the GPU) next to Keller Jordan's torch function on bfloat16; float32 too. Agreement of the
  GPU bf16 path with torch eager and with the CPU emulation (swanref.presets, small shapes).
* gradnorm: ``swanref.grad_norm`` from CuPy and torch input (float32, bfloat16) against the
  device copy ceiling (bytes read + written), rotating over inputs larger than L2.
* exact: ``swanref.whiten(G, 'svd')`` next to torch's SVD polar route, on matrices with a
  known polar factor (condition number 1e3), errors against it.

Times are medians of CUDA-event timings after a warm-up; calls under 1 ms are timed in
back-to-back groups and divided by the group size.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
import traceback

import numpy as np

import swanref
from swanref.backends import cupy as CB
from swanref.presets import catalogue, lowprec
from swanref.spec.output_files import output_path_problem
from swanref.spec.output_files import open_output

NS_CASES = [(1, 1024, 4096), (1, 4096, 4096), (1, 4096, 11008), (8, 1024, 1024), (8, 512, 2048)]
PRESET_CASES = [(1, 1024, 4096), (1, 4096, 11008), (8, 1024, 1024), (8, 512, 2048)]
GN_CASES = [(4096, 11008), (2048, 2048)]
EXACT_CASES = [((1, 1024, 4096), "float32"), ((8, 1024, 1024), "float32"),
               ((1, 4096, 11008), "float32"), ((1, 1024, 4096), "float64")]
QUICK = {"ns": [(1, 1024, 4096), (8, 512, 2048)], "presets": [(1, 1024, 4096), (8, 512, 2048)],
         "gn": [(2048, 2048)], "exact": [((1, 1024, 4096), "float32")]}
KAPPA = 1e3
#: calls per swanref.deferred_checks() block in the deferred columns (one synchronisation per
#: block, as for the parameters of one optimizer step); the time shown is per call
DEFERRED_GROUP = 8


def _deferred_group(swanref, fn):
    def call():
        with swanref.deferred_checks():
            for _ in range(DEFERRED_GROUP):
                fn()
    return call


class Timer:
    def __init__(self, cp, target_s: float, max_reps: int = 15):
        self.cp, self.target, self.max_reps = cp, target_s, max_reps

    def __call__(self, fn, warmup: int = 1):
        """Median seconds per call of ``fn`` (CUDA events)."""
        cp = self.cp
        for _ in range(warmup):
            fn()
        cp.cuda.Device().synchronize()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        once = cp.cuda.get_elapsed_time(start, stop) / 1e3
        inner = int(min(200, max(1, math.ceil(2e-3 / max(once, 1e-6))))) if once < 1e-3 else 1
        times = []
        while True:
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3 / inner)
            total = sum(times) * inner
            if len(times) >= self.max_reps or (total >= self.target and len(times) >= 3):
                break
            if total >= self.target and times[0] > self.target / 2:
                break
        return statistics.median(times)


def _rel(cp, a, b):
    a = cp.asarray(a).astype(cp.float64)
    b = cp.asarray(b).astype(cp.float64)
    nb = float(cp.linalg.norm(b))
    return float(cp.linalg.norm(a - b)) / nb if nb > 0 else float(cp.linalg.norm(a - b))


def _as_cupy(cp, torch, x):
    if isinstance(x, cp.ndarray):
        return x
    if torch is not None and isinstance(x, torch.Tensor):
        if x.dtype == torch.bfloat16:
            x = x.float()
        return cp.from_dlpack(x.contiguous())
    return cp.asarray(x)


# -- PyTorch transcriptions --------------------------------------------------------------------

def _torch_pow2(torch, G):
    amax = G.abs().amax(dim=(-2, -1), keepdim=True)
    _, e = torch.frexp(amax)
    return torch.ldexp(G, -e)


def torch_newton_schulz(G, steps: int = 10, beta: float = 0.5):
    import torch
    Gs = _torch_pow2(torch, G)
    A = Gs @ Gs.mT
    c = torch.sqrt((A * A).sum(dim=(-2, -1), keepdim=True))
    c = torch.where(c > 0, c, torch.ones_like(c))
    eye = torch.eye(G.shape[-2], dtype=G.dtype, device=G.device)
    Y = A / c
    Z = eye.expand_as(A).clone()
    for _ in range(steps):
        T = 3 * eye - Z @ Y
        Y, Z = beta * (Y @ T), beta * (T @ Z)
    return Z @ Gs / torch.sqrt(c)


def torch_keller(G, coefficients, steps: int, eps: float):
    """Keller Jordan's zeropower_via_newtonschulz5 (github.com/KellerJordan/Muon), in G's
    dtype (the source casts to bfloat16 first: pass a bfloat16 tensor)."""
    X = G
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for i in range(steps):
        a, b, c = coefficients[min(i, len(coefficients) - 1)]
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if tall else X


def torch_svd_polar(G, rtol):
    import torch
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = S > rtol * S[..., :1]
    return (U * keep[..., None, :].to(U.dtype)) @ Vh


def torch_grad_norm(G):
    mu = G.mean(dim=-1, keepdim=True)
    c = G - mu
    return c / torch_sqrt((c * c).mean(dim=-1, keepdim=True))


def torch_sqrt(x):
    import torch
    return torch.sqrt(x)


# -- helpers ------------------------------------------------------------------------------------

def _environment(cp, torch):
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    name = dev["name"].decode() if isinstance(dev["name"], bytes) else str(dev["name"])
    env = {"gpu": name, "sm_count": dev.get("multiProcessorCount"),
           "memory_GiB": round(dev.get("totalGlobalMem", 0) / 2**30, 1),
           "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
           "cuda_driver": cp.cuda.runtime.driverGetVersion(), "cupy": cp.__version__,
           "numpy": np.__version__, "python": platform.python_version(),
           "torch": getattr(torch, "__version__", None),
           "torch_cuda": getattr(getattr(torch, "version", None), "cuda", None),
           "swanref": swanref.__version__}
    return env


def _peaks(cp, torch, timer):
    nbytes = 1024 * 2**20
    a = cp.random.standard_normal(nbytes // 4, dtype=cp.float32)
    b = cp.empty_like(a)
    bw = 2 * nbytes / timer(lambda: cp.copyto(b, a))
    if torch is not None:
        ta, tb = torch.from_dlpack(a), torch.from_dlpack(b)
        bw = max(bw, 2 * nbytes / timer(lambda: tb.copy_(ta)))
    a = b = None  # noqa: F841 (free the buffers)
    peaks = {"copy_GBps": bw / 1e9}
    if torch is not None:
        for dt in ("float32", "float64", "bfloat16"):
            x = torch.randn(8192, 8192, device="cuda").to(getattr(torch, dt))
            peaks[f"gemm_TFLOPs_{dt}"] = 2 * 8192 ** 3 / timer(lambda: x @ x) / 1e12
            del x
        torch.cuda.empty_cache()
    cp.get_default_memory_pool().free_all_blocks()
    return peaks


class PeakCupy:
    """Peak bytes the CuPy default pool has in use while ``fn`` runs, above what it had."""

    def __init__(self, cp):
        self.cp = cp

    def __call__(self, fn):
        cp = self.cp
        pool = cp.get_default_memory_pool()
        cp.cuda.Device().synchronize()
        base = pool.used_bytes()
        peak = [base]

        def malloc(n):
            p = pool.malloc(n)
            peak[0] = max(peak[0], pool.used_bytes())
            return p
        with cp.cuda.using_allocator(malloc):
            out = fn()
        cp.cuda.Device().synchronize()
        return peak[0] - base, out


def _torch_peak(torch, fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base, out


def _free(cp, torch):
    cp.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()


def _shape_str(batch, m, n):
    return f"{m}x{n}" if batch == 1 else f"{batch}x{m}x{n}"


def _compiled(torch, fn, enabled):
    if torch is None or not enabled:
        return None
    try:
        return torch.compile(fn, dynamic=True)
    except Exception:
        return None


def _time_optional(timer, fn):
    if fn is None:
        return None
    try:
        return timer(fn)
    except Exception as exc:  # torch.compile unavailable for this case
        print(f"  (torch.compile failed: {exc!r:.200})", flush=True)
        return None


# -- sections -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _graph_replay(CB):
    """The opt-in CUDA-graph replay on for a comparison; afterwards off, its cache freed."""
    graphs = sys.modules["swanref.backends.cupy.graphs"]
    CB.set_graphs(True)
    try:
        yield graphs
    finally:
        CB.set_graphs(False)
        graphs.clear()


def bench_ns(cp, torch, swanref, CB, timer, cases, dtypes, compile_on, rows):
    graphs = sys.modules["swanref.backends.cupy.graphs"]
    tc = _compiled(torch, torch_newton_schulz, compile_on)
    peak = PeakCupy(cp)
    for batch, m, n in cases:
        for dt in dtypes:
            rec = {"section": "ns", "shape": _shape_str(batch, m, n), "dtype": dt}
            rng = cp.random.default_rng(7 + m + n + batch)
            G = rng.standard_normal((batch, m, n) if batch > 1 else (m, n), dtype=cp.float64)
            G64 = G
            G = G.astype(dt)
            ref = CB.whiten_newton_schulz(G64, 10, 0.5, "gram_fro")

            def public():
                return swanref.whiten(G, "newton_schulz", steps=10, beta=0.5, scaling="gram_fro")
            out = public()
            rec["err"] = _rel(cp, out, ref) if dt != "float64" else None
            rec["ms"] = 1e3 * timer(public)
            rec["deferred_ms"] = 1e3 * timer(_deferred_group(swanref, public)) / DEFERRED_GROUP
            rec["backend_ms"] = 1e3 * timer(lambda: CB.whiten_newton_schulz(G, 10, 0.5,
                                                                             "gram_fro"))
            rec["peak_MB"] = peak(public)[0] / 1e6
            with _graph_replay(CB):
                if graphs.eligible(G):
                    rec["backend_graph_ms"] = 1e3 * timer(lambda: CB.whiten_newton_schulz(
                        G, 10, 0.5, "gram_fro"))
                    rec["public_graph_ms"] = 1e3 * timer(public)
                    rec["graph_cache_MB"] = graphs.cached_bytes() / 1e6
            if torch is not None:
                tG = torch.from_dlpack(G)
                rec["torch_ms"] = 1e3 * timer(lambda: torch_newton_schulz(tG))
                rec["torch_err"] = _rel(cp, _as_cupy(cp, torch, torch_newton_schulz(tG)), ref) \
                    if dt != "float64" else None
                rec["torch_peak_MB"] = _torch_peak(torch, lambda: torch_newton_schulz(tG))[0] / 1e6
                t = _time_optional(timer, (lambda: tc(tG)) if tc is not None else None)
                rec["compile_ms"] = None if t is None else 1e3 * t
            graphs.clear()
            _free(cp, torch)
            rows.append(rec)
            print(json.dumps(rec), flush=True)


def bench_presets(cp, torch, swanref, CB, timer, cases, compile_on, rows):
    p = catalogue.get_preset("muon_ns5")
    coef = catalogue.schedule("muon_ns5", None, None)
    steps = len(coef)
    tc = _compiled(torch, torch_keller, compile_on)
    for batch, m, n in cases:
        for dt in ("bfloat16", "float32"):
            rec = {"section": "presets", "shape": _shape_str(batch, m, n), "dtype": dt}
            rng = cp.random.default_rng(11 + m + n + batch)
            G = rng.standard_normal((batch, m, n) if batch > 1 else (m, n), dtype=cp.float32)
            if torch is None:
                continue
            tG = torch.from_dlpack(G)
            if dt == "bfloat16":
                tG = tG.bfloat16()
                kw = {"emulate": "bfloat16"}
            else:
                kw = {}

            def public():
                return swanref.whiten(tG, "muon_ns5", **kw)
            out = public()
            tref = torch_keller(tG, coef, steps, p.eps)
            o32, t32 = _as_cupy(cp, torch, out), _as_cupy(cp, torch, tref)
            rec["vs_torch_rel"] = _rel(cp, o32, t32)
            rec["vs_torch_equal_frac"] = float(cp.mean(o32 == t32))
            rec["ms"] = 1e3 * timer(public)
            G16 = _as_cupy(cp, torch, tG)
            rec["backend_ms"] = 1e3 * timer(lambda: CB.whiten_polynomial(
                G16, coef, p.norm, p.eps, p.norm_scale, **({"emulate": "bfloat16", "form": p.form}
                                                          if kw else {})))
            with _graph_replay(CB) as graphs:
                if graphs.eligible(G16):
                    rec["public_graph_ms"] = 1e3 * timer(public)
            rec["torch_ms"] = 1e3 * timer(lambda: torch_keller(tG, coef, steps, p.eps))
            rec["torch_peak_MB"] = _torch_peak(torch, lambda: torch_keller(tG, coef, steps,
                                                                          p.eps))[0] / 1e6
            rec["peak_MB"] = PeakCupy(cp)(public)[0] / 1e6
            t = _time_optional(timer, (lambda: tc(tG, coef, steps, p.eps)) if tc else None)
            rec["compile_ms"] = None if t is None else 1e3 * t
            _free(cp, torch)
            rows.append(rec)
            print(json.dumps(rec), flush=True)


def bench_agreement(cp, torch, swanref, rows):
    """GPU native bf16 path against the CPU emulation (swanref.presets) and torch eager."""
    for name in ("muon_ns5", "torch_muon", "polar_express"):
        for shape in ((256, 1024), (2, 128, 512), (512, 192)):
            rng = np.random.default_rng(5)
            G = rng.standard_normal(shape).astype(np.float32)
            Gb = lowprec.round_to(G, "bfloat16")  # a bfloat16 tensor's values
            cpu = catalogue.whiten_preset(Gb, name, emulate="bfloat16")
            gpu = cp.asnumpy(swanref.whiten(cp.asarray(Gb), name, emulate="bfloat16"))
            ulp = float(lowprec.ulp(np.max(np.abs(cpu)), "bfloat16"))
            rec = {"section": "agreement", "preset": name, "shape": "x".join(map(str, shape)),
                   "rel_fro": float(np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu)),
                   "max_ulps": float(np.max(np.abs(gpu - cpu)) / ulp),
                   "equal_frac": float(np.mean(gpu == cpu))}
            rows.append(rec)
            print(json.dumps(rec), flush=True)


def bench_gradnorm(cp, torch, swanref, CB, timer, cases, compile_on, peaks, rows):
    tc = _compiled(torch, torch_grad_norm, compile_on)
    for m, n in cases:
        for dt in ("float32", "bfloat16"):
            itemsize = 4 if dt == "float32" else 2
            nbytes = m * n * itemsize
            copies = max(1, -(-256 * 2**20 // nbytes))
            rng = cp.random.default_rng(3 + m)
            base = rng.standard_normal((m, n), dtype=cp.float32)
            bufs = [base.copy() for _ in range(copies)]
            tbufs = [torch.from_dlpack(b) for b in bufs] if torch is not None else []
            if dt == "bfloat16":
                tbufs = [t.bfloat16() for t in tbufs]
            ring = {"i": 0}

            def rot(fn, seq):
                def call():
                    ring["i"] = (ring["i"] + 1) % len(seq)
                    return fn(seq[ring["i"]])
                return call
            rate = lambda t: 2 * nbytes / t / 1e9  # noqa: E731
            rec = {"section": "gradnorm", "shape": f"{m}x{n}", "dtype": dt}
            if dt == "float32":
                rec["kernel_ms"] = 1e3 * timer(rot(lambda x: CB.grad_norm(x, 0.0), bufs))
                rec["cupy_ms"] = 1e3 * timer(rot(swanref.grad_norm, bufs))
                rec["cupy_nocheck_ms"] = 1e3 * timer(rot(
                    lambda x: swanref.grad_norm(x, check_finite=False), bufs))
            if torch is not None:
                rec["torch_input_ms"] = 1e3 * timer(rot(swanref.grad_norm, tbufs))
                rec["torch_input_deferred_ms"] = 1e3 * timer(_deferred_group(
                    swanref, rot(swanref.grad_norm, tbufs))) / DEFERRED_GROUP
                rec["torch_ms"] = 1e3 * timer(rot(torch_grad_norm, tbufs))
                t = _time_optional(timer, rot(tc, tbufs) if tc is not None else None)
                rec["compile_ms"] = None if t is None else 1e3 * t
            for k in ("kernel_ms", "cupy_ms", "cupy_nocheck_ms", "torch_input_ms",
                      "torch_input_deferred_ms"):
                if rec.get(k):
                    rec[k.replace("_ms", "_pct_copy")] = 100 * rate(rec[k] / 1e3) / peaks["copy_GBps"]
            del bufs, tbufs
            _free(cp, torch)
            rows.append(rec)
            print(json.dumps(rec), flush=True)


def _known_polar(cp, batch, m, n, kappa, seed):
    """G = U diag(s) V^T in float64 with s geometric from 1 to 1/kappa, and U V^T."""
    rng = cp.random.default_rng(seed)
    U = cp.stack([cp.linalg.qr(rng.standard_normal((m, m)))[0] for _ in range(batch)])
    V = cp.stack([cp.linalg.qr(rng.standard_normal((n, m)))[0] for _ in range(batch)])
    s = cp.logspace(0, -math.log10(kappa), m)
    Vt = cp.ascontiguousarray(cp.swapaxes(V, -1, -2))
    return cp.matmul(U * s, Vt), cp.matmul(U, Vt)


def bench_exact(cp, torch, swanref, CB, cases, rows):
    slow = Timer(cp, 1.0, max_reps=3)
    for (batch, m, n), dt in cases:
        rtol = max(m, n) * float(np.finfo(dt).eps)  # the spec's default rank cutoff
        # every singular value at least twice the cutoff: otherwise both sides drop the
        # smallest ones and the error measures the truncation (0.2 at 4096x11008 float32)
        kappa = min(KAPPA, 0.5 / rtol)
        G64, P = _known_polar(cp, batch, m, n, kappa, 17 + m)
        if batch == 1:
            G64, P = G64[0], P[0]
        G = G64.astype(dt)
        rec = {"section": "exact", "shape": _shape_str(batch, m, n), "dtype": dt,
               "kappa": kappa}
        out = swanref.whiten(G, "svd")
        rec["err"] = _rel(cp, out, P)
        rec["ms"] = 1e3 * slow(lambda: swanref.whiten(G, "svd"))
        if torch is not None:
            tG = torch.from_dlpack(G)
            rec["torch_err"] = _rel(cp, _as_cupy(cp, torch, torch_svd_polar(tG, rtol)), P)
            rec["torch_ms"] = 1e3 * slow(lambda: torch_svd_polar(tG, rtol))
            rec["torch_peak_MB"] = _torch_peak(torch, lambda: torch_svd_polar(tG, rtol))[0] / 1e6
        rec["peak_MB"] = PeakCupy(cp)(lambda: swanref.whiten(G, "svd"))[0] / 1e6
        G = G64 = P = None  # noqa: F841 (free before the next case)
        _free(cp, torch)
        rows.append(rec)
        print(json.dumps(rec), flush=True)


# -- report -------------------------------------------------------------------------------------

def _f(v, spec=".3g"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, spec)
    return str(v)


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _vs_torch_cells(r):
    """The cells torch eager | torch.compile | eager / swanref | swanref / compile | goal met of
    a Newton-Schulz row (goal: eager / swanref >= 1 and swanref <= 1.05 x torch.compile)."""
    e, c = _ratio(r.get("torch_ms"), r["ms"]), _ratio(r["ms"], r.get("compile_ms"))
    met = (e is not None and e >= 1) and (c is None or c <= 1.05)
    return (f"{_f(r.get('torch_ms'), '.2f')} | {_f(r.get('compile_ms'), '.2f')} | "
            f"{_f(e, '.2f')} | {_f(c, '.2f')} | {'yes' if met else 'no'}")


def _table(caption, columns, lines):
    """A section: caption, blank line, a markdown table and a blank line; nothing without lines.
    ``columns``: names separated by " | ", a trailing ':' for a right-aligned column."""
    if not lines:
        return []
    names = [c.strip() for c in columns.split(" | ")]
    head = "| " + " | ".join(c.rstrip(":") for c in names) + " |"
    sep = "| " + " | ".join("---:" if c.endswith(":") else "---" for c in names) + " |"
    return [caption, "", head, sep] + [f"| {line} |" for line in lines] + [""]


def _gradnorm_cells(r):
    """Goal: every public call (CuPy and torch input) at the shape's share of the copy ceiling
    and not slower than torch.compile."""
    goal = 80 if r["shape"] == "4096x11008" else 60
    keys = [k for k in ("cupy", "torch_input") if r.get(k + "_pct_copy")]
    met = (bool(keys) and min(r[k + "_pct_copy"] for k in keys) >= goal
           and (r.get("compile_ms") is None or max(r[k + "_ms"] for k in keys) <= r["compile_ms"]))

    def cell(k):
        ms = r.get(k + "_ms")
        pct = r.get(k + "_pct_copy")
        return "-" if ms is None else f"{ms:.3f}" + (f" ({pct:.0f}%)" if pct else "")
    return (f"{r['shape']} | {r['dtype']} | {cell('kernel')} | {cell('cupy')} | "
            f"{cell('cupy_nocheck')} | {cell('torch_input')} | {cell('torch_input_deferred')} | "
            f"{_f(r.get('torch_ms'), '.3f')} | "
            f"{_f(r.get('compile_ms'), '.3f')} | {'yes' if met else 'no'}")


def _exact_cells(r):
    ratio = _ratio(r.get("torch_ms"), r["ms"])
    met = ratio is not None and ratio >= 1 and r["err"] <= 1.1 * r.get("torch_err", 0)
    return (f"{r['shape']} | {r['dtype']} | {_f(r['ms'], '.1f')} | "
            f"{_f(r.get('torch_ms'), '.1f')} | {_f(ratio, '.2f')} | {r['err']:.1e} | "
            f"{_f(r.get('torch_err'), '.1e')} | {'yes' if met else 'no'} | "
            f"{_f(r['peak_MB'], '.0f')} / {_f(r.get('torch_peak_MB'), '.0f')}")


def tables(env, peaks, rows, command):
    L = [f"Command: `{command}`  ",
         f"GPU: {env['gpu']} ({env.get('sm_count')} SMs, {env.get('memory_GiB')} GiB); CUDA "
         f"runtime {env['cuda_runtime']}, driver {env['cuda_driver']}; CuPy {env['cupy']}; "
         f"PyTorch {env['torch']} (CUDA {env['torch_cuda']}); NumPy {env['numpy']}; Python "
         f"{env['python']}; swanref {env.get('swanref')}.  ",
         f"Measured ceilings: device copy {peaks['copy_GBps']:.0f} GB/s (read + write); "
         + ", ".join(f"{k[len('gemm_TFLOPs_'):]} GEMM {v:.1f} TFLOP/s"
                     for k, v in peaks.items() if k.startswith("gemm_")) + ".", ""]
    ns = [r for r in rows if r["section"] == "ns"]
    L += _table("Newton-Schulz, 10 steps, beta 1/2, gram_fro, public `swanref.whiten` (ms). "
                "Goal: eager/swanref >= 1 and swanref <= 1.05 x torch.compile.",
                "shape | dtype | swanref: | backend: | backend, graphs: | public, graphs "
                "(cache MB): | torch eager: | torch.compile: | eager / swanref: | swanref / "
                "compile: | goal met | err swanref / torch: | peak MB swanref / torch eager: | "
                f"public, deferred_checks (per call, {DEFERRED_GROUP} per block):",
                [f"{r['shape']} | {r['dtype']} | {_f(r['ms'], '.2f')} | "
                 f"{_f(r['backend_ms'], '.2f')} | {_f(r.get('backend_graph_ms'), '.2f')} | "
                 f"{_f(r.get('public_graph_ms'), '.2f')} "
                 f"({_f(r.get('graph_cache_MB'), '.0f')}) | {_vs_torch_cells(r)} | "
                 f"{_f(r.get('err'), '.1e')} / {_f(r.get('torch_err'), '.1e')} | "
                 f"{_f(r['peak_MB'], '.0f')} / {_f(r.get('torch_peak_MB'), '.0f')} | "
                 f"{_f(r.get('deferred_ms'), '.2f')}" for r in ns])
    pr = [r for r in rows if r["section"] == "presets"]
    L += _table("muon_ns5 (5 steps) on a torch tensor through the public call (ms); bfloat16 rows: "
                "`emulate='bfloat16'`, native bf16 on the GPU, against Keller Jordan's function on "
                "a bfloat16 tensor. Goal as above.",
                "shape | dtype | swanref: | backend: | public, graphs: | torch eager: | "
                "torch.compile: | eager / swanref: | swanref / compile: | goal met | rel. diff. "
                "vs torch eager (equal entries): | peak MB swanref / torch eager:",
                [f"{r['shape']} | {r['dtype']} | {_f(r['ms'], '.2f')} | "
                 f"{_f(r['backend_ms'], '.2f')} | {_f(r.get('public_graph_ms'), '.2f')} | "
                 f"{_vs_torch_cells(r)} | {_f(r['vs_torch_rel'], '.1e')} "
                 f"({_f(100 * r['vs_torch_equal_frac'], '.0f')}%) | "
                 f"{_f(r['peak_MB'], '.0f')} / {_f(r.get('torch_peak_MB'), '.0f')}" for r in pr])
    ag = [r for r in rows if r["section"] == "agreement"]
    L += _table("GPU native bfloat16 presets against the CPU emulation (swanref.presets, "
                "`emulate='bfloat16'`), same bfloat16 input:",
                "preset | shape | rel. Frobenius diff.: | max diff. (bf16 ulps of the largest "
                "entry): | equal entries:",
                [f"{r['preset']} | {r['shape']} | {r['rel_fro']:.1e} | {r['max_ulps']:.0f} | "
                 f"{100 * r['equal_frac']:.0f}%" for r in ag])
    gn = [r for r in rows if r["section"] == "gradnorm"]
    L += _table("GradNorm (ms; % of the copy ceiling, bytes read + written). Goal: public call "
                ">= 80% at 4096x11008, >= 60% at 2048x2048, and not slower than torch.compile.",
                "shape | dtype | kernel alone: | public, CuPy input: | public, check_finite=False:"
                " | public, torch input: | torch input, deferred_checks (per call, "
                f"{DEFERRED_GROUP} per block): | torch eager: | torch.compile: | goal met",
                [_gradnorm_cells(r) for r in gn])
    ex = [r for r in rows if r["section"] == "exact"]
    L += _table(f"Exact whitening, `swanref.whiten(G, 'svd')` against torch's SVD polar route "
                f"(ms; errors against the known polar factor, condition number {KAPPA:.0e}, or "
                "0.5 / (max(m, n) eps) where the spec's default cutoff would drop singular "
                "values). "
                "Goal: torch / swanref >= 1 at equal or better error.",
                "shape | dtype | swanref: | torch SVD: | torch / swanref: | err swanref: | "
                "err torch: | goal met | peak MB swanref / torch:",
                [_exact_cells(r) for r in ex])
    if ex:
        L.pop()  # the last table ends the text
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="swanref bench --gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="exact,gradnorm,agreement,presets,ns")
    ap.add_argument("--dtypes", default="float32,float64", help="dtypes of the ns section")
    ap.add_argument("--quick", action="store_true", help="a few shapes, short timings")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--target-seconds", type=float, default=None)
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)
    for option, path in (("--markdown", args.markdown), ("--json", args.json)):
        problem = path and output_path_problem(path, option)
        if problem:  # before the run, not a traceback after it
            ap.error(problem)
    try:
        import cupy as cp
    except ImportError:
        print("swanref bench --gpu: CuPy is not installed", file=sys.stderr)
        return 2
    if not CB.available():
        print("swanref bench --gpu: no usable CUDA GPU", file=sys.stderr)
        return 2
    try:
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    except ImportError:
        torch = None
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    target = args.target_seconds or (0.3 if args.quick else 0.6)
    timer = Timer(cp, target)
    command = "python -m swanref.tools.bench_gpu " + " ".join(
        argv if argv is not None else sys.argv[1:])
    env = _environment(cp, torch)
    print(json.dumps(env), flush=True)
    t0 = time.time()
    peaks = _peaks(cp, torch, timer)
    print(json.dumps(peaks), flush=True)
    rows: list = []
    compile_on = not args.no_compile
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]

    def save():
        if args.json:
            with open_output(args.json) as fh:
                json.dump({"env": env, "peaks": peaks, "rows": rows, "command": command}, fh,
                          indent=1)
    try:
        _run_sections(args, sections, cp, torch, swanref, CB, timer, compile_on, dtypes, peaks,
                      rows, save)
    except KeyboardInterrupt:  # `timeout -s INT`: print and store what was measured
        print("interrupted: tables of the rows measured so far", flush=True)
        save()
    text = tables(env, peaks, rows, command)
    print(text)
    print(f"total {time.time() - t0:.0f} s")
    if args.markdown:
        with open_output(args.markdown) as fh:
            fh.write(text + "\n")
    return 0


def _run_sections(args, sections, cp, torch, swanref, CB, timer, compile_on, dtypes, peaks, rows,
                  save):
    for sec in sections:
        ts = time.time()
        try:
            _run_section(args, sec, cp, torch, swanref, CB, timer, compile_on, dtypes, peaks,
                         rows)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken section does not lose the others
            traceback.print_exc()
            print(f"section {sec} failed: {exc!r}", flush=True)
        print(f"section {sec}: {time.time() - ts:.0f} s", flush=True)
        save()


def _run_section(args, sec, cp, torch, swanref, CB, timer, compile_on, dtypes, peaks, rows):
    if sec == "ns":
        bench_ns(cp, torch, swanref, CB, timer, QUICK["ns"] if args.quick else NS_CASES, dtypes,
                 compile_on, rows)
    elif sec == "presets":
        bench_presets(cp, torch, swanref, CB, timer,
                      QUICK["presets"] if args.quick else PRESET_CASES, compile_on, rows)
    elif sec == "agreement":
        bench_agreement(cp, torch, swanref, rows)
    elif sec == "gradnorm":
        bench_gradnorm(cp, torch, swanref, CB, timer, QUICK["gn"] if args.quick else GN_CASES,
                       compile_on, peaks, rows)
    elif sec == "exact":
        bench_exact(cp, torch, swanref, CB, QUICK["exact"] if args.quick else EXACT_CASES, rows)
    else:
        raise ValueError(f"unknown section {sec!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
