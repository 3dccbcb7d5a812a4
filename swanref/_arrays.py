"""Conversion between the caller's array kind and the arrays a backend computes on.

``to_backend(G, backend)`` returns ``(array, backend_name, restore)``: the array to compute on,
the backend that will compute, and a function turning a result back into the caller's kind.
NumPy input (and anything ``np.asarray`` accepts) goes to a CPU backend.
"""
from __future__ import annotations

import numpy as np

from . import _backends


def _identity(x):
    return x


def to_backend(G, backend: str | None):
    name = backend if backend is not None else _backends.default_cpu()
    if name == "cupy":
        raise ValueError("backend 'cupy' needs CuPy arrays; this input is on the CPU")
    _backends.get(name)
    return G, name, _identity
