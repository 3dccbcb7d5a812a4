"""Host cost of swanref's public call from a torch CUDA tensor (issue 25): cProfile of the public
calls, perf_counter of the pieces (DLPack hops, finite flag, flag read), and bf16 GEMM
bit-identity of torch.matmul vs swanref's GemmEx. A development probe, not a test.

    python tests/device/host_probe.py
"""
from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import cupy as cp
import torch

import swanref
import swanref.backends.arrays
import swanref.spec.validate
from swanref.backends import cupy as CB


def wall(fn, reps=50):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def host_only(fn, reps=50):
    """host time per call, GPU kept busy-free: sync after each call excluded."""
    fn()
    torch.cuda.synchronize()
    tot = 0.0
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        tot += time.perf_counter() - t
    torch.cuda.synchronize()
    return tot / reps * 1e3


def prof(label, fn, rows=30, key="tottime"):
    fn()
    torch.cuda.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats(key).print_stats(rows)
    print(f"\n### {label} (100 calls, sorted by {key})")
    txt = s.getvalue()
    print(txt[txt.find("ncalls") - 1:][:9000])


def main():
    print(torch.__version__, cp.__version__, torch.cuda.get_device_name())
    G = torch.randn(2048, 2048, device="cuda")
    Gb = G.bfloat16()
    Gc = cp.from_dlpack(G)
    items = {
        "grad_norm torch fp32": lambda: swanref.grad_norm(G),
        "grad_norm torch fp32 nocheck": lambda: swanref.grad_norm(G, check_finite=False),
        "grad_norm cupy fp32": lambda: swanref.grad_norm(Gc),
        "grad_norm torch bf16": lambda: swanref.grad_norm(Gb),
        "backend grad_norm": lambda: CB.grad_norm(Gc, 0.0),
        "torch eager": lambda: (G - G.mean(-1, keepdim=True)) / G.std(-1, keepdim=True),
        "cp.from_dlpack": lambda: cp.from_dlpack(G),
        "torch.from_dlpack": lambda: torch.from_dlpack(Gc),
        "finite_flag": lambda: CB.finite_flag(Gc) if hasattr(CB, "finite_flag") else None,
        "all_finite (sync)": lambda: CB.all_finite(Gc) if hasattr(CB, "all_finite") else None,
        "cp.empty_like": lambda: cp.empty_like(Gc),
        "torch.empty_like": lambda: torch.empty_like(G),
        "raw wrap torch->cupy": lambda: cp.ndarray(tuple(G.shape), cp.float32, cp.cuda.MemoryPointer(
            cp.cuda.UnownedMemory(G.data_ptr(), G.numel() * 4, G), 0),
            strides=tuple(4 * s for s in G.stride())),
        "torch.as_tensor(cai)": lambda: torch.as_tensor(Gc, device="cuda"),
        "torch current_stream": lambda: torch.cuda.current_stream(),
        "torch current_stream ptr": lambda: torch.cuda.current_stream().cuda_stream,
        "cp current_stream": lambda: cp.cuda.get_current_stream(),
        "flag.get()": lambda: cp.zeros(1, cp.int32).get(),
        "as_matrix_stack": lambda: swanref.spec.validate.as_matrix_stack(Gc),
        "to_backend torch": lambda: swanref.backends.arrays.to_backend(G, None),
    }
    for k, f in items.items():
        if "--ab" in sys.argv and k not in ("grad_norm torch fp32", "grad_norm cupy fp32",
                                            "grad_norm torch bf16", "torch eager"):
            continue
        print(f"{k:32s} wall {wall(f):.4f} ms  host {host_only(f):.4f} ms")
    from swanref.backends import arrays as A
    from swanref.backends.cupy import interop as I
    X = torch.randn(1024, 4096, device="cuda").bfloat16()
    mu = lambda: swanref.whiten(X, "muon_ns5", emulate="bfloat16")  # noqa: E731
    W = cp.from_dlpack(X.view(torch.int16)).view(cp.uint16).reshape(1, 1024, 4096)

    def old_flag():
        return bool(~cp.any(cp.bitwise_and(W, 0x7F80) == 0x7F80))

    def old_shift():
        bits = I.per_matrix(cp.max, cp.bitwise_and(W, 0x7FFF)).astype(cp.uint32)
        amax = cp.left_shift(bits, 16).view(cp.float32)
        amax = cp.where(cp.isfinite(amax), amax, 0)
        _, e = cp.frexp(amax)
        return cp.where(e > 60, e - 48, 0).astype(cp.int32)
    import swanref.ops as ops
    new_masked = ops._Bfloat16Call.masked

    def sync_first(self, arr, *a, **k):  # the previous code: flag read before the launches
        if not self.be.bfloat16_all_finite(arr):
            raise ops._Widen()
        return new_masked(self, arr, *a, **k)
    for on in (False, True, False, True):
        ops._Bfloat16Call.masked = new_masked if on else sync_first
        print(f"  muon bf16 flag read at end={on!s:5s} wall {wall(mu):.4f} host {host_only(mu):.4f} ms")
    ops._Bfloat16Call.masked = new_masked
    print("A/B in one run (fast = capsule exchange on default streams):")
    for label, f in (("grad_norm torch fp32", items["grad_norm torch fp32"]),
                     ("grad_norm torch bf16", items["grad_norm torch bf16"]),
                     ("muon bf16 1024x4096", mu)):
        for on in (False, True, False, True):
            A._fast["on"] = on
            print(f"  {label:24s} fast={on!s:5s} wall {wall(f):.4f} host {host_only(f):.4f} ms")
    A._fast["on"] = True
    for label, f in (("old bf16 all_finite", old_flag), ("new bf16 all_finite", lambda: I.bfloat16_all_finite(W)),
                     ("old bf16 shift", old_shift), ("new bf16 shift", lambda: I.huge_shift_bfloat16(W))):
        print(f"  {label:24s} wall {wall(f):.4f} host {host_only(f):.4f} ms")
    # bf16 matmul: torch vs GemmEx words, bit identity and time
    from swanref.backends.cupy import blas
    for m, n in ((1024, 4096), (4096, 4096)):
        T = torch.randn(m, n, device="cuda").bfloat16()
        S = T @ T.mT
        Aw = cp.from_dlpack(T.view(torch.int16)).view(cp.uint16).reshape(1, m, n)
        Sw = cp.empty((1, m, m), cp.uint16)
        with blas.blas_mode(cp.float32, lowprec=True) as h:
            blas.gemm_lp(h, "bfloat16", Aw, Aw, Sw, transb=True)
            t_sw = wall(lambda: blas.gemm_lp(h, "bfloat16", Aw, Aw, Sw, transb=True))
        St = torch.from_dlpack(Sw.view(cp.int16)).view(torch.bfloat16).reshape(m, m)
        print(f"{m}x{n} XX^T equal {bool((St == S).all())} swanref gemm {t_sw:.3f} torch {wall(lambda: T @ T.mT):.3f}")
    if "--ab" in sys.argv:
        return
    prof("grad_norm torch fp32", items["grad_norm torch fp32"])
    prof("grad_norm torch fp32 cumulative", items["grad_norm torch fp32"], rows=40, key="cumulative")
    prof("grad_norm torch bf16 cumulative", items["grad_norm torch bf16"], rows=40, key="cumulative")
    print(f"muon bf16 public wall {wall(mu):.3f} host {host_only(mu):.3f}")
    prof("muon bf16 cumulative", mu, rows=45, key="cumulative")
    prof("muon bf16 tottime", mu, rows=25)


if __name__ == "__main__":
    main()
