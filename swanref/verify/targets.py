"""Loading the implementation under test: ``module:function`` or ``path/file.py:function``
(``module:Class().method``: a method of an instance built with no arguments; a file inside a
package -- its folder has an ``__init__.py`` -- is imported as that package's module, so its
relative imports work).

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

import argparse
import importlib
import importlib.util
import math
import os
import queue
import sys
import threading
import time
from contextlib import contextmanager

from swanref.backends import cpp

__all__ = ["UsageError", "load_target", "TargetRunner", "TargetAborted", "TargetTimeout",
           "DEFAULT_TIMEOUT_S", "FirstCallTimer", "stop_message", "timeout_seconds",
           "COMPILE_ROOM", "compile_room", "recompile_limit_hit", "recompile_advice"]


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


def _package_module(path: str):
    """``(folder above the top package, dotted name)`` of a file inside a package (its folder
    has an ``__init__.py``), so that its relative imports work; None for a loose file."""
    folder, name = os.path.split(path)
    parts = [os.path.splitext(name)[0]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, pkg = os.path.split(folder)
        if not pkg.isidentifier():
            return None
        parts.insert(0, pkg)
    if len(parts) == 1 or not parts[-1].isidentifier():
        return None
    return folder, ".".join(p for p in parts if p != "__init__")


def _import(mod_name: str):
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {mod_name}")
        in_package = _package_module(path)
        if in_package is not None:     # a file of a package: import it as one (relative imports)
            root, dotted = in_package
            with _importable_last(root):
                module = importlib.import_module(dotted)
            got = os.path.abspath(getattr(module, "__file__", "") or "")
            if got != path:
                raise UsageError(f"{mod_name} is module {dotted!r} of a package, but importing "
                                 f"{dotted!r} gives {got or 'a module without a file'} (an "
                                 "installed package of that name comes first): pass the module "
                                 f"name {dotted}:... with the package's folder on PYTHONPATH")
            return module
        return _exec_file(path)
    with _importable_last(os.getcwd()):
        return importlib.import_module(mod_name)


def load_target(spec: str, runner: "TargetRunner | None" = None):
    """Resolve ``module:attr`` or ``file.py:attr`` to a callable (UsageError otherwise).

    With a :class:`TargetRunner` the import runs on its worker under its deadline
    (TargetTimeout); a module that exits or raises a BaseException while it loads raises
    :class:`TargetAborted` either way (a ``sys.exit(0)`` at import is never a success).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise UsageError(f"TARGET must be 'module:function' or 'file.py:function', got {spec!r}")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise UsageError(f"TARGET must be 'module:function' or 'file.py:function', got {spec!r}")
    where = f"importing {mod_name}"
    try:
        if runner is not None:
            module = runner.run(_import, mod_name, where=where)
        else:
            module = _import(mod_name)
    except (UsageError, TargetAborted, TargetTimeout):
        raise
    except Exception as exc:  # noqa: BLE001 - any import-time failure is a usage error
        raise UsageError(f"cannot import {mod_name!r}: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:  # SystemExit at import time, direct (runner-less) load
        if isinstance(exc, KeyboardInterrupt) and runner is None:
            raise  # on the caller's thread a Ctrl-C is the user's
        raise TargetAborted(exc, where) from exc
    obj = module
    for part in attr.split("."):
        # ``Class()``: an instance built with no arguments, so that ``Class().method`` names a
        # method of an instance (keras.optimizers:Muon().zeropower_via_newtonschulz5)
        call = part.endswith("()")
        name = part[:-2] if call else part
        if not name.isidentifier():
            raise UsageError(f"{spec}: {part!r} is not an attribute name (or Name() for an "
                             "instance built with no arguments)")
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise UsageError(f"{mod_name!r} has no attribute {attr!r}") from None
        if call:
            obj = _instantiate(obj, f"{mod_name}:{attr}", part, runner)
    if not callable(obj):
        raise UsageError(f"{spec} is not callable (got {type(obj).__name__})")
    return obj


def _instantiate(cls, spec, part, runner):
    """``cls()`` for a ``Name()`` part of a target path, under the runner's deadline; an
    exception is a usage error naming the part (a constructor that needs arguments)."""
    if not callable(cls):
        raise UsageError(f"{spec}: {part[:-2]!r} is not callable")
    where = f"building {part} of {spec}"
    try:
        return runner.run(cls, where=where) if runner is not None else cls()
    except (TargetAborted, TargetTimeout):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's constructor
        raise UsageError(f"{spec}: {part} raised {type(exc).__name__}: {exc} (only a class "
                         "that builds with no arguments can be named this way; bind others "
                         "in a file of your own)") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and runner is None:
            raise
        raise TargetAborted(exc, where) from exc


# -- calling the target: one worker thread, a deadline, and no exit through it ---------------

#: seconds one call of the target (or its import) may take before it counts as hung
#: (``swanref check --timeout``); generous: a JIT target compiles on its first call per shape
DEFAULT_TIMEOUT_S = 60.0


class TargetAborted(BaseException):
    """The target exited (``SystemExit``, any code) or raised another BaseException
    (``KeyboardInterrupt``, ``GeneratorExit``, ...) while importing or computing.

    A BaseException, so that no ``except Exception`` on the way (hypothesis, a property)
    turns it into an ordinary failure: the whole check stops with its own outcome.
    """

    def __init__(self, exc: BaseException, where: str):
        self.exc, self.where = exc, where
        what = (f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit)
                else f"raised {type(exc).__name__}: {exc}".rstrip(": "))
        super().__init__(f"the target {what} while {where}")


class TargetTimeout(BaseException):
    """The target did not return within the deadline (the call is left running in a
    daemon thread; the process can still exit)."""

    def __init__(self, seconds: float, where: str):
        self.seconds, self.where = seconds, where
        super().__init__(f"the target did not return within {seconds:g} s while {where}")


# -- torch.compile'd targets -------------------------------------------------------------------

#: torch.compile's recompile limit while the target runs: a check calls it on a few dozen
#: shapes and dtypes, and a ``dynamic=False`` target compiles once per (shape, dtype); torch's
#: default of 8 would stop a faithful compiled target partway (docs/verification.md)
COMPILE_ROOM = 64
_DYNAMO_LIMITS = ("recompile_limit", "cache_size_limit")


@contextmanager
def compile_room(record=None):
    """Raise ``torch._dynamo.config``'s recompile limit to COMPILE_ROOM around one call of the
    target, when torch's compiler is loaded (never imported here), and put it back after.
    Must run on the thread that calls the target: since torch 2.6 dynamo's config values are
    per thread.  ``record`` (a dict) gets ``{"recompile_limit": old}`` when it was raised, so
    the report can say so."""
    cfg = sys.modules.get("torch._dynamo.config")
    names = [k for k in _DYNAMO_LIMITS if cfg is not None and
             isinstance(getattr(cfg, k, None), int) and not isinstance(getattr(cfg, k), bool)]
    old = {k: getattr(cfg, k) for k in names}
    try:
        for k in names:
            if old[k] < COMPILE_ROOM:
                setattr(cfg, k, COMPILE_ROOM)
                if record is not None:
                    record.setdefault(k, old[k])
        yield
    finally:
        for k, v in old.items():
            setattr(cfg, k, v)


def recompile_limit_hit(exc) -> bool:
    """Did torch.compile refuse to compile again (its recompile limit) somewhere in ``exc``'s
    chain?  With ``fullgraph=True`` (heavyball's compiled functions) dynamo raises
    ``FailOnRecompileLimitHit`` instead of falling back to eager."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__}: {exc}"
        if "RecompileLimit" in text or "recompile_limit" in text \
                or "cache_size_limit" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def recompile_advice(record=None, few="--shapes few") -> str:
    """What a report says when the recompile limit stopped the target."""
    raised = (record or {}).get("recompile_limit")
    limit = (f"torch._dynamo.config.recompile_limit (raised from {raised} to {COMPILE_ROOM} "
             "for the target's calls during the check)" if raised is not None else
             "torch._dynamo.config.recompile_limit")
    return (f"torch.compile's recompile limit, not a property of the target's numbers: the "
            f"target compiles once per input shape and dtype and hit {limit}; "
            + (f"rerun with {few} (fewer distinct shapes), " if few else "")
            + "raise torch._dynamo.config.recompile_limit in the target's module, compile "
            "with dynamic=True, or run it eagerly (heavyball: heavyball.utils.compile_mode = "
            "None)")


def stop_message(exc) -> str:
    """What every check prints for a target that hung (TargetTimeout) or exited
    (TargetAborted): the cause, the probe/step it happened in, and what to do."""
    if isinstance(exc, TargetTimeout):
        return (f"{exc}: fix the hang (a loop that never converges, a lock, a wait), or if it "
                "is only slow give it more time with --timeout SECONDS (Python: timeout=...); "
                "the call was left running in the background")
    return (f"{exc}: a function under check must return an array or raise an Exception for "
            "input it refuses; keep script code under `if __name__ == '__main__':`")


def timeout_seconds(timeout) -> float | None:
    """A user's ``timeout`` (seconds; 0 or None: no deadline) as TargetRunner takes it."""
    if timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                           and timeout == 0):
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not (timeout > 0 and timeout != float("inf")):
        raise UsageError(f"timeout must be a number of seconds >= 0 (0: no deadline), "
                         f"got {timeout!r}")
    return float(timeout)


def seconds_argument(text) -> float:
    """argparse type of every ``--timeout SECONDS`` option (0: no deadline)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timeout takes seconds, got {text!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"--timeout takes seconds >= 0, got {text!r}")
    return v


#: how long after a call's deadline the GIL watchdog ends the process: the deadline's own
#: waiter reports first whenever it can run at all
GIL_GRACE_S = 5.0
#: the exit status of a timeout (checker.EXIT_CODES["TIMEOUT"])
TIMEOUT_EXIT = 5


def _gil_watchdog(timeout: float, where: str):
    """Arm the C++ core's Watchdog for one call of the target (None without the core).

    A target can hang while *holding* the GIL -- numpy.linalg.svd keeps it while LAPACK's
    gesdd loops forever on Inf (Reference-LAPACK/lapack#1409), a regular expression
    backtracks without end -- and then no Python thread runs again: not the deadline's
    waiter, not the report.  The watchdog's thread needs no GIL: GIL_GRACE_S after the
    deadline it writes what happened to stderr and ends the process with exit 5 (TIMEOUT)
    instead of hanging with the target (docs/verification.md, "Verdicts")."""
    dog = cpp.watchdog()  # None without the compiled core
    if dog is not None:
        dog.arm(timeout + GIL_GRACE_S,
                f"swanref: TIMEOUT -- the target has not returned for {timeout + GIL_GRACE_S:g} "
                f"s (while {where}) and holds Python's GIL, so nothing else in this process can "
                "run, not even the report: the process ends with exit status "
                f"{TIMEOUT_EXIT}. A call into compiled code that never returns does this, e.g. "
                "numpy.linalg.svd on Inf input (LAPACK's gesdd loops forever, "
                "Reference-LAPACK/lapack#1409): check finiteness before the SVD, or select the "
                "other properties with --property to check the rest.", TIMEOUT_EXIT)
    return dog


class TargetRunner:
    """Runs everything that touches the target -- its import, the conversion of the input to
    its array type, the call, the conversion back -- on one worker thread (so thread-local
    state set at import, e.g. torch's grad mode, is what its calls see), and waits at most
    ``timeout`` seconds (None: no deadline, and no thread: the caller's own thread runs it).

    A call that outlives its deadline raises :class:`TargetTimeout`; one that exits or raises
    a BaseException raises :class:`TargetAborted`.  When a caller gave up on a call (a
    property with its own shorter deadline), the next call gets a fresh worker.
    """

    def __init__(self, timeout: float | None = DEFAULT_TIMEOUT_S):
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise UsageError(f"--timeout must be a number of seconds > 0, got {timeout!r}")
        self.timeout = None if timeout is None else float(timeout)
        self._lock = threading.Lock()
        self._jobs = None
        self._busy = None    # the Event of the job the worker is running, or None
        #: torch.compile limits raised for the target's calls (compile_room), for the report
        self.compile_raised = {}

    def _worker(self, jobs):
        while True:
            job = jobs.get()
            if job is None:
                return
            func, args, box, done = job
            try:
                with compile_room(self.compile_raised):
                    box["out"] = func(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["exc"] = exc
            finally:
                done.set()

    def _submit(self, job):
        with self._lock:
            if self._jobs is None or (self._busy is not None and not self._busy.is_set()):
                # first call, or the worker is still inside a call somebody gave up on
                self._jobs = queue.SimpleQueue()
                threading.Thread(target=self._worker, args=(self._jobs,), daemon=True,
                                 name="swanref-target").start()
            self._busy = job[3]
            self._jobs.put(job)

    def run(self, func, *args, where: str = "calling it"):
        """``func(*args)`` under the deadline; the target's Exceptions propagate unchanged."""
        if self.timeout is None:
            try:
                with compile_room(self.compile_raised):
                    return func(*args)
            except Exception:
                raise
            except BaseException as exc:  # SystemExit & co from the target itself
                raise TargetAborted(exc, where) from exc
        box, done = {}, threading.Event()
        dog = _gil_watchdog(self.timeout, where)
        try:
            self._submit((func, args, box, done))
            finished = done.wait(self.timeout)
        finally:
            if dog is not None:
                dog.disarm()
        if not finished:
            raise TargetTimeout(self.timeout, where)
        if "exc" in box:
            exc = box["exc"]
            if isinstance(exc, Exception):
                raise exc
            if isinstance(exc, (TargetAborted, TargetTimeout)):
                raise exc
            raise TargetAborted(exc, where) from exc
        return box["out"]

    def close(self):
        """Let an idle worker end (a hung one stays a daemon: it cannot hold the exit)."""
        with self._lock:
            if self._jobs is not None:
                self._jobs.put(None)
                self._jobs = None


class FirstCallTimer:
    """The target with its first call per (shape, dtype) timed apart from the others: for a
    JAX target that call traces and compiles (XLA caches the compiled program per shape and
    dtype), so ``first`` is the compile time and ``rest`` the run time of the repeated shapes.
    JAX dispatches asynchronously: each call waits for its result before the clock stops."""

    def __init__(self, fn):
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        self.signatures = set()
        self.first = 0.0
        self.rest = 0.0

    def __call__(self, G, *args, **kwargs):
        key = (tuple(getattr(G, "shape", ())), str(getattr(G, "dtype", "")))
        t0 = time.perf_counter()
        try:
            out = self.fn(G, *args, **kwargs)
            ready = getattr(out, "block_until_ready", None)
            if ready is not None:
                ready()
        finally:
            seconds = time.perf_counter() - t0
            if key in self.signatures:
                self.rest += seconds
            else:
                self.signatures.add(key)
                self.first += seconds
        return out
