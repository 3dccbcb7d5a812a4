"""The sharded check on several GPUs (NCCL, one process per GPU), at sizes a CPU run cannot reach.

    NCCL_NVLS_ENABLE=0 python tests/sharded_impls/gpu_run.py --world-size 2 --shape 4096x11008

Runs the faithful and the wrong sharded implementations of impls.py through
swanref.verify.distributed on one NCCL pool, and prints a markdown table: the verdict, the
failed properties, the ranks' wall time for the check's inputs, and the time of the same
operator on one GPU (the whole matrix on cuda:0) for the same inputs.  The judging (float64 /
float32 references, SVDs) runs on the host CPU in NumPy and dominates the total time.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")     # NVLink multicast off

HERE = pathlib.Path(__file__).resolve().parent
IMPLS = str(HERE / "impls.py")

RUNS = [
    ("muon", "cols", {"preset": "muon_ns5"}),
    ("muon", "rows", {"preset": "muon_ns5"}),
    ("muon_local_norm", "cols", {"preset": "muon_ns5"}),
    ("muon_no_gram_allreduce", "rows", {"preset": "muon_ns5"}),
    ("newton_schulz", "cols", {"method": "newton_schulz"}),
    ("newton_schulz_per_shard", "cols", {"method": "newton_schulz"}),
    ("whiten_gather_svd", "rows", {}),
    ("whiten_gather_wrong_order", "rows", {}),
]


def single_gpu_seconds(fn_name, cases, claim):
    """Time of the same operator on one GPU, whole matrices (one rank, no group)."""
    import torch
    from swanref.verify.checker import load_target
    from swanref.verify.distributed import shard_layouts
    import torch.distributed as dist
    fn = load_target(f"{IMPLS}:{fn_name}")
    if not dist.is_initialized():
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29533", rank=0,
                                world_size=1)
    total = 0.0
    for c in cases:
        lay = shard_layouts("rows", c.G.shape, 1)[0]
        x = torch.from_numpy(c.G).cuda(0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x, group=dist.group.WORLD, layout=lay)
        torch.cuda.synchronize()
        total += time.perf_counter() - t0
    return total


def main():
    from swanref.verify import distributed as D
    p = argparse.ArgumentParser()
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--shape", default="4096x11008")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    import torch
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} x "
          f"{torch.cuda.get_device_name(0)}, world size {args.world_size}, shape {shape}, "
          f"{args.dtype}", flush=True)
    rows = []
    with D.RankPool(args.world_size, "nccl", timeout_s=300) as pool:
        for fn, layout, claim in RUNS:
            c = D.ShardedClaim("whiten", args.dtype, **claim).validate()
            cases = D.sharded_inputs(c, layout, args.world_size, shape)
            t0 = time.perf_counter()
            rep = D.check_sharded(f"{IMPLS}:{fn}", "whiten", layout=layout, pool=pool,
                                  shape=shape, dtype=args.dtype, **claim)
            total = time.perf_counter() - t0
            ranks = getattr(rep, "seconds", float("nan"))
            one = single_gpu_seconds(fn if "order" not in fn else "whiten_gather_svd",
                                     cases, c) if "per_shard" not in fn else float("nan")
            rows.append((fn, layout, "conforming" if rep.conforming else "NOT conforming",
                         ", ".join(r.name for r in rep.failures) or "-", ranks, one, total))
            print(rows[-1], flush=True)
    print("\n| implementation | layout | verdict | failed | ranks (s) | 1 GPU (s) | check total (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for fn, lay, v, f, r, o, t in rows:
        print(f"| {fn} | {lay} | {v} | {f} | {r:.3f} | {o:.3f} | {t:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
