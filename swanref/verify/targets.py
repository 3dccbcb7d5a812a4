"""Loading the implementation under test: ``module:function`` or ``path/file.py:function``.

The target is someone else's code, but loading it must not change which code *swanref* runs
afterwards.  So its folder is never put in front of ``sys.path``: a ``file.py`` target is
imported by path; while it executes, its folder (or, for a module target, the working
directory) is *appended* to ``sys.path`` -- so the target's own sibling modules import, while
every installed package (numpy, torch, jax, ml_dtypes, ...) still wins -- and it is removed
again afterwards, so a ``torch.py`` lying next to the target is never what ``--array-type torch``
imports later.  Siblings the target imports while it loads stay loaded; one it imports lazily,
inside the function at call time, needs its folder on ``PYTHONPATH``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from contextlib import contextmanager

__all__ = ["UsageError", "load_target"]


class UsageError(Exception):
    """Bad options or an unloadable target: exit status 2."""


@contextmanager
def _importable_last(directory: str):
    """``directory`` at the end of ``sys.path`` for the duration (unless already there)."""
    present = any(os.path.abspath(p or os.curdir) == directory for p in sys.path)
    if not present:
        sys.path.append(directory)
    try:
        yield
    finally:
        if not present:
            try:
                sys.path.remove(directory)
            except ValueError:  # the target removed it itself
                pass
            importlib.invalidate_caches()


def _exec_file(path: str):
    name = "_swanref_target_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot import {path!r}: not a Python source file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        with _importable_last(os.path.dirname(path)):
            module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_target(spec: str):
    """Resolve ``module:attr`` or ``file.py:attr`` to a callable (UsageError otherwise)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise UsageError(f"TARGET must be 'module:function' or 'file.py:function', got {spec!r}")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise UsageError(f"TARGET must be 'module:function' or 'file.py:function', got {spec!r}")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
            path = os.path.abspath(mod_name)
            if not os.path.isfile(path):
                raise UsageError(f"no such file: {mod_name}")
            module = _exec_file(path)
        else:
            with _importable_last(os.getcwd()):
                module = importlib.import_module(mod_name)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import-time failure is a usage error
        raise UsageError(f"cannot import {mod_name!r}: {type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise UsageError(f"{spec} is not callable (got {type(obj).__name__})")
    return obj
