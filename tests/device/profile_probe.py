"""Where the GPU time goes: kernel tables (torch.profiler sees CuPy's kernels too) and host
profiles of swanref's public calls next to PyTorch's, and cuBLAS GemmEx math modes for bf16.

    python tests/device/profile_probe.py > profile.txt

A development probe for docs/performance_gpu.md (not a test, not the bench).
"""
from __future__ import annotations

import cProfile
import io
import pstats
import time

import cupy as cp
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import swanref
from swanref.backends import cupy as CB
from swanref.backends.cupy import blas
from swanref.tools.bench_gpu import torch_keller, torch_newton_schulz

MUON = [(3.4445, -4.7750, 2.0315)] * 5


def wall(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def kernels(label, fn, rows=12):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    print(f"\n### {label}: {wall(fn):.3f} ms wall per call")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows,
                                    max_name_column_width=70))


def host(label, fn, rows=18):
    fn()
    torch.cuda.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(rows)
    print(f"\n### host profile, {label} (20 calls)")
    print(s.getvalue()[-6000:])


def gemm_modes():
    print("\n### bf16 GemmEx X X^T, B X: math modes (ms) vs torch.matmul")
    for m, n in ((4096, 11008), (1024, 4096)):
        X = torch.randn(m, n, device="cuda").bfloat16()
        Xw = cp.from_dlpack(X.view(torch.int16)).view(cp.uint16)
        A = cp.empty((1, m, m), cp.uint16)
        Xn = cp.empty((1, m, n), cp.uint16)
        B = cp.empty((1, m, m), cp.uint16)
        B[...] = 0
        X3 = Xw.reshape(1, m, n)
        cb = blas.cublas()
        h = cp.cuda.device.get_cublas_handle()
        for mode in (0, 16):
            cb.setMathMode(h, mode)
            t1 = wall(lambda: blas.gemm_lp(h, "bfloat16", X3, X3, A, transb=True))
            t2 = wall(lambda: blas.gemm_lp(h, "bfloat16", B, X3, Xn, beta=1.0))
            print(f"{m}x{n} mode {mode}: XX^T {t1:.3f}  BX {t2:.3f}")
        cb.setMathMode(h, 0)
        Bt = torch.zeros(m, m, device="cuda").bfloat16()
        print(f"{m}x{n} torch: XX^T {wall(lambda: X @ X.mT):.3f}  BX {wall(lambda: Bt @ X):.3f}"
              f"  addmm {wall(lambda: torch.addmm(X, Bt, X, beta=-4.7, alpha=2.0)):.3f}")
        print("torch allow_bf16_reduced_precision_reduction =",
              torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)


def main():
    print(torch.__version__, cp.__version__, torch.cuda.get_device_name())
    gemm_modes()
    for shape in ((1024, 4096), (4096, 11008)):
        G = torch.randn(*shape, device="cuda")
        Gb = G.bfloat16()
        Gc = cp.from_dlpack(G)
        kernels(f"swanref muon_ns5 fp32 {shape} (public, cupy input)",
                lambda: swanref.whiten(Gc, "muon_ns5"))
        kernels(f"torch keller fp32 {shape}", lambda: torch_keller(G, MUON, 5, 1e-7))
        kernels(f"swanref muon_ns5 bf16 {shape} (public, torch input)",
                lambda: swanref.whiten(Gb, "muon_ns5", emulate="bfloat16"))
        kernels(f"torch keller bf16 {shape}", lambda: torch_keller(Gb, MUON, 5, 1e-7))
    for shape in ((8, 512, 2048), (1024, 4096)):
        G = cp.random.default_rng(1).standard_normal(shape, dtype=cp.float32)
        tG = torch.from_dlpack(G)
        pub = lambda: swanref.whiten(G, "newton_schulz", steps=10, beta=0.5, scaling="gram_fro")  # noqa: E731
        kernels(f"swanref NS10 public {shape}", pub)
        kernels(f"swanref NS10 backend {shape}",
                lambda: CB.whiten_newton_schulz(G, 10, 0.5, "gram_fro"))
        kernels(f"torch NS10 {shape}", lambda: torch_newton_schulz(tG))
        host(f"swanref NS10 public {shape}", pub)
    for shape in ((2048, 2048), (4096, 11008)):
        G = cp.random.default_rng(2).standard_normal(shape, dtype=cp.float32)
        tG = torch.from_dlpack(G)
        print(f"\n### grad_norm {shape}: public cupy {wall(lambda: swanref.grad_norm(G)):.3f}, "
              f"check_finite=False {wall(lambda: swanref.grad_norm(G, check_finite=False)):.3f},"
              f" public torch {wall(lambda: swanref.grad_norm(tG)):.3f}, "
              f"backend {wall(lambda: CB.grad_norm(G, 0.0)):.3f} ms")
        host(f"grad_norm public torch {shape}", lambda: swanref.grad_norm(tG), rows=14)
        kernels(f"grad_norm public torch bf16 {shape}",
                lambda: swanref.grad_norm(tG.bfloat16()), rows=8)
    np.random.seed(0)


if __name__ == "__main__":
    main()
