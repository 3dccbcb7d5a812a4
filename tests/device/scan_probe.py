"""The bfloat16-word scan kernels (interop._bf16_scan) against the elementwise route they
replace, in one run, alternated (issue 25): the checks alone and the public muon_ns5 call from a
torch bfloat16 tensor, wall time (50 back-to-back calls, then a sync) and host time per call,
plus bitwise equality of the results. A development probe, not a test.

    python tests/device/scan_probe.py
"""
from __future__ import annotations

import cProfile
import io
import pstats
import time

import cupy as cp
import torch

import swanref
from swanref.backends.cupy import _runtime as rt
from swanref.backends.cupy import interop as I


def wall(fn, reps=50):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def host(fn, reps=50):
    fn()
    tot = 0.0
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        tot += time.perf_counter() - t
    torch.cuda.synchronize()
    return tot / reps * 1e3


def keller(G, steps=5, eps=1e-7):
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X


def main():
    print(torch.__version__, cp.__version__, torch.cuda.get_device_name(), flush=True)
    for shape in ((1024, 4096), (8, 512, 2048)):
        X = torch.randn(*shape, device="cuda").bfloat16()
        W = cp.from_dlpack(X.view(torch.int16)).view(cp.uint16).reshape((-1,) + shape[-2:])

        def checks():
            I.bfloat16_finite_flag(W)
            return I.huge_shift_bfloat16(W)

        def mu():
            return swanref.whiten(X, "muon_ns5", emulate="bfloat16")
        outs = {}
        for on in (False, True, False, True):
            rt.state["bf16_scan"] = on
            outs[on] = mu()
            print(f"{'x'.join(map(str, shape)):11s} scan={on!s:5s} checks wall {wall(checks):.4f} "
                  f"host {host(checks):.4f} ms | muon_ns5 public wall {wall(mu):.4f} "
                  f"host {host(mu):.4f} ms", flush=True)
        print(f"  torch eager keller wall {wall(lambda: keller(X)):.4f} ms; outputs scan on/off "
              f"bitwise equal: {torch.equal(outs[True].view(torch.int16), outs[False].view(torch.int16))}; "
              f"error state: {rt.state.get('bf16_scan_error')}", flush=True)
    rt.state["bf16_scan"] = True
    X = torch.randn(1024, 4096, device="cuda").bfloat16()
    mu = lambda: swanref.whiten(X, "muon_ns5", emulate="bfloat16")  # noqa: E731
    mu()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(100):
        mu()
    torch.cuda.synchronize()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
    txt = s.getvalue()
    print("muon_ns5 bf16 1024x4096, 100 public calls, by tottime\n" + txt[txt.find("ncalls") - 1:][:6000])


if __name__ == "__main__":
    main()
