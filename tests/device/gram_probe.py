"""Time the pieces of the CuPy backend's Newton-Schulz at small shapes (device probe):
Gram by GEMM vs SYRK, one call's host-side launch time, graph replay vs eager."""
import time

import cupy as cp
import numpy as np

from swanref.backends import cupy as CB
from swanref.backends.cupy import _runtime as rt, blas, graphs


def ev(fn, reps=20):
    fn()
    cp.cuda.Device().synchronize()
    s, e = cp.cuda.Event(), cp.cuda.Event()
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    e.synchronize()
    return cp.cuda.get_elapsed_time(s, e) / reps


for (b, m, n) in [(1, 1024, 4096), (1, 4096, 11008), (8, 1024, 1024)]:
    for dt in (np.float32, np.float64):
        G = cp.random.standard_normal((b, m, n)).astype(dt)
        res = {}
        for mode in ("gemm", "syrk"):
            rt.state["gram"] = mode
            with blas.blas_mode(dt) as h:
                res[mode] = ev(lambda: blas.gram(h, G))
        rt.state["gram"] = "gemm"
        CB.set_graphs(False)
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        for _ in range(5):
            CB.whiten_newton_schulz(G, 10, 0.5, "gram_fro")
        host = (time.perf_counter() - t) / 5 * 1e3  # launch-bound lower limit of host time
        cp.cuda.Device().synchronize()
        eager = ev(lambda: CB.whiten_newton_schulz(G, 10, 0.5, "gram_fro"), 5)
        CB.set_graphs(True)  # opt-in replay
        graphed = ev(lambda: CB.whiten_newton_schulz(G, 10, 0.5, "gram_fro"), 5)
        print(f"{b}x{m}x{n} {np.dtype(dt).name}: gram gemm {res['gemm']:.3f} ms syrk "
              f"{res['syrk']:.3f} ms | NS eager {eager:.2f} ms (host enqueue {host:.2f} ms) "
              f"graph {graphed:.2f} ms | {graphs.stats()} {rt.state.get('graph_error', '')}")
        graphs.clear()
        CB.set_graphs(False)
