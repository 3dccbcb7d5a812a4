"""Sharded check on several GPUs (one process per GPU, NCCL): verdicts and wall time.

Runs swanref's sharded check (swanref.verify.distributed) over the faithful and the deliberately
wrong sharded implementations of tests/sharded_impls at sizes a CPU run cannot reach, and times
each check next to one GPU running the same operator on the whole matrix.  Usage (on a machine
with >= 2 GPUs; gloo and small shapes work on a CPU for a dry run):

    python tests/device/sharded_multi_gpu.py --backend nccl --world 2 --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # tests/ -> sharded_impls is importable

import numpy as np  # noqa: E402

from swanref.verify import distributed as D  # noqa: E402

IMPLS = "sharded_impls.impls"


def _muon_single(g, steps=5, coef=(3.4445, -4.7750, 2.0315)):
    a, b, c = coef
    x = g / (g.norm() + 1e-7)
    x = x.mT if x.shape[0] > x.shape[1] else x
    for _ in range(steps):
        A = x @ x.mT
        x = a * x + (b * A + c * A @ A) @ x
    return x


def _grad_norm_single(x):
    c = x - x.mean(dim=-1, keepdim=True)
    return c / c.square().mean(dim=-1, keepdim=True).sqrt()


def single_gpu_seconds(op, shape, device):
    """One device, the unsharded operator on the whole matrix (torch)."""
    import torch
    g = torch.randn(*shape, dtype=torch.float32, device=device)
    f = {"whiten": _muon_single, "grad_norm": _grad_norm_single}[op]

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()
    f(g)
    sync()
    t = time.perf_counter()
    for _ in range(3):
        f(g)
    sync()
    return (time.perf_counter() - t) / 3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="nccl", choices=("gloo", "nccl"))
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--big", default="4096x11008", help="shape of the whitening checks")
    ap.add_argument("--square", default="8192x8192", help="shape of the GradNorm checks")
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    big = tuple(int(v) for v in a.big.split("x"))
    square = tuple(int(v) for v in a.square.split("x"))
    plan = [  # (op, impl, layout, shape, preset, expected verdict)
        ("whiten", "muon", "rows", big, "muon_ns5", "CONFORMING"),
        ("whiten", "muon_local_norm", "rows", big, "muon_ns5", "NOT CONFORMING"),
        ("whiten", "muon_no_gram_allreduce", "cols", big, "muon_ns5", "NOT CONFORMING"),
        ("whiten", "muon", "cols", big, "muon_ns5", "CONFORMING"),
        ("grad_norm", "grad_norm", "rows", square, None, "CONFORMING"),
        ("grad_norm", "grad_norm_local_stats", "cols", square, None, "NOT CONFORMING"),
    ]
    import torch
    rows = []
    pool = D.RankPool(a.world, a.backend, 300.0)
    try:
        for op, impl, layout, shape, preset, expect in plan:
            t = time.perf_counter()
            rep = D.check_sharded(f"{IMPLS}:{impl}", op, layout=layout, shape=shape,
                                  dtype="float32", preset=preset, pool=pool,
                                  target_name=impl)
            wall = time.perf_counter() - t
            verdict = "CONFORMING" if rep.exit_code == 0 else "NOT CONFORMING"
            failed = [r.name for r in rep.results if r.status == "FAIL"]
            rows.append(dict(op=op, impl=impl, layout=layout, shape="x".join(map(str, shape)),
                             preset=preset, verdict=verdict, expected=expect,
                             failed=failed, check_s=round(wall, 2)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        pool.close()
    dev = "cuda:0" if a.backend == "nccl" else "cpu"
    base = {"whiten": single_gpu_seconds("whiten", big, dev),
            "grad_norm": single_gpu_seconds("grad_norm", square, dev)}
    info = dict(torch=torch.__version__, numpy=np.__version__, python=platform.python_version(),
                backend=a.backend, world=a.world,
                gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                single_device_op_s={k: round(v, 4) for k, v in base.items()},
                command=" ".join(sys.argv))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "sharded_multi_gpu.json"), "w") as fh:
        json.dump({"info": info, "rows": rows}, fh, indent=1)
    print(json.dumps(info), flush=True)
    bad = [r for r in rows if r["verdict"] != r["expected"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
