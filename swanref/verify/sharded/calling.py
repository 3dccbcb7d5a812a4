"""How the ranks call the target (run inside each rank; torch is imported only here).

Four calling conventions, so that real sharded code needs no glue:

``local``      ``fn(local_shard, group=group, layout=layout, **kwargs)`` -> this rank's block
               (``group``/``layout`` passed only where ``fn``'s signature names them, so a
               function such as ``newton_schulz_tp(x, steps, ..., tp_group=, partition_dim=)``
               is a target as it is)
``dtensor``    ``fn(G, **kwargs)`` with ``G`` a ``torch.distributed.tensor.DTensor`` on a device
               mesh of the world (layout ``rows``: ``[Shard(0)]``, ``cols``: ``[Shard(1)]``,
               ``grid``: ``[Shard(0), Shard(1)]`` on the 2-D mesh, ``stack``: ``[Shard(0)]``);
               the result may be a DTensor of any placement (redistributed to the input's) or
               this rank's local block
``optimizer``  ``target(params, **kwargs)`` builds a ``torch.optim.Optimizer`` over one DTensor
               parameter of zeros whose gradient is the sharded input; one ``step()``; the
               result is the update ``(p_before - p_after) / (lr * scale)`` with ``lr`` the
               parameter group's and ``scale`` the claimed shape factor (spec 9.1)
``replicated`` layout ``stack``: ``target(params, **kwargs)`` over a list of full parameters,
               one per matrix, the same on every rank (DDP: the optimizer splits the work over
               the ranks and gathers the results, as KellerJordan/Muon's DistributedMuon); one
               ``step()``; each rank's result its block of the stack of updates

A keyword value may name what only the rank knows (``--kwarg tp_group=@group``):
``@group`` the process group, ``@mesh`` the device mesh of the DTensor conventions (the
world's 1-D mesh under ``local``), ``@rank`` and ``@world_size``.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from swanref.presets.catalogue import get_preset, schedule
from swanref.presets.diagnose import denominator
from swanref.spec.conventions import resolve_scale, shape_factor
from swanref.verify.sharded.layouts import shard_layouts

CONVENTIONS = ("local", "dtensor", "optimizer", "replicated")
#: keyword values that stand for what each rank knows (``--kwarg tp_group=@group``)
RANK_VALUES = ("@group", "@mesh", "@rank", "@world_size")

_MESHES: dict = {}


def forget_meshes():
    """Device meshes belong to a process group: drop them when the group is rebuilt."""
    _MESHES.clear()


def _placements(kind):
    from torch.distributed.tensor import Shard
    return {"rows": [Shard(0)], "cols": [Shard(1)], "stack": [Shard(0)],
            "grid": [Shard(0), Shard(1)]}[kind]


def _mesh(device, world, lay):
    import torch
    from torch.distributed.device_mesh import DeviceMesh
    shape = tuple(lay.mesh) if lay.kind == "grid" else (world,)
    key = (device.type, shape)
    if key not in _MESHES:
        _MESHES[key] = DeviceMesh(device.type, torch.arange(world).reshape(shape))
    return _MESHES[key]


def _world_mesh(device, world):
    """The world's 1-D device mesh (for ``@mesh`` outside the DTensor conventions)."""
    import torch
    from torch.distributed.device_mesh import DeviceMesh
    key = (device.type, (world,))
    if key not in _MESHES:
        _MESHES[key] = DeviceMesh(device.type, torch.arange(world))
    return _MESHES[key]


def _contiguous_stride(shape):
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(stride))


def to_dtensor(local, lay, device, world):
    from torch.distributed.tensor import DTensor
    mesh = _mesh(device, world, lay)
    return DTensor.from_local(local, mesh, _placements(lay.kind), run_check=False,
                              shape=tuple(lay.shape), stride=_contiguous_stride(lay.shape))


def _local_of(out, placements):
    """This rank's block of a result: a DTensor is redistributed to the input's placements."""
    from torch.distributed.tensor import DTensor
    if isinstance(out, DTensor):
        if tuple(out.placements) != tuple(placements):
            out = out.redistribute(out.device_mesh, placements)
        return out.to_local()
    return out


def _rank_kwargs(kwargs, group, mesh_of, lay):
    """``kwargs`` with the rank values (:data:`RANK_VALUES`) filled in for this rank."""
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, str) and v in RANK_VALUES:
            v = {"@group": lambda: group, "@mesh": mesh_of, "@rank": lambda: lay.rank,
                 "@world_size": lambda: lay.world_size}[v]()
        out[k] = v
    return out


def _accepts(fn, name) -> bool:
    """Whether ``fn`` names the keyword ``name`` (True where the signature cannot be read; a
    ``**kwargs`` alone does not count: a wrapper forwarding them to code that does not take
    ``group`` is the common case)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in params)


def _replicated_update(target, local_full, lay, kwargs, scale):
    """The ``replicated`` convention (layout ``stack``): one full parameter per matrix of the
    stack, the same on every rank (zeros, gradients the stack), one ``step()``; this rank's
    block of the stack of updates (so a rank returns parameters other ranks computed)."""
    import torch
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in local_full]
    for p, g in zip(params, local_full):
        p.grad = g.detach().clone()
    opt = target(params, **kwargs)
    lr = float(opt.param_groups[0]["lr"])
    m, n = local_full.shape[-2:]
    factor = shape_factor(resolve_scale(scale), m, n)
    with torch.no_grad():
        before = [p.detach().clone() for p in params]
        opt.step()
        delta = torch.stack([(b - p.detach()) for b, p in zip(before, params)]) / (lr * factor)
    return delta[lay.start:lay.stop]


def _optimizer_update(target, G, lay, kwargs, scale):
    """One optimizer step on a zero DTensor parameter with gradient ``G``: the update
    ``(p_before - p_after) / (lr * scale)`` as this rank's block."""
    import torch
    p = torch.nn.Parameter(torch.zeros_like(G))
    p.grad = G.detach().clone()
    opt = target([p], **kwargs)
    lr = float(opt.param_groups[0]["lr"])
    m, n = lay.shape[-2:]
    factor = shape_factor(resolve_scale(scale), m, n)
    with torch.no_grad():
        before = p.detach().clone()
        opt.step()
        delta = (before - p.detach()) / (lr * factor)
    return delta


def call(fn, local, lay, group, device, world, convention="local", kwargs=None,
         scale="keller", full=None):
    """The target's result on this rank's shard ``local`` (a torch tensor), as a local tensor.
    ``full``: the whole input (the ``replicated`` convention)."""
    if convention == "local":
        kwargs = _rank_kwargs(dict(kwargs or {}), group, lambda: _world_mesh(device, world),
                              lay)
        for name, value in (("group", group), ("layout", lay)):
            if name not in kwargs and _accepts(fn, name):
                kwargs[name] = value
        return fn(local, **kwargs)
    if convention == "replicated":
        kwargs = _rank_kwargs(dict(kwargs or {}), group, lambda: _world_mesh(device, world),
                              lay)
        return _replicated_update(fn, full, lay, kwargs, scale)
    G = to_dtensor(local, lay, device, world)
    kwargs = _rank_kwargs(dict(kwargs or {}), group, lambda: G.device_mesh, lay)
    if convention == "dtensor":
        return _local_of(fn(G, **kwargs), G.placements)
    return _local_of(_optimizer_update(fn, G, lay, kwargs, scale), G.placements)


def torch_dtype(name):
    import torch
    return getattr(torch, name)


def result_tuple(out, local, before):
    """``(float NumPy copy, input mutated, dtype name)`` of one rank's result."""
    import torch
    if not hasattr(out, "detach"):
        out = torch.as_tensor(np.asarray(out))
    t = out.detach().cpu()
    name = str(t.dtype).replace("torch.", "")
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    mutated = local.shape != before.shape or not torch.equal(local, before)
    return t.numpy().copy(), mutated, name


def call_where(case, lay, rank, world, kind) -> str:
    """What a rank was doing, for a timeout's message: the probe (case), the rank, the shard."""
    return (f"computing case {case.label!r} on rank {rank} of {world} (layout {kind}, a "
            f"{case.dtype_name} shard of shape {tuple(lay.local_shape)})")


def hung_at() -> tuple:
    """Where this rank's hung call of the target is: ``(text, in_collective)`` from the stack
    of the runner's worker thread (``in_collective``: its innermost Python frame is inside
    torch.distributed, i.e. the rank waits for a peer rather than hanging by itself)."""
    import sys
    import threading
    frames = sys._current_frames()
    for t in threading.enumerate():
        if t.name != "swanref-target" or t.ident not in frames:
            continue
        f = frames[t.ident]
        if f.f_code.co_name == "_worker":     # an idle worker waiting for its next job
            continue
        inner = f
        in_collective = "torch/distributed" in f.f_code.co_filename.replace("\\", "/")
        while f is not None:      # the innermost frame outside torch, swanref and threading
            name = f.f_code.co_filename.replace("\\", "/")
            if not any(k in name for k in ("/torch/", "/swanref/", "threading.py")):
                inner = f
                break
            f = f.f_back
        where = f"{inner.f_code.co_filename}:{inner.f_lineno} in {inner.f_code.co_name}"
        return (("waiting in a torch.distributed collective, called at " if in_collective
                 else "at ") + where, in_collective)
    return "", False


def _on_device(device, func, *args):
    """``func(*args)`` with ``device`` current (a CUDA device is per thread: the runner's
    worker thread sets it for itself)."""
    if device.type == "cuda":
        import torch
        torch.cuda.set_device(device)
    return func(*args)


def run_cases(fn, kind, cases, rank, world, group, device, claim, convention="local",
              kwargs=None, scale="keller", runner=None):
    """This rank's local results for every case (raises what ``fn`` raises).  ``runner``: a
    :class:`~swanref.verify.targets.TargetRunner` whose deadline bounds each call of the
    target (TargetTimeout naming the case and the rank); None: called directly."""
    import torch
    outs = []
    for c in cases:
        lay = shard_layouts(kind, c.G.shape, world, claim.split, claim.mesh)[rank]
        local = torch.from_numpy(np.ascontiguousarray(lay.take(c.G))).to(device)
        local = local.to(torch_dtype(c.dtype_name))
        before = local.clone()
        full = None
        if convention == "replicated":     # every rank holds every parameter
            full = torch.from_numpy(np.ascontiguousarray(c.G)).to(device)
            full = full.to(torch_dtype(c.dtype_name))
        args = (fn, local, lay, group, device, world, convention, kwargs, scale, full)
        if runner is None:
            out = call(*args)
        else:
            out = runner.run(_on_device, device, call, *args,
                             where=call_where(c, lay, rank, world, kind))
        outs.append(result_tuple(out, local, before))
    return outs


def device_reference(claim, G, device):
    """The unsharded reference computed on this rank's GPU in float64 (presets in float32 and
    float64: the exact-arithmetic polynomial composition, which the 8.6 tolerance measures
    from), or ``None`` where only the host reference applies (16-bit emulation, the other
    operators)."""
    import torch
    if device.type != "cuda" or claim.preset is None or claim.dtype not in ("float32",
                                                                              "float64"):
        return None
    preset = get_preset(claim.preset)
    if preset.form not in ("keller", "addmm") or preset.norm_over == "all" or \
            preset.transpose != "to_wide":
        return None
    sched = schedule(claim.preset, claim.steps)
    X = torch.as_tensor(np.asarray(G, np.float64), device=device)
    flip = X.shape[-2] > X.shape[-1]
    if flip:
        X = X.mT
    fro = torch.linalg.matrix_norm(X, keepdim=True)
    den = torch.as_tensor([[denominator(float(f), preset)] for f in fro.reshape(-1).tolist()],
                          dtype=X.dtype, device=device).reshape(fro.shape)
    X = X / torch.where(den > 0, den, torch.ones_like(den))
    for a, b, c in sched:
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    if flip:
        X = X.mT
    out = X.cpu().numpy()
    return out if np.all(np.isfinite(out)) and math.isfinite(float(np.abs(out).max())) \
        else None


def device_svdvals(G, device):
    """Singular values of every matrix of ``G`` on this rank's GPU in float64 (``None`` on a
    CPU rank: the host computes them)."""
    import torch
    if device is None or device.type != "cuda":
        return None
    g = torch.as_tensor(np.asarray(G, np.float64), device=device)
    g = g.reshape((-1,) + tuple(g.shape[-2:]))
    return torch.linalg.svdvals(g).cpu().numpy()
