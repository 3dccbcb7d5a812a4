"""Backends: the protocol (``protocol``), the registry, array interop and the implementations
(``reference`` in NumPy, ``cpp`` over the compiled core, ``cupy`` on NVIDIA GPUs).

Imports only ``swanref.spec``.
"""
