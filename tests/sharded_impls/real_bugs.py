"""Real sharded code with one planted bug each (tests/test_sharded_real.py): every function is
the vendored source (nemo_muon_utils.py, keller_muon.py) with the one line marked ``BUG``
changed, the kind of mistake found in public trackers: a norm over the local shard, shards
gathered along the wrong axis, a sum of squares averaged over the ranks, a Gram matrix
all-reduced in bfloat16, an update averaged over the ranks, results never gathered, blocks cut
by torch.tensor_split where DTensor cuts by torch.chunk."""
from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import keller_muon  # noqa: E402
import nemo_muon_utils as nemo  # noqa: E402


@contextlib.contextmanager
def _patched(name, fn):
    old = getattr(nemo, name)
    setattr(nemo, name, fn)
    try:
        yield
    finally:
        setattr(nemo, name, old)


# -- NeMo Emerging-Optimizers newton_schulz_tp -----------------------------------------------

def _local_normalize_p2(x, eps, group, normalize_in_double=False):
    x_sq = x.double() if normalize_in_double else x
    x_sq_sum = (x_sq * x_sq).sum()
    # BUG: no all_reduce -- each shard divided by its own norm
    norm = torch.sqrt(x_sq_sum).to(x.dtype)
    if not normalize_in_double:
        norm.clamp_min_(eps)
    return x / norm


def nemo_tp_local_norm(x, **kwargs):
    with _patched("distributed_normalize_p2", _local_normalize_p2):
        return nemo.newton_schulz_tp(x, **kwargs)


def _mean_normalize_p2(x, eps, group, normalize_in_double=False):
    x_sq = x.double() if normalize_in_double else x
    x_sq_sum = (x_sq * x_sq).sum()
    torch.distributed.all_reduce(x_sq_sum, op=torch.distributed.ReduceOp.SUM, group=group)
    x_sq_sum = x_sq_sum / dist.get_world_size(group)        # BUG: ReduceOp.AVG semantics
    norm = torch.sqrt(x_sq_sum).to(x.dtype)
    if not normalize_in_double:
        norm.clamp_min_(eps)
    return x / norm


def nemo_tp_norm_averaged(x, **kwargs):
    with _patched("distributed_normalize_p2", _mean_normalize_p2):
        return nemo.newton_schulz_tp(x, **kwargs)


def _bf16_reduce_step(X, a, b, c, tp_group=None):
    A = X @ X.mT
    if tp_group is not None:
        A = A.bfloat16()                  # BUG: the Gram matrix all-reduced in bfloat16
        torch.distributed.all_reduce(A, op=torch.distributed.ReduceOp.SUM, group=tp_group)
        A = A.float()
    if c != 0.0:
        B = torch.addmm(A, A, A, alpha=c, beta=b)
        X = torch.addmm(X, B, X, alpha=1.0, beta=a)
    else:
        X = torch.addmm(X, A, X, alpha=b, beta=a)
    return X


def nemo_tp_bf16_gram(x, **kwargs):
    with _patched("newton_schulz_step", _bf16_reduce_step):
        return nemo.newton_schulz_tp(x, **kwargs)


def nemo_tp_gather_wrong_axis(x, steps, coefficient_type, tp_group, partition_dim=None,
                              tp_mode="duplicated", use_syrk=False):
    """newton_schulz_tp's "duplicated" path with the gather (and the slice) on the wrong dim."""
    dim = 1 - partition_dim                               # BUG: the other axis
    x_shards = [torch.empty_like(x) for _ in range(tp_group.size())]
    torch.distributed.all_gather(x_shards, x, tp_group)
    global_x = torch.cat(x_shards, dim=dim)
    orthogonalized_x = nemo.newton_schulz(global_x, steps, coefficient_type, tp_group=None)
    return orthogonalized_x.chunk(tp_group.size(), dim=dim)[tp_group.rank()]


# -- KellerJordan/Muon (DistributedMuon) -----------------------------------------------------

class KellerMuonAveraged(keller_muon.Muon):
    """step() with the update divided by the world size (as if it were a gradient average)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = group["params"]
            params_pad = params + [torch.empty_like(params[-1])] * (
                dist.get_world_size() - len(params) % dist.get_world_size())
            for base_i in range(len(params))[::dist.get_world_size()]:
                if base_i + dist.get_rank() < len(params):
                    p = params[base_i + dist.get_rank()]
                    state = self.state[p]
                    if len(state) == 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    update = keller_muon.muon_update(p.grad, state["momentum_buffer"],
                                                     beta=group["momentum"])
                    update = update / dist.get_world_size()     # BUG
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.reshape(p.shape), alpha=-group["lr"])
                dist.all_gather(params_pad[base_i:base_i + dist.get_world_size()],
                                params_pad[base_i + dist.get_rank()])


class KellerMuonNoGather(keller_muon.Muon):
    """step() without the all_gather: each rank holds only the parameters it updated."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = group["params"]
            for base_i in range(len(params))[::dist.get_world_size()]:
                if base_i + dist.get_rank() < len(params):
                    p = params[base_i + dist.get_rank()]
                    state = self.state[p]
                    if len(state) == 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    update = keller_muon.muon_update(p.grad, state["momentum_buffer"],
                                                     beta=group["momentum"])
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.reshape(p.shape), alpha=-group["lr"])
                # BUG: no dist.all_gather of the updated parameters


def keller_full_then_tensor_split(G, steps=5):
    """A DTensor gathered, orthogonalised by KellerJordan's function, and cut back by
    torch.tensor_split (3,3,2,2) where DTensor's Shard(0) is torch.chunk (3,3,3,1)."""
    out = keller_muon.zeropower_via_newtonschulz5(G.full_tensor(), steps)
    world, rank = dist.get_world_size(), dist.get_rank()
    return torch.tensor_split(out, world)[rank]                   # BUG: not chunk


def _off_normalize_p2(x, eps, group, normalize_in_double=False):
    x_sq = x.double() if normalize_in_double else x
    x_sq_sum = (x_sq * x_sq).sum()
    torch.distributed.all_reduce(x_sq_sum, op=torch.distributed.ReduceOp.SUM, group=group)
    norm = torch.sqrt(x_sq_sum).to(x.dtype) * (1 + 2.0 ** -13)     # BUG: a mis-rounded scale
    if not normalize_in_double:
        norm.clamp_min_(eps)
    return x / norm


def nemo_tp_norm_off(x, **kwargs):
    with _patched("distributed_normalize_p2", _off_normalize_p2):
        return nemo.newton_schulz_tp(x, **kwargs)
