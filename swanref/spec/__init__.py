"""The spec as code (docs/spec.md): readings, tolerance model, input policy, errors, routing.

The bottom layer: it imports nothing else from swanref.
"""
