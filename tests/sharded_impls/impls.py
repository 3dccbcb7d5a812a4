"""Sharded implementations for tests/test_distributed.py: faithful ones and deliberately wrong
ones, each a function ``fn(local, group=..., layout=...)`` as the sharded check calls it.

They use only torch and torch.distributed (as a real sharded optimiser would); the layout
object gives the global shape and this rank's block.  Each wrong one makes exactly one of the
global-versus-local mistakes that a single-process check cannot see.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

KELLER = (3.4445, -4.7750, 2.0315)


# -- communication helpers ---------------------------------------------------------------------

def _sizes(total, world, rule="tensor_split"):
    """Block sizes of torch.tensor_split (3,3,2,2 for 10 over 4) or torch.chunk (3,3,3,1)."""
    if rule == "chunk":
        c = -(-total // world)
        return [max(0, min(c, total - i * c)) for i in range(world)]
    q, r = divmod(total, world)
    return [q + (1 if i < r else 0) for i in range(world)]


def gather(local, group, layout, reverse=False):
    """The global array from every rank's block (all_gather with padding to equal sizes)."""
    world = layout.world_size
    if layout.kind == "flat":
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous(), group=group)
        if reverse:
            parts = parts[::-1]
        total = layout.shape[0] * layout.shape[1]
        return torch.cat(parts)[:total].reshape(layout.shape)
    axis = 1 if layout.kind == "cols" else 0
    total = layout.shape[axis]
    sizes = _sizes(total, world, layout.split)
    big = max(sizes)
    pad = list(local.shape)
    pad[axis] = big - local.shape[axis]
    padded = torch.cat([local, local.new_zeros(pad)], dim=axis).contiguous()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    parts = [p.narrow(axis, 0, s) for p, s in zip(parts, sizes)]
    if reverse:                      # the bug: blocks concatenated in the wrong order
        parts = parts[::-1]
    return torch.cat(parts, dim=axis)


def own_block(full, layout):
    if layout.kind == "rows":
        return full[layout.start:layout.stop].contiguous()
    if layout.kind == "cols":
        return full[:, layout.start:layout.stop].contiguous()
    flat = full.reshape(-1)[layout.start:layout.stop]
    out = flat.new_zeros(layout.chunk)
    out[:flat.numel()] = flat
    return out


def allreduce(t, group):
    t = t.contiguous()
    dist.all_reduce(t, group=group)
    return t


def _wide_view(local, layout):
    """(local block in the wide orientation, its kind there, whether it was transposed)."""
    m, n = layout.shape[-2:]
    if m > n:
        return local.mT, {"rows": "cols", "cols": "rows"}[layout.kind], True
    return local, layout.kind, False


# -- GradNorm --------------------------------------------------------------------------------

def _grad_norm_local(x):
    d = x - x[..., :1]
    c = d - d.mean(dim=-1, keepdim=True)
    sd = c.square().mean(dim=-1, keepdim=True).sqrt()
    return torch.where(sd > 0, c / torch.where(sd > 0, sd, torch.ones_like(sd)),
                       torch.zeros_like(c))


def grad_norm(local, group=None, layout=None):
    """Faithful: row statistics all-reduced over column shards (two passes)."""
    if layout.kind in ("rows", "stack"):
        return _grad_norm_local(local)
    if layout.kind == "flat":
        return own_block(_grad_norm_local(gather(local, group, layout)), layout)
    n = layout.shape[1]
    mean = allreduce(local.sum(dim=-1, keepdim=True), group) / n
    c = local - mean
    var = allreduce(c.square().sum(dim=-1, keepdim=True), group) / n
    sd = var.sqrt()
    return torch.where(sd > 0, c / torch.where(sd > 0, sd, torch.ones_like(sd)),
                       torch.zeros_like(c))


def grad_norm_local_stats(local, group=None, layout=None):
    """Wrong: each column shard standardised with its own row statistics."""
    return _grad_norm_local(local)


# -- exact whitening ---------------------------------------------------------------------------

def _polar(G):
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    tol = max(G.shape[-2:]) * torch.finfo(G.dtype).eps * s[..., :1]
    keep = (s > tol).to(G.dtype)
    return (U * keep.unsqueeze(-2)) @ Vh


def whiten_gather_svd(local, group=None, layout=None):
    """Faithful (svd accuracy): all-gather the blocks, polar factor by SVD, keep own block."""
    return own_block(_polar(gather(local, group, layout)), layout)


def whiten_gather_wrong_order(local, group=None, layout=None):
    """Wrong: the gathered blocks are concatenated in reverse rank order."""
    return own_block(_polar(gather(local, group, layout, reverse=True)), layout)


def _inv_sqrt(A, size):
    l, Q = torch.linalg.eigh(A)
    lmax = l[-1].clamp(min=0)
    keep = l > 8 * size * torch.finfo(A.dtype).eps * lmax
    w = torch.where(keep, l.clamp(min=torch.finfo(A.dtype).tiny).rsqrt(), torch.zeros_like(l))
    return (Q * w) @ Q.mT


def whiten_gram(local, group=None, layout=None):
    """Faithful (eigh accuracy): all-reduced Gram matrix of the sharded side, then
    X_r = A^-1/2 G_r (column shards) or G_r B^-1/2 (row shards); pseudo-inverse on the null
    space."""
    size = max(layout.shape)
    if layout.kind == "cols":
        return _inv_sqrt(allreduce(local @ local.mT, group), size) @ local
    return local @ _inv_sqrt(allreduce(local.mT @ local, group), size)


def whiten_gram_no_allreduce(local, group=None, layout=None):
    """Wrong: the Gram matrix of the local shard only (each shard whitened on its own)."""
    size = max(local.shape)
    if layout.kind == "cols":
        return _inv_sqrt(local @ local.mT, size) @ local
    return local @ _inv_sqrt(local.mT @ local, size)


# -- coupled Newton-Schulz (swanref method newton_schulz: 10 steps, beta 1/2, gram_fro) ------

def _coupled(A, steps=10):
    c = torch.linalg.matrix_norm(A)
    c = torch.where(c > 0, c, torch.ones_like(c))
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    Y, Z = A / c, eye
    for _ in range(steps):
        T = 3 * eye - Z @ Y
        Y, Z = 0.5 * Y @ T, 0.5 * T @ Z
    return Z, c


def newton_schulz(local, group=None, layout=None):
    """Faithful: one all-reduced Gram matrix (m x m for column shards, n x n for row shards:
    G Z(G^T G) = Z(G G^T) G), the iteration replicated on every rank."""
    if layout.kind == "cols":
        Z, c = _coupled(allreduce(local @ local.mT, group))
        return Z @ local / c.sqrt()
    Z, c = _coupled(allreduce(local.mT @ local, group))
    return local @ Z / c.sqrt()


def newton_schulz_per_shard(local, group=None, layout=None):
    """Wrong: the whole iteration on the local shard (local Gram, local scaling)."""
    if local.shape[0] > local.shape[1]:
        Z, c = _coupled(local.mT @ local)
        return local @ Z / c.sqrt()
    Z, c = _coupled(local @ local.mT)
    return Z @ local / c.sqrt()


# -- Muon (preset muon_ns5: X / (||X||_F + 1e-7), 5 Keller steps on the wide orientation) --------

def _muon_steps(X, kind, group, reduce_gram=True, steps=5):
    a, b, c = KELLER
    for _ in range(steps):
        if kind == "cols":           # A = X X^T = sum_r X_r X_r^T; X_r <- a X_r + (bA + cA^2) X_r
            A = X @ X.mT
            A = allreduce(A, group) if reduce_gram else A
            X = a * X + (b * A + c * A @ A) @ X
        else:                        # row shards: X_r <- X_r (aI + bB + cB^2), B = sum X_r^T X_r
            B = X.mT @ X
            B = allreduce(B, group) if reduce_gram else B
            X = a * X + X @ (b * B + c * B @ B)
    return X


def muon(local, group=None, layout=None):
    """Faithful: global Frobenius norm (all-reduced sum of squares), all-reduced Gram."""
    X, kind, flip = _wide_view(local, layout)
    nrm = allreduce(X.square().sum(), group).sqrt()
    X = _muon_steps(X / (nrm + 1e-7), kind, group)
    return X.mT if flip else X


def muon_local_norm(local, group=None, layout=None):
    """Wrong: each shard divided by its own Frobenius norm."""
    X, kind, flip = _wide_view(local, layout)
    X = _muon_steps(X / (X.norm() + 1e-7), kind, group)
    return X.mT if flip else X


def muon_no_gram_allreduce(local, group=None, layout=None):
    """Wrong: global norm, but the Gram matrix is not all-reduced."""
    X, kind, flip = _wide_view(local, layout)
    nrm = allreduce(X.square().sum(), group).sqrt()
    X = _muon_steps(X / (nrm + 1e-7), kind, group, reduce_gram=False)
    return X.mT if flip else X


def muon_stack(local, group=None, layout=None):
    """Faithful megabatch: this rank's parameters, each normalised and iterated on its own."""
    X = local.mT if local.shape[-2] > local.shape[-1] else local
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + 1e-7)
    a, b, c = KELLER
    for _ in range(5):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if local.shape[-2] > local.shape[-1] else X


def muon_stack_flattened(local, group=None, layout=None):
    """Wrong: the local stack normalised as one tensor (one norm over all its parameters)."""
    X = local.mT if local.shape[-2] > local.shape[-1] else local
    X = X / (X.norm() + 1e-7)
    a, b, c = KELLER
    for _ in range(5):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if local.shape[-2] > local.shape[-1] else X


# -- broken in other ways ------------------------------------------------------------------------

def raises_on_rank1(local, group=None, layout=None):
    """Rank 1 raises before the collective; rank 0 waits in all_reduce until the timeout."""
    if layout.rank == 1:
        raise ValueError("deliberate failure on rank 1")
    return allreduce(local.clone(), group)


def hangs_on_rank1(local, group=None, layout=None):
    """Rank 1 never returns (a wait that never ends); rank 0 waits for it in all_reduce."""
    if layout.rank == 1:
        import time
        t_end = time.monotonic() + 60          # ends by itself: nothing outlives a test run
        while time.monotonic() < t_end:
            time.sleep(0.05)
    return allreduce(local.clone(), group)


def muon_normalises_in_place(local, group=None, layout=None):
    """Right result, but the caller's shard is divided by the norm in place (torch.optim.Muon
    does this to bfloat16 gradients)."""
    X, kind, flip = _wide_view(local, layout)
    nrm = allreduce(X.square().sum(), group).sqrt()
    X.div_(nrm + 1e-7)
    X = _muon_steps(X, kind, group)
    return X.mT if flip else X


def wrong_shape(local, group=None, layout=None):
    """Returns the transposed shard."""
    return local.mT.contiguous()


# -- the in-job API, run inside the ranks --------------------------------------------------------

def in_group_probe(local, group=None, layout=None):
    """Runs swanref's check_in_group on the caller's group for a faithful and a wrong Muon and
    encodes the verdicts in its (otherwise zero) result: [good conforming, bad conforming,
    bad failed global_norm]."""
    from swanref.verify.distributed import check_in_group
    good = check_in_group(muon, "whiten", layout="cols", group=group, preset="muon_ns5")
    bad = check_in_group(muon_local_norm, "whiten", layout="cols", group=group,
                         preset="muon_ns5")
    out = torch.zeros_like(local)
    flat = out.view(-1)
    flat[0] = float(good.conforming)
    flat[1] = float(bad.conforming)
    flat[2] = float("global_norm" in {r.name for r in bad.failures})
    return out


# -- more global-versus-local mistakes -----------------------------------------------------------

def muon_norm_sqrt_world(local, group=None, layout=None):
    """Wrong: the global sum of squares averaged over the ranks (an all-reduce AVG where a SUM
    was due): the norm is off by sqrt(world size)."""
    X, kind, flip = _wide_view(local, layout)
    nrm = (allreduce(X.square().sum(), group) / layout.world_size).sqrt()
    X = _muon_steps(X / (nrm + 1e-7), kind, group)
    return X.mT if flip else X


def muon_norm_off(local, group=None, layout=None):
    """Wrong by a hair: the global norm multiplied by (1 + 2^-13) (a mis-rounded scale)."""
    X, kind, flip = _wide_view(local, layout)
    nrm = allreduce(X.square().sum(), group).sqrt() * (1 + 2.0 ** -13)
    X = _muon_steps(X / (nrm + 1e-7), kind, group)
    return X.mT if flip else X


def whiten_gather_wrong_axis(local, group=None, layout=None):
    """Wrong: row blocks laid side by side (all_gather concatenated along columns), the polar
    factor of that matrix, and this rank's block taken along the same wrong axis."""
    parts = [torch.empty_like(local) for _ in range(layout.world_size)]
    dist.all_gather(parts, local.contiguous(), group=group)
    axis = 1 if layout.kind == "rows" else 0
    full = _polar(torch.cat(parts, dim=axis))
    return full.chunk(layout.world_size, dim=axis)[layout.rank].contiguous()


def grad_norm_summed_over_ranks(local, group=None, layout=None):
    """Wrong: a replicated result summed over the ranks (all_reduce of the whole result) and
    then sliced: the result is multiplied by the world size."""
    full = _grad_norm_local(gather(local, group, layout))
    return own_block(allreduce(full, group), layout)


def muon_diverges(local, group=None, layout=None):
    """Wrong and blowing up: no normalisation at all on a large input (the iteration
    overflows to inf/NaN)."""
    X, kind, flip = _wide_view(local, layout)
    X = _muon_steps(X * 1e3, kind, group)
    return X.mT if flip else X


# -- DTensor: the calling convention of real FSDP2 / DTensor code ----------------------------

def dtensor_muon(G, eps=1e-7, steps=5):
    """Faithful Muon written with DTensor operations only (as a DTensor-aware optimiser does:
    the norm and the Gram matrices are reduced by DTensor's sharding propagation)."""
    X = G.mT if G.shape[-2] > G.shape[-1] else G
    X = _dtensor_steps(X / (torch.linalg.vector_norm(X) + eps), steps)
    return X.mT if G.shape[-2] > G.shape[-1] else X


def _dtensor_steps(X, steps=5):
    a, b, c = KELLER
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X


def dtensor_muon_full(G, eps=1e-7):
    """Faithful: gather the whole matrix (full_tensor), Muon on it, the result replicated."""
    from torch.distributed.tensor import DTensor, Replicate
    full = G.full_tensor()
    X = full.mT if full.shape[-2] > full.shape[-1] else full
    X = X / (X.norm() + eps)
    a, b, c = KELLER
    for _ in range(5):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    X = X.mT if full.shape[-2] > full.shape[-1] else X
    return DTensor.from_local(X, G.device_mesh, [Replicate()] * G.device_mesh.ndim,
                              run_check=False)


def dtensor_muon_local_norm(G, eps=1e-7):
    """Wrong: the norm of the local shard only (to_local before the norm)."""
    from torch.distributed.tensor import DTensor
    local = G.to_local()
    X = DTensor.from_local(local / (local.norm() + eps), G.device_mesh, G.placements,
                           run_check=False, shape=G.shape, stride=G.stride())
    flip = G.shape[-2] > G.shape[-1]
    X = _dtensor_steps(X.mT if flip else X)
    return X.mT if flip else X


class SimpleDTensorMuon(torch.optim.Optimizer):
    """A minimal Muon-style optimizer over DTensor parameters (momentum, Nesterov, Keller's
    shape factor, lr), as a sharded training loop would use it."""

    def __init__(self, params, lr=0.02, momentum=0.95):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                g = p.grad.add(buf, alpha=group["momentum"])
                m, n = p.shape
                scale = max(1.0, m / n) ** 0.5
                p.add_(dtensor_muon(g), alpha=-group["lr"] * scale)
