"""GPU benchmark (issue 5): swanref's CuPy backend next to plain PyTorch eager, in one process.

    python -m swanref.tools.bench_gpu [--quick] [--markdown FILE] [--json FILE] [--tf32]
    swanref bench --gpu ...            (the CLI forwards here)

For each shape (square 2048/4096/8192 and 4096x11008 by default) and dtype (float32, float64):

* Newton-Schulz (spec 3.3, 10 steps, beta 1/2, gram_fro): swanref's backend function and the
  public ``swanref.whiten`` (adds the divergence guard), next to the same algorithm transcribed
  into PyTorch eager (the reference's lines with torch ops), at the same precision, TF32 off in
  both. TFLOP/s are the flops each one executes (swanref skips the two products with Z0 = I and
  forms the Gram matrix with SYRK; the torch transcription does every product), against the
  measured cuBLAS GEMM peak of that dtype (8192^3 product, the best of swanref's cuBLAS call and
  torch.matmul).
* Exact whitening: swanref ``whiten_eigh`` (cuSOLVER syevd on G G^T) and ``whiten_svd``
  (cuSOLVER gesvd), next to ``torch.linalg.eigh`` / ``torch.linalg.svd`` routes.
* GradNorm: the fused kernel's bandwidth (bytes read + written over time) against a measured
  device-to-device copy, and PyTorch eager's ``(x - mean) / std`` for context.
* Errors: relative Frobenius error of every float32 result against the same computation in
  float64 (Newton-Schulz: the same iteration in float64; exact routes: the float64 eigh polar
  factor); float64 rows report the agreement with the other implementation.

Times are medians of CUDA-event timings after a warm-up (slow routes: a warm-up on a small
matrix and one timed run). Everything printed is also written with ``--markdown``/``--json``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

import numpy as np

DEFAULT_SHAPES = [(2048, 2048), (4096, 4096), (8192, 8192), (4096, 11008)]
QUICK_SHAPES = [(1024, 1024), (1024, 2752)]


def _parse_shapes(text):
    out = []
    for part in text.split(","):
        m, n = part.lower().split("x")
        out.append((int(m), int(n)))
    return out


class Timer:
    def __init__(self, cp, target_s: float, max_reps: int = 15):
        self.cp = cp
        self.target = target_s
        self.max_reps = max_reps

    def __call__(self, fn, warmup: int = 1):
        """(median seconds per call, number of timed samples).

        Calls shorter than 1 ms are timed in back-to-back groups (launches overlap the previous
        call's GPU work, as in a training step) and divided by the group size.
        """
        cp = self.cp
        for _ in range(warmup):
            fn()
        cp.cuda.Device().synchronize()
        inner = 1
        if warmup:
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            once = cp.cuda.get_elapsed_time(start, stop) / 1e3
            if once < 1e-3:
                inner = int(min(200, max(1, math.ceil(2e-3 / max(once, 1e-6)))))
        times = []
        while True:
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3 / inner)
            total = sum(times) * inner
            if len(times) >= self.max_reps or total >= self.target and len(times) >= 3:
                break
            if total >= self.target and times[0] > self.target / 2:
                break  # slow route: one or two runs are all the budget allows
        return statistics.median(times), len(times)


def _rel(cp, a, b):
    a = a.astype(cp.float64)
    b = b.astype(cp.float64)
    nb = float(cp.linalg.norm(b))
    return float(cp.linalg.norm(a - b)) / nb if nb > 0 else float(cp.linalg.norm(a - b))


# -- PyTorch eager transcriptions of the reference ------------------------------------------------

def _torch_pow2(torch, G):
    amax = G.abs().amax(dim=(-2, -1), keepdim=True)
    _, e = torch.frexp(amax)
    return torch.ldexp(G, -e)


def torch_newton_schulz(torch, G, steps=10, beta=0.5):
    Gs = _torch_pow2(torch, G)
    A = Gs @ Gs.mT
    c = torch.sqrt((A * A).sum(dim=(-2, -1), keepdim=True))
    c = torch.where(c > 0, c, torch.ones_like(c))
    m = G.shape[-2]
    eye = torch.eye(m, dtype=G.dtype, device=G.device)
    Y = A / c
    Z = eye.clone()
    for _ in range(steps):
        T = 3 * eye - Z @ Y
        Y, Z = beta * (Y @ T), beta * (T @ Z)
    return Z @ Gs / torch.sqrt(c)


def torch_svd_route(torch, G, rtol):
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = S > rtol * S[..., :1]
    return (U * keep[..., None, :].to(U.dtype)) @ Vh


def torch_eigh_route(torch, G, rtol):
    Gs = _torch_pow2(torch, G)
    lam, Q = torch.linalg.eigh(Gs @ Gs.mT)
    keep = lam > rtol * lam[..., -1:]
    inv = torch.where(keep, 1 / torch.sqrt(torch.where(keep, lam, torch.ones_like(lam))),
                      torch.zeros_like(lam))
    return ((Q * inv[..., None, :]) @ Q.mT) @ Gs


def torch_grad_norm(torch, G):
    mu = G.mean(dim=-1, keepdim=True)
    c = G - mu
    return c / torch.sqrt((c * c).mean(dim=-1, keepdim=True))


def ns_flops_plain(m, n, steps):
    return float(2 * m * m * n + steps * 3 * 2 * m ** 3 + 2 * m * m * n)


# -- the benchmark --------------------------------------------------------------------------------

def _environment(cp, torch):
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    name = dev["name"].decode() if isinstance(dev["name"], bytes) else str(dev["name"])
    env = {
        "gpu": name,
        "sm_count": dev.get("multiProcessorCount"),
        "memory_GiB": round(dev.get("totalGlobalMem", 0) / 2**30, 1),
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cp.cuda.runtime.driverGetVersion(),
        "cupy": cp.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None),
        "torch_cuda": getattr(getattr(torch, "version", None), "cuda", None),
    }
    try:
        env["cublas"] = cp.cuda.cublas.getVersion(cp.cuda.device.get_cublas_handle())
    except Exception:
        pass
    return env


def _peaks(cp, torch, CB, timer, quick):
    peaks = {}
    nbytes = (256 if quick else 1024) * 2**20
    a = cp.random.standard_normal(nbytes // 4, dtype=cp.float32)
    b = cp.empty_like(a)
    t, _ = timer(lambda: cp.copyto(b, a))
    bw = 2 * nbytes / t
    if torch is not None:
        ta, tb = torch.from_dlpack(a), torch.from_dlpack(b)
        t2, _ = timer(lambda: tb.copy_(ta))
        bw = max(bw, 2 * nbytes / t2)
    peaks["copy_GBps"] = bw / 1e9
    del a, b
    size = 4096 if quick else 8192
    for dt in ("float32", "float64"):
        x = cp.random.standard_normal((1, size, size)).astype(dt)
        y = cp.random.standard_normal((1, size, size)).astype(dt)
        out = cp.empty_like(x)
        with CB._blas_mode(x.dtype) as handle:
            t, _ = timer(lambda: CB._gemm(handle, x, y, out))
        best = 2 * size ** 3 / t
        peaks[f"gemm_swanref_TFLOPs_{dt}"] = best / 1e12
        if torch is not None:
            tx, ty = torch.from_dlpack(x[0]), torch.from_dlpack(y[0])
            t2, _ = timer(lambda: tx @ ty)
            peaks[f"gemm_torch_TFLOPs_{dt}"] = 2 * size ** 3 / t2 / 1e12
            best = max(best, 2 * size ** 3 / t2)
        t3, _ = timer(lambda: cp.matmul(x[0], y[0]))
        peaks[f"gemm_cupy_matmul_TFLOPs_{dt}"] = 2 * size ** 3 / t3 / 1e12
        peaks[f"gemm_TFLOPs_{dt}"] = best / 1e12
        del x, y, out
    cp.get_default_memory_pool().free_all_blocks()
    return peaks


def _free(cp, torch):
    cp.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()


def run_case(cp, torch, CB, swanref, timer, m, n, dtype, steps, peaks, do_svd, do_tf32):
    rec = {"shape": f"{m}x{n}", "m": m, "n": n, "dtype": dtype}
    rng = cp.random.default_rng(1234 + m + n)
    G = rng.standard_normal((m, n), dtype=cp.float64).astype(dtype)
    Gup = G.astype(cp.float64)  # the same values, exactly, in float64
    itemsize = np.dtype(dtype).itemsize
    rtol = max(m, n) * float(np.finfo(dtype).eps)
    tG = torch.from_dlpack(G) if torch is not None else None

    def timed(fn, warmup=1):
        box = {}

        def call():
            box["out"] = fn()
        t, reps = timer(call, warmup=warmup)
        return t, reps, box.pop("out")

    def as_cupy(x):
        return x if isinstance(x, cp.ndarray) else cp.from_dlpack(x)

    # GradNorm: rotate over enough input copies that they cannot all sit in the 50 MB L2, and
    # time the default kernel first and last (the spread of the two is the measurement noise)
    nbytes = m * n * itemsize
    bufs = [G] + [G.copy() for _ in range(max(0, -(-256 * 2**20 // nbytes) - 1))]
    ring = {"i": 0}

    def rotating(**knobs):
        def call():
            ring["i"] = (ring["i"] + 1) % len(bufs)
            return CB.grad_norm(bufs[ring["i"]], 0.0, **knobs)
        return call

    gn_timer = Timer(cp, timer.target, max_reps=50)

    def gn_rate(**knobs):
        t, _ = gn_timer(rotating(**knobs))
        return t, 2 * nbytes / t / 1e9

    t, rec["gn_GBps"] = gn_rate()
    rec["gn_ms"] = t * 1e3
    rec["gn_err"] = _rel(cp, CB.grad_norm(G, 0.0), CB.grad_norm(Gup, 0.0))
    rec["gn_l2_GBps"] = gn_rate(work_in_shared=False)[1]
    for label, knobs in [("scalar", dict(vector=False)), ("t128", dict(threads=128)),
                         ("t192", dict(threads=192)), ("t384", dict(threads=384)),
                         ("t512", dict(threads=512))]:
        rec[f"gn_{label}_GBps"] = gn_rate(**knobs)[1]
    rec["gn_repeat_GBps"] = gn_rate()[1]
    rec["gn_pct_copy"] = 100 * rec["gn_GBps"] / peaks["copy_GBps"]
    rec["gn_repeat_pct_copy"] = 100 * rec["gn_repeat_GBps"] / peaks["copy_GBps"]
    if torch is not None:
        t, _, _ = timed(lambda: torch_grad_norm(torch, tG))
        rec["gn_torch_ms"] = t * 1e3
    del bufs

    # Newton-Schulz
    peak = peaks[f"gemm_TFLOPs_{dtype}"]
    ns64 = CB.whiten_newton_schulz(Gup, steps, 0.5, "gram_fro")
    t, reps, out = timed(lambda: CB.whiten_newton_schulz(G, steps, 0.5, "gram_fro"))
    rec["ns_ms"], rec["ns_reps"] = t * 1e3, reps
    rec["ns_TFLOPs"] = CB.newton_schulz_flops(m, n, steps) / t / 1e12
    rec["ns_pct_peak"] = 100 * rec["ns_TFLOPs"] / peak
    rec["ns_eff_TFLOPs"] = ns_flops_plain(m, n, steps) / t / 1e12
    rec["ns_err"] = _rel(cp, out, ns64)
    del out
    t, _, out = timed(lambda: swanref.whiten(G, "newton_schulz", backend="cupy"))
    rec["ns_api_ms"] = t * 1e3
    del out
    if torch is not None:
        t, reps, out = timed(lambda: torch_newton_schulz(torch, tG, steps))
        rec["ns_torch_ms"] = t * 1e3
        rec["ns_torch_TFLOPs"] = ns_flops_plain(m, n, steps) / t / 1e12
        rec["ns_torch_pct_peak"] = 100 * rec["ns_torch_TFLOPs"] / peak
        rec["ns_speedup_vs_torch"] = rec["ns_torch_ms"] / rec["ns_ms"]
        rec["ns_torch_err"] = _rel(cp, as_cupy(out), ns64)
        del out
    if do_tf32 and dtype == "float32":
        with CB.tf32(True):
            t, _, out = timed(lambda: CB.whiten_newton_schulz(G, steps, 0.5, "gram_fro"))
        rec["ns_tf32_ms"] = t * 1e3
        rec["ns_tf32_err"] = _rel(cp, out, ns64)
        del out
    _free(cp, torch)

    # exact whitening: the float64 eigh polar factor is the reference
    exact64 = CB.whiten_eigh(Gup, max(m, n) * float(np.finfo(np.float64).eps))
    rec["ns64_vs_polar"] = _rel(cp, ns64, exact64)
    del ns64
    t, reps, out = timed(lambda: CB.whiten_eigh(G, rtol))
    rec["eigh_ms"], rec["eigh_reps"] = t * 1e3, reps
    rec["eigh_err"] = _rel(cp, out, exact64)
    del out
    if torch is not None:
        t, _, out = timed(lambda: torch_eigh_route(torch, tG, rtol))
        rec["eigh_torch_ms"] = t * 1e3
        rec["eigh_torch_err"] = _rel(cp, as_cupy(out), exact64)
        del out
    _free(cp, torch)
    if do_svd:
        t, reps, out = timed(lambda: CB.whiten_svd(G, rtol), warmup=0)
        rec["svd_ms"], rec["svd_reps"] = t * 1e3, reps
        rec["svd_err"] = _rel(cp, out, exact64)
        del out
        if torch is not None:
            t, _, out = timed(lambda: torch_svd_route(torch, tG, rtol), warmup=0)
            rec["svd_torch_ms"] = t * 1e3
            rec["svd_torch_err"] = _rel(cp, as_cupy(out), exact64)
            del out
    del exact64
    _free(cp, torch)
    return rec


def _fmt(v, spec=".3g"):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return format(v, spec)
    return str(v)


def tables(env, peaks, records, command, steps):
    L = []
    L.append(f"Command: `{command}`  ")
    L.append(f"GPU: {env['gpu']} ({env.get('sm_count')} SMs, {env.get('memory_GiB')} GiB); "
             f"CUDA runtime {env['cuda_runtime']}, driver {env['cuda_driver']}; CuPy "
             f"{env['cupy']}; PyTorch {env['torch']} (CUDA {env['torch_cuda']}); NumPy "
             f"{env['numpy']}; Python {env['python']}.  ")
    L.append(f"Measured peaks: device copy {peaks['copy_GBps']:.0f} GB/s (read + write); "
             f"cuBLAS GEMM {peaks['gemm_TFLOPs_float32']:.1f} TFLOP/s float32 (TF32 off), "
             f"{peaks['gemm_TFLOPs_float64']:.1f} TFLOP/s float64.")
    L.append("")
    L.append(f"Newton-Schulz, {steps} steps, beta 1/2, gram_fro (times in ms; TF32 off):")
    L.append("")
    L.append("| shape | dtype | swanref | TFLOP/s (% peak) | public API | torch eager | "
             "TFLOP/s (% peak) | torch / swanref | err swanref | err torch | f64 NS vs polar |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in records:
        L.append(
            f"| {r['shape']} | {r['dtype']} | {_fmt(r.get('ns_ms'), '.1f')} | "
            f"{_fmt(r.get('ns_TFLOPs'), '.1f')} ({_fmt(r.get('ns_pct_peak'), '.0f')}%) | "
            f"{_fmt(r.get('ns_api_ms'), '.1f')} | {_fmt(r.get('ns_torch_ms'), '.1f')} | "
            f"{_fmt(r.get('ns_torch_TFLOPs'), '.1f')} ({_fmt(r.get('ns_torch_pct_peak'), '.0f')}%) | "
            f"{_fmt(r.get('ns_speedup_vs_torch'), '.2f')} | {_fmt(r.get('ns_err'), '.1e')} | "
            f"{_fmt(r.get('ns_torch_err'), '.1e')} | {_fmt(r.get('ns64_vs_polar'), '.1e')} |")
    if any("ns_tf32_ms" in r for r in records):
        L.append("")
        L.append("Newton-Schulz float32 with TF32 opted in (`swanref.backends.cupy.set_tf32(True)`):")
        L.append("")
        L.append("| shape | ms | err vs float64 |")
        L.append("| --- | ---: | ---: |")
        for r in records:
            if "ns_tf32_ms" in r:
                L.append(f"| {r['shape']} | {r['ns_tf32_ms']:.1f} | {r['ns_tf32_err']:.1e} |")
    L.append("")
    L.append("Exact whitening (times in ms; error vs the float64 eigh polar factor):")
    L.append("")
    L.append("| shape | dtype | swanref eigh | torch eigh route | swanref svd | torch svd route | "
             "err eigh (swanref / torch) | err svd (swanref / torch) |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in records:
        L.append(
            f"| {r['shape']} | {r['dtype']} | {_fmt(r.get('eigh_ms'), '.1f')} | "
            f"{_fmt(r.get('eigh_torch_ms'), '.1f')} | {_fmt(r.get('svd_ms'), '.0f')} | "
            f"{_fmt(r.get('svd_torch_ms'), '.0f')} | {_fmt(r.get('eigh_err'), '.1e')} / "
            f"{_fmt(r.get('eigh_torch_err'), '.1e')} | {_fmt(r.get('svd_err'), '.1e')} / "
            f"{_fmt(r.get('svd_torch_err'), '.1e')} |")
    L.append("")
    L.append("GradNorm (fused kernel; GB/s counts each input byte read once and each output "
             "byte written once):")
    L.append("")
    L.append("| shape | dtype | swanref ms | GB/s | % of copy | again at the end: GB/s (%) | "
             "torch eager ms | err vs float64 |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in records:
        L.append(
            f"| {r['shape']} | {r['dtype']} | {_fmt(r.get('gn_ms'), '.3f')} | "
            f"{_fmt(r.get('gn_GBps'), '.0f')} | {_fmt(r.get('gn_pct_copy'), '.0f')}% | "
            f"{_fmt(r.get('gn_repeat_GBps'), '.0f')} ({_fmt(r.get('gn_repeat_pct_copy'), '.0f')}%) | "
            f"{_fmt(r.get('gn_torch_ms'), '.3f')} | {_fmt(r.get('gn_err'), '.1e')} |")
    L.append("")
    L.append("GradNorm kernel variants, GB/s (default: 256 threads per row, fewer for rows "
             "under 4096 entries, more where under 768 threads would be resident per SM; "
             "16-byte vector accesses; row held in shared memory):")
    L.append("")
    L.append("| shape | dtype | default | scalar accesses | 128 threads | 192 threads | "
             "384 threads | 512 threads | row kept in output |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in records:
        L.append(f"| {r['shape']} | {r['dtype']} | {_fmt(r.get('gn_GBps'), '.0f')} | "
                 f"{_fmt(r.get('gn_scalar_GBps'), '.0f')} | {_fmt(r.get('gn_t128_GBps'), '.0f')} | "
                 f"{_fmt(r.get('gn_t192_GBps'), '.0f')} | {_fmt(r.get('gn_t384_GBps'), '.0f')} | "
                 f"{_fmt(r.get('gn_t512_GBps'), '.0f')} | {_fmt(r.get('gn_l2_GBps'), '.0f')} |")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="swanref bench --gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, short timings")
    ap.add_argument("--shapes", help="comma list like 2048x2048,4096x11008")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--svd-max", type=int, default=4096,
                    help="time the SVD routes only when max(m, n) <= this (they take seconds)")
    ap.add_argument("--target-seconds", type=float, default=None,
                    help="timing budget per measurement (default 1.0, --quick 0.2)")
    ap.add_argument("--tf32", action="store_true", help="also time float32 NS with TF32")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)

    try:
        import cupy as cp
    except ImportError:
        print("swanref bench --gpu: CuPy is not installed", file=sys.stderr)
        return 2
    import swanref
    from swanref.backends import cupy as CB
    if not CB.available():
        print("swanref bench --gpu: no usable CUDA GPU", file=sys.stderr)
        return 2
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")
        except ImportError:
            torch = None

    shapes = (_parse_shapes(args.shapes) if args.shapes
              else QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    target = args.target_seconds or (0.2 if args.quick else 1.0)
    timer = Timer(cp, target)
    command = "python -m swanref.tools.bench_gpu " + " ".join(argv if argv is not None else sys.argv[1:])

    env = _environment(cp, torch)
    print(json.dumps(env), flush=True)
    t0 = time.time()
    # warm-up: compile the kernels, create the cuBLAS/cuSOLVER handles, on a small matrix
    w = cp.random.standard_normal((256, 512))
    for dt in dtypes:
        x = w.astype(dt)
        CB.grad_norm(x, 0.0), CB.whiten_newton_schulz(x, 2, 0.5, "gram_fro")
        CB.whiten_eigh(x, 1e-6), CB.whiten_svd(x, 1e-6)
        if torch is not None:
            tx = torch.from_dlpack(x)
            torch_newton_schulz(torch, tx, 2), torch_eigh_route(torch, tx, 1e-6)
            torch_svd_route(torch, tx, 1e-6)
    peaks = _peaks(cp, torch, CB, timer, args.quick)
    print(json.dumps(peaks), flush=True)

    records = []
    for m, n in shapes:
        for dt in dtypes:
            t1 = time.time()
            rec = run_case(cp, torch, CB, swanref, timer, m, n, dt, args.steps, peaks,
                           do_svd=max(m, n) <= args.svd_max, do_tf32=args.tf32)
            rec["wall_s"] = time.time() - t1
            records.append(rec)
            print(json.dumps(rec), flush=True)
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump({"env": env, "peaks": peaks, "records": records}, fh, indent=1)
    text = tables(env, peaks, records, command, args.steps)
    print(text)
    print(f"total {time.time() - t0:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
