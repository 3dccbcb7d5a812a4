"""Sharded-check judging benchmark (issue 25): how long ``swanref check-sharded`` takes to judge
one large case after the ranks have returned, with the references computed by the caller
(NumPy, one process) and by the ranks in parallel (the default from 2^18 entries on; on CUDA
ranks in float64 on the GPU).

    python -m swanref.tools.bench_sharded [--shape 4096x11008] [--world-size 2]
                                          [--preset muon_ns5] [--dtype float32] [--threads 1]

The ranks run a target that returns its shard unchanged; the outputs judged are the faithful
ones (the reference split into blocks), so every property passes and the times are the
judging alone: the inputs, the references, the reduction-order terms and tolerances, and the
comparisons.  BLAS is pinned to ``--threads`` per process (the ranks run in parallel).  Prints
each phase's wall time and the ratio caller / ranks.
"""
from __future__ import annotations

import argparse
import time

from swanref.tools.threads import limit_blas_threads
from swanref.verify import distributed as D


def echo(local, group=None, layout=None):
    """A target that returns its shard (the benchmark judges faithful outputs, not these)."""
    return local.clone()


def run(shape=(4096, 11008), world=2, preset="muon_ns5", dtype="float32", layout="cols",
        out=print) -> dict:
    claim = D.ShardedClaim("whiten", dtype, preset=preset).validate()
    t = {}
    t0 = time.perf_counter()
    cases = D.sharded_inputs(claim, layout, world, shape)
    t["inputs"] = time.perf_counter() - t0
    out(f"inputs ({len(cases)} cases of {shape[0]}x{shape[1]} {dtype}): {t['inputs']:.1f} s")
    with D.RankPool(world, "gloo", timeout_s=600.0) as pool:
        outs, errors, _ = pool.run(f"{__name__}:echo", layout, cases, claim)
        if errors:
            raise RuntimeError(f"ranks failed: {errors}")
        t0 = time.perf_counter()
        packs, rank_secs = pool.references(claim, len(cases))
        t["references on the ranks"] = time.perf_counter() - t0
    out(f"references on {world} ranks in parallel: {t['references on the ranks']:.1f} s "
        f"(slowest rank {rank_secs:.1f} s)")
    refs, svs = [p["ref"] for p in packs], [p["sv"] for p in packs]
    good = [[(b, False, c.dtype_name) for b in D.split(r.astype(c.G.dtype), layout, world)]
            for r, c in zip(refs, cases)]
    t0 = time.perf_counter()
    rep = D.evaluate(claim, layout, world, cases, good, refs=refs, svs=svs)
    t["judged"] = time.perf_counter() - t0
    out(f"judging with the ranks' references: {t['judged']:.1f} s "
        f"({'CONFORMING' if rep.conforming else 'NOT CONFORMING'})")
    t0 = time.perf_counter()
    rep2 = D.evaluate(claim, layout, world, cases, good)
    t["judging on the caller"] = time.perf_counter() - t0
    out(f"judging on the caller (references in this process): "
        f"{t['judging on the caller']:.1f} s "
        f"({'CONFORMING' if rep2.conforming else 'NOT CONFORMING'})")
    ranks_total = t["references on the ranks"] + t["judged"]
    out(f"total after the ranks returned: caller {t['judging on the caller']:.1f} s, "
        f"ranks {ranks_total:.1f} s, ratio {t['judging on the caller'] / ranks_total:.2f}")
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m swanref.tools.bench_sharded",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="4096x11008")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--preset", default="muon_ns5")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--layout", default="cols", choices=("rows", "cols"))
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per process")
    a = p.parse_args(argv)
    m, n = (int(v) for v in a.shape.lower().split("x"))
    limiter = limit_blas_threads(a.threads)     # held for the process's life
    run((m, n), a.world_size, a.preset, a.dtype, a.layout)
    del limiter
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
