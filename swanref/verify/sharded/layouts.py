"""Which part of the global array each rank holds (docs/spec.md 10.1).

Two split rules cut an axis of ``total`` entries over ``p`` ranks into contiguous blocks in rank
order: ``tensor_split`` (``torch.tensor_split`` / ``numpy.array_split``: sizes differ by at most
one, the first ranks take the larger ones: 10 over 4 is 3,3,2,2) and ``chunk`` (``torch.chunk``,
as DTensor ``Shard(d)`` and FSDP2 split: blocks of ``ceil(total / p)``, the last ones smaller or
empty: 10 over 4 is 3,3,3,1; 5 over 4 is 2,2,1,0).  A 2-D mesh ``(a, b)`` (``grid``) splits rows
over its first dimension and columns over its second; rank ``r`` is mesh coordinate
``(r // b, r % b)``, as ``DeviceMesh(torch.arange(p).reshape(a, b))`` numbers them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from swanref.verify.targets import UsageError

LAYOUTS = ("rows", "cols", "flat", "stack", "grid")
SPLITS = ("tensor_split", "chunk")


def bounds(total: int, world: int, rule: str = "tensor_split") -> list:
    """``[(start, stop)]`` of every rank's block of an axis of ``total`` entries."""
    if rule == "chunk":
        c = -(-total // world) if total else 0
        return [(min(r * c, total), min((r + 1) * c, total)) for r in range(world)]
    q, r = divmod(total, world)
    sizes = [q + (1 if i < r else 0) for i in range(world)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [(int(starts[i]), int(starts[i + 1])) for i in range(world)]


@dataclass(frozen=True)
class ShardLayout:
    """Which part of the global array one rank holds.

    kind:  'rows'  rows ``start:stop`` of the (m, n) matrix (tensor parallel, DTensor Shard(0))
           'cols'  columns ``start:stop`` (tensor parallel, DTensor Shard(1))
           'flat'  entries ``start:stop`` of the row-major flattened matrix, zero-padded to
                   ``chunk`` entries (FSDP1 flat parameter: every rank holds ``chunk`` entries)
           'stack' parameters ``start:stop`` of a (B, m, n) stack (one optimiser step over
                   many same-shaped weights, split across ranks)
           'grid'  rows ``start:stop`` and columns ``col_start:col_stop`` on a 2-D ``mesh``
                   (DTensor ``[Shard(0), Shard(1)]``)
    ``split``: the rule that cut the blocks (``tensor_split`` or ``chunk``); a block may be
    empty.
    """
    kind: str
    rank: int
    world_size: int
    shape: tuple
    start: int
    stop: int
    chunk: int = 0
    split: str = "tensor_split"
    mesh: tuple = ()
    col_start: int = 0
    col_stop: int = 0

    @property
    def local_shape(self) -> tuple:
        m = self.stop - self.start
        if self.kind == "rows":
            return (m, self.shape[1])
        if self.kind == "cols":
            return (self.shape[0], m)
        if self.kind == "flat":
            return (self.chunk,)
        if self.kind == "grid":
            return (m, self.col_stop - self.col_start)
        return (m,) + tuple(self.shape[1:])

    @property
    def coords(self) -> tuple:
        """Mesh coordinates of this rank (``(rank,)`` on a 1-D mesh)."""
        if self.kind == "grid":
            return divmod(self.rank, self.mesh[1])
        return (self.rank,)

    def take(self, G: np.ndarray) -> np.ndarray:
        """This rank's shard of the global array ``G`` (a NumPy copy)."""
        G = np.asarray(G)
        if self.kind == "cols":
            return G[:, self.start:self.stop].copy()
        if self.kind == "flat":
            out = np.zeros(self.chunk, dtype=G.dtype)
            out[:self.stop - self.start] = G.reshape(-1)[self.start:self.stop]
            return out
        if self.kind == "grid":
            return G[self.start:self.stop, self.col_start:self.col_stop].copy()
        return G[self.start:self.stop].copy()


def parse_mesh(mesh, world_size: int) -> tuple:
    """``(a, b)`` from ``'AxB'`` or a pair, checked against the world size."""
    if isinstance(mesh, str):
        try:
            mesh = tuple(int(v) for v in mesh.lower().split("x"))
        except ValueError:
            raise UsageError(f"--mesh must be AxB, got {mesh!r}") from None
    mesh = tuple(int(v) for v in mesh)
    if len(mesh) != 2 or min(mesh) < 1:
        raise UsageError(f"--mesh must be two positive sizes AxB, got {mesh}")
    if mesh[0] * mesh[1] != world_size:
        raise UsageError(f"--mesh {mesh[0]}x{mesh[1]} has {mesh[0] * mesh[1]} ranks, "
                         f"--world-size is {world_size}")
    return mesh


def shard_layouts(kind: str, shape, world_size: int, split: str = "tensor_split",
                  mesh=None) -> list:
    """The :class:`ShardLayout` of every rank for a global array of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if kind not in LAYOUTS:
        raise UsageError(f"unknown layout {kind!r}; choose one of {', '.join(LAYOUTS)}")
    if split not in SPLITS:
        raise UsageError(f"unknown split rule {split!r}; choose one of {', '.join(SPLITS)}")
    if world_size < 1:
        raise UsageError("world_size must be >= 1")
    want = 3 if kind == "stack" else 2
    if len(shape) != want:
        raise UsageError(f"layout {kind!r} takes a {want}-D global array, got shape {shape}")
    if kind == "flat":
        total = int(np.prod(shape))
        chunk = -(-total // world_size)
        return [ShardLayout(kind, r, world_size, shape, min(r * chunk, total),
                            min((r + 1) * chunk, total), chunk, split)
                for r in range(world_size)]
    if kind == "grid":
        a, b = parse_mesh(mesh if mesh is not None else (world_size, 1), world_size)
        rows, cols = bounds(shape[0], a, split), bounds(shape[1], b, split)
        return [ShardLayout(kind, r, world_size, shape, *rows[r // b], 0, split, (a, b),
                            *cols[r % b]) for r in range(world_size)]
    total = {"rows": shape[0], "cols": shape[-1], "stack": shape[0]}[kind]
    return [ShardLayout(kind, r, world_size, shape, a, b, 0, split)
            for r, (a, b) in enumerate(bounds(total, world_size, split))]


def split(G, kind: str, world_size: int, rule: str = "tensor_split", mesh=None) -> list:
    """Every rank's shard of ``G`` (NumPy), in rank order."""
    return [lay.take(G) for lay in shard_layouts(kind, np.shape(G), world_size, rule, mesh)]


def assemble(locals_, kind: str, shape, rule: str = "tensor_split", mesh=None) -> np.ndarray:
    """The global array from the ranks' local results (inverse of :func:`split`)."""
    lays = shard_layouts(kind, shape, len(locals_), rule, mesh)
    first = np.asarray(locals_[0]) if len(locals_) else np.zeros(0)
    out = np.zeros(tuple(shape), dtype=np.result_type(first.dtype, np.float32))
    for x, lay in zip(locals_, lays):
        x = np.asarray(x)
        if kind == "rows" or kind == "stack":
            out[lay.start:lay.stop] = x
        elif kind == "cols":
            out[:, lay.start:lay.stop] = x
        elif kind == "grid":
            out[lay.start:lay.stop, lay.col_start:lay.col_stop] = x
        else:
            out.reshape(-1)[lay.start:lay.stop] = x.reshape(-1)[:lay.stop - lay.start]
    return out
