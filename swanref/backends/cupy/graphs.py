"""CUDA-graph replay of small iterative calls.

A Newton-Schulz or polynomial-preset call is 30-60 launches whose Python and driver overhead
(tens of microseconds each) is comparable with the GPU work below about 2048 x 2048; the public
call also synchronises with the host (finite check, divergence guard), so that overhead is
not hidden behind the GPU. For such calls the first one with a given key (function, shape,
dtype, parameters) runs eagerly and then captures the same launches on a side stream into a
graph, whose buffers live in a private CuPy memory pool; later calls copy the input into the
graph's input buffer, replay it on the current stream, and copy the output out. Replays run the
same kernels on the same data as the eager call, so the results are the same.

Captured graphs keep their buffers: at most ``MAX_ENTRIES`` graphs and ``MAX_BYTES`` of
buffers are kept (least recently used dropped first); ``clear()`` frees them. Off by default:
on an H100 the replays were no faster than the eager calls at 1024 x 4096 and 8 x 512 x 2048
(the calls are GPU-bound there; docs/performance_gpu.md) while their buffers stay allocated;
``set_graphs(True)`` or ``SWANREF_CUPY_GRAPHS=1`` turns them on. CuPy's cuBLAS wrappers refuse
to run during a capture, so with graphs on the products go through ``_cublas_ct``.
"""
from __future__ import annotations

import collections

from swanref.backends.cupy import _runtime as rt

#: graphs are used when the input has at most this many bytes (larger calls are GPU-bound)
MAX_INPUT_BYTES = 64 * 2**20
#: ... and the Gram matrix is at most MAX_M x MAX_M
MAX_M = 2048
MAX_ENTRIES = 8
MAX_BYTES = 1024 * 2**20

_cache: "collections.OrderedDict" = collections.OrderedDict()
_refused: set = set()
_stats = {"captures": 0, "replays": 0, "failures": 0}


class _Entry:
    __slots__ = ("graph", "pool", "inp", "out", "nbytes")


def clear() -> None:
    _cache.clear()
    _refused.clear()


def cached_bytes() -> int:
    """Device bytes held by the captured graphs' private pools."""
    return sum(e.nbytes for e in _cache.values())


def stats() -> dict:
    return dict(_stats, entries=len(_cache), bytes=cached_bytes())


def eligible(G) -> bool:
    return (bool(rt.state["graphs"]) and 0 < G.nbytes <= MAX_INPUT_BYTES
            and min(G.shape[-2:]) <= MAX_M)


def run(key, fn, G):
    """``fn(G)``, replayed from a captured graph when one exists for ``key``."""
    cp = rt.cp()
    stream = cp.cuda.get_current_stream()
    key = (rt.device(), stream.ptr, G.shape, G.dtype.str, bool(rt.state["tf32"])) + tuple(key)
    entry = _cache.get(key)
    if entry is not None:
        _cache.move_to_end(key)
        cp.copyto(entry.inp, G)
        entry.graph.launch(stream=stream)
        _stats["replays"] += 1
        return entry.out.copy()
    out = fn(G)  # eager, on the caller's stream: this call's result
    if key not in _refused and not stream.is_capturing():
        try:
            entry = _capture(fn, G)
            _validate(entry, G, out, stream)
        except Exception as exc:  # capture unsupported here: stay eager for this key
            _refused.add(key)
            _stats["failures"] += 1
            rt.state["graph_error"] = repr(exc)
        else:
            _cache[key] = entry
            _stats["captures"] += 1
            while len(_cache) > MAX_ENTRIES or (len(_cache) > 1 and cached_bytes() > MAX_BYTES):
                _cache.popitem(last=False)
    return out


def _validate(entry, G, eager, stream):
    """One replay on this call's input must give the eager result (else no graph for the key)."""
    cp = rt.cp()
    cp.copyto(entry.inp, G)
    entry.graph.launch(stream=stream)
    if bool(cp.array_equal(entry.out, eager)):
        return
    a, b = entry.out.astype(cp.float64), eager.astype(cp.float64)
    diff = float(cp.linalg.norm(a - b)) / max(float(cp.linalg.norm(b)), 1e-300)
    _stats["inexact"] = _stats.get("inexact", 0) + 1
    if not diff <= 1e-2:
        raise RuntimeError(f"graph replay differs from the eager call (rel. {diff:.1e})")


def _capture(fn, G):
    cp = rt.cp()
    pool = cp.cuda.MemoryPool()
    stream = cp.cuda.Stream(non_blocking=True)
    entry = _Entry()
    with cp.cuda.using_allocator(pool.malloc):
        entry.inp = cp.empty(G.shape, dtype=G.dtype)
        with stream:
            stream.begin_capture()
            try:
                out = fn(entry.inp)
            finally:
                graph = stream.end_capture()
    # the graph reads entry.inp and writes out; every other buffer it uses was allocated from
    # `pool` during the capture and is reused by nothing else
    entry.graph, entry.pool, entry.out = graph, pool, out
    entry.nbytes = pool.total_bytes()
    return entry
