"""Zero glue for ``swanref check-optimizer``: any ``torch.optim`` optimizer class, optax
``GradientTransformation`` factory or Keras 3 optimizer class, named by import path, with typed
keyword arguments.

:func:`parse_value` reads a ``--kwarg`` value (a Python literal, a dotted name such as
``torch.float64``, or a call of a dotted name on a literal such as ``jnp.array([[3.4, -4.7,
2.0]])``); :func:`generic_driver` builds the driver ``run(p0, grads, momentum, nesterov=False,
group=False)`` of :mod:`swanref.verify.optimizer` for the target, finding its learning-rate,
weight-decay, momentum and Nesterov keywords from its signature and how it wants its
parameters (a plain list, a group with ``use_muon=True``, named parameters, a ``muon_params=``
keyword); :func:`validated` checks what a driver returns (docs/optimizers.md, "Zero glue").
"""
from __future__ import annotations

import ast
import importlib
import inspect

import numpy as np

from swanref.verify.targets import TargetRunner, UsageError, load_target

__all__ = ["parse_value", "parse_kwarg", "generic_driver", "validated", "DriverError",
           "Unsupported", "KNOB_NAMES", "PARAM_STYLES", "Deadline"]


class Deadline:
    """Every construction and step of the optimizer under the user's deadline (``--timeout``):
    the calls run on a :class:`~swanref.verify.targets.TargetRunner`, and a hang raises
    TargetTimeout naming the property (``probe``, set by the check) and the step."""

    def __init__(self, runner: TargetRunner | None):
        self.runner = runner
        self.probe = "the check"

    def call(self, func, *args, what="calling it"):
        if self.runner is None:
            return func(*args)
        return self.runner.run(func, *args, where=f"{self.probe}: {what}")


def _direct(func, *args, what=""):
    return func(*args)


class Unsupported(Exception):
    """The optimizer refused this parameter (at construction or step)."""


class DriverError(Exception):
    """A driver returned something that is not a parameter per step (or the glue could not
    build the optimizer at all): an error of the check's set-up, never a finding."""


#: keyword names real optimizers use for each knob, in the order they are tried
KNOB_NAMES = {
    "lr": ("lr", "learning_rate"),
    "weight_decay": ("weight_decay", "wd", "weight_decay_rate", "decoupled_weight_decay"),
    "momentum": ("momentum", "beta", "mu", "beta1", "b1", "momentum_beta", "betas"),
    "nesterov": ("nesterov", "use_nesterov"),
}
#: how parameters reach the constructor of a torch optimizer (``--params``)
PARAM_STYLES = ("auto", "list", "use_muon", "named", "group:KEY=VALUE[,KEY=VALUE]",
                "kwarg:NAME")


# -- typed values ------------------------------------------------------------------------------

def _resolve_dotted(text: str):
    """``torch.float64`` / ``jax.numpy.bfloat16`` / ``np.float32`` -> the object, or raise."""
    alias = {"np": "numpy", "jnp": "jax.numpy"}
    parts = text.split(".")
    parts[0] = alias.get(parts[0], parts[0])
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(f"no module in {text!r}")


def parse_value(text: str):
    """A ``--kwarg`` value: a Python literal (``5``, ``1e-7``, ``True``, ``(0.9, 0.95)``,
    ``[[3.4, -4.7, 2.0]]``, ``None``); a dotted name of an importable object (``torch.float64``,
    ``jnp.bfloat16``, ``module:attr`` for a function); or a dotted callable applied to one
    literal (``torch.tensor([1.0, 2.0])``, ``jnp.array([[3.4, -4.7, 2.0]])``,
    ``np.array(...)``).  Anything else stays the string."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    s = text.strip()
    if ":" in s and "(" not in s and " " not in s:  # module:attr, e.g. a callable knob
        try:
            return load_target(s) if not s.endswith(":") else s
        except UsageError:
            return text
    head, paren, rest = s.partition("(")
    if paren and rest.endswith(")") and head.replace(".", "").replace("_", "").isalnum() \
            and "." in head:
        try:
            fn = _resolve_dotted(head)
            arg = ast.literal_eval(rest[:-1])
        except (ImportError, AttributeError, ValueError, SyntaxError):
            return text
        if callable(fn):
            return fn(arg)
        return text
    if "." in s and s.replace(".", "").replace("_", "").isalnum() and not s[0].isdigit():
        try:
            return _resolve_dotted(s)
        except (ImportError, AttributeError):
            return text
    return text


def parse_kwarg(text: str):
    """``name=value`` -> (name, typed value) (:func:`parse_value`)."""
    name, sep, value = str(text).partition("=")
    if not sep or not name.isidentifier():
        raise UsageError(f"--kwarg takes name=value, got {text!r}")
    return name, parse_value(value)


# -- the generic driver ------------------------------------------------------------------------

def signature_of(target):
    """The call's signature (a Keras optimizer instance: its class's constructor), or None."""
    if not inspect.isclass(target) and _is_keras_optimizer(target):
        target = type(target)
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def keyword_for(sig, knob, user):
    """The keyword the target takes for ``knob`` (None if none; a user kwarg wins)."""
    for name in KNOB_NAMES[knob]:
        if name in user:
            return name
    if sig is None:
        return None
    for name in KNOB_NAMES[knob]:
        if name in sig.parameters:
            return name
    return None


def _default(sig, name):
    if sig is None or name is None or name not in sig.parameters:
        return None
    d = sig.parameters[name].default
    return None if d is inspect.Parameter.empty else d


def _is_torch_optimizer(target) -> bool:
    if inspect.isclass(target):
        return any(c.__module__.startswith("torch.optim") and c.__name__ == "Optimizer"
                   for c in inspect.getmro(target))
    return False


def _is_keras_optimizer(target) -> bool:
    """A Keras 3 optimizer class or instance (``keras.optimizers.Optimizer`` in its MRO; Keras
    is not imported here: a class from a ``keras`` module named ``Optimizer``/``BaseOptimizer``
    is enough)."""
    cls = target if inspect.isclass(target) else type(target)
    return any(c.__module__.split(".")[0] == "keras" and c.__name__ in ("Optimizer",
                                                                        "BaseOptimizer")
               for c in inspect.getmro(cls))


def _first_param(sig):
    if sig is None:
        return None
    names = [n for n, p in sig.parameters.items()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[0] if names else None


def target_kind(target) -> str:
    """'torch' (a torch.optim.Optimizer subclass, or anything whose first argument is the
    parameters), 'keras' / 'keras_instance' (a Keras 3 optimizer class / instance) or 'optax'
    (a factory returning a GradientTransformation)."""
    if _is_torch_optimizer(target):
        return "torch"
    if _is_keras_optimizer(target):
        return "keras" if inspect.isclass(target) else "keras_instance"
    first = _first_param(signature_of(target))
    if first in ("params", "param_groups", "named_params", "parameters", "model_params"):
        return "torch"
    if hasattr(target, "init") and hasattr(target, "update"):
        return "optax_instance"
    return "optax"


def _parse_style(style):
    if style in ("auto", "list", "use_muon", "named"):
        return style, None
    kind, _, rest = str(style).partition(":")
    if kind == "kwarg" and rest.isidentifier():
        return "kwarg", rest
    if kind == "group" and rest:
        extra = {}
        for item in rest.split(","):
            k, sep, v = item.partition("=")
            if not sep or not k.isidentifier():
                break
            extra[k] = parse_value(v)
        else:
            return "group", extra
    raise UsageError(f"--params must be one of {', '.join(PARAM_STYLES)}, got {style!r}")


def _pack(style, extra, ps):
    """(positional params argument or None, extra keywords) for parameter style ``style``."""
    if style == "list":
        return list(ps), {}
    if style == "use_muon":
        return [dict(params=list(ps), use_muon=True)], {}
    if style == "named":
        return [(f"p{i}", p) for i, p in enumerate(ps)], {}
    if style == "group":
        return [dict(params=list(ps), **extra)], {}
    return None, {extra: list(ps)}  # kwarg: e.g. Moonlight's muon_params=


def _convention_hint(exc) -> str | None:
    """The parameter style an error message asks for, if it names one."""
    text = f"{type(exc).__name__}: {exc}"
    if "use_muon" in text:
        return "use_muon"
    if "named" in text.lower() and ("param" in text.lower() or "tuple" in text.lower()):
        return "named"
    return None


def _dtypes(p0, dtype):
    """(array dtype, read-back dtype) for p0: complex values take the complex counterpart."""
    if np.iscomplexobj(p0):
        return (np.complex128 if np.dtype(dtype) == np.float64 else np.complex64), np.complex128
    return np.dtype(dtype), np.float64


def _optax_step(tx, grads, state, params):
    import jax
    upd, state = tx.update(grads, state, params)
    for leaf in jax.tree_util.tree_leaves(upd):  # JAX dispatches asynchronously: wait here
        ready = getattr(leaf, "block_until_ready", None)
        if ready is not None:
            ready()
    return upd, state


def optax_steps(tx, p0s, steps, dtype, group, deadline=None):
    """Run optax transformation ``tx`` from parameters ``p0s`` (leaves ``w0``, ``w1``, ... of
    one params dict) through ``steps`` (per step, one gradient per leaf) in ``dtype``; the
    parameters after each step in float64 (complex128 for complex input): a list per step when
    ``group``, else the one leaf's array.  ``deadline`` (a :class:`Deadline`): ``init`` and
    each ``update`` run under it."""
    import jax.numpy as jnp
    import optax
    dt, back = _dtypes(p0s[0], dtype)
    keys = [f"w{i}" for i in range(len(p0s))]
    call = deadline.call if deadline is not None else _direct
    params = {k: jnp.asarray(np.array(x, dtype=dt)) for k, x in zip(keys, p0s)}
    state = call(tx.init, params, what="tx.init(params)")
    out = []
    for t, gs in enumerate(steps):
        grads = {k: jnp.asarray(np.array(g, dtype=dt)) for k, g in zip(keys, gs)}
        upd, state = call(_optax_step, tx, grads, state, params,
                          what=f"step {t + 1} of {len(steps)} (tx.update)")
        params = optax.apply_updates(params, upd)
        now = [np.asarray(params[k]).astype(back) for k in keys]
        out.append(now if group else now[0])
    return out


def torch_steps(build, p0s, steps, dtype, group, deadline=None):
    """Run the torch optimizer ``build(params)`` from parameters ``p0s`` through ``steps`` (per
    step, one gradient per parameter) in ``dtype``; the parameters after each step as
    :func:`optax_steps` returns them; the construction and each step under ``deadline``."""
    import torch
    dt, back = _dtypes(p0s[0], dtype)
    ps = [torch.nn.Parameter(torch.from_numpy(np.array(x, dtype=dt))) for x in p0s]
    call = deadline.call if deadline is not None else _direct
    opt = call(build, ps, what="constructing the optimizer")
    out = []
    for t, gs in enumerate(steps):
        for p, g in zip(ps, gs):
            p.grad = torch.from_numpy(np.array(g, dtype=dt))
        call(opt.step, what=f"step {t + 1} of {len(steps)} (optimizer.step())")
        now = [p.detach().numpy().astype(back) for p in ps]
        out.append(now if group else now[0])
    return out


def keras_steps(build, p0s, steps, dtype, group, deadline=None):
    """Run the Keras 3 optimizer ``build()`` on ``keras.Variable`` parameters ``w0``, ``w1``,
    ... made from ``p0s``, one ``apply_gradients`` per step, on whatever backend Keras was
    loaded with (``KERAS_BACKEND``); the parameters after each step as :func:`optax_steps`
    returns them.  A backend that stores another dtype than asked (float64 on JAX without
    ``jax_enable_x64``) is refused: the check would judge float32 arithmetic as float64."""
    import keras
    dt, back = _dtypes(p0s[0], dtype)
    call = deadline.call if deadline is not None else _direct
    dt = np.dtype(dt)
    vs = [keras.Variable(np.array(x, dtype=dt), dtype=dt.name, name=f"w{i}")
          for i, x in enumerate(p0s)]
    held = np.dtype(keras.ops.convert_to_numpy(vs[0].value).dtype)
    if held != dt:
        raise Unsupported(f"Keras ({keras.backend.backend()} backend) stores a {dt.name} "
                          f"variable as {held.name}")
    opt = call(build, what="constructing the optimizer")
    out = []
    for t, gs in enumerate(steps):
        grads = [keras.ops.convert_to_tensor(np.array(g, dtype=dt)) for g in gs]
        call(opt.apply_gradients, list(zip(grads, vs)),
             what=f"step {t + 1} of {len(steps)} (optimizer.apply_gradients)")
        now = [np.asarray(keras.ops.convert_to_numpy(v.value)).astype(back) for v in vs]
        out.append(now if group else now[0])
    return out


def _first_line(exc):
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:200]}"


def generic_driver(target, kwargs=None, *, lr, weight_decay, params="auto", dtype="float32",
                   claimed=(), deadline=None):
    """A driver ``run(p0, grads, momentum, nesterov=False, group=False)`` for ``target``: a
    ``torch.optim.Optimizer`` class (or any callable taking the parameters first) or an optax
    factory returning a ``GradientTransformation``.  ``kwargs`` are passed on every build;
    ``lr`` / ``weight_decay`` go to the keyword the signature has (``lr``/``learning_rate``,
    ``weight_decay``/``wd``/...) unless ``kwargs`` sets it; the momentum to ``momentum``/
    ``beta``/``betas[0]``/..., Nesterov to ``nesterov``/``use_nesterov``.

    ``run.knobs`` tells the check which knobs could be set (``momentum``, ``nesterov``: the
    keyword or None) and ``run.kind`` the target's kind; ``run.style`` the parameter style found
    (``auto`` tries a plain list, then a group with ``use_muon=True`` or named parameters when
    the error asks for them, and ``muon_params=`` when the signature has that keyword)."""
    user = dict(kwargs or {})
    kind = target_kind(target)
    sig = signature_of(target)
    knobs = {k: keyword_for(sig, k, user) for k in KNOB_NAMES}
    for k, v in (("lr", lr), ("weight_decay", weight_decay)):
        if knobs[k] is None and v and k not in claimed:
            raise UsageError(f"{getattr(target, '__name__', target)!r} takes no {k} keyword "
                             f"(tried {', '.join(KNOB_NAMES[k])}); pass it with --kwarg "
                             f"NAME=VALUE under its own name and claim the value with --set {k}=...")
    style, extra = _parse_style(params)
    if kind == "torch" and style == "auto" and sig is not None and "muon_params" in \
            sig.parameters:
        style, extra = "kwarg", "muon_params"
    state = {"style": style, "extra": extra}

    def build_kwargs(momentum, nesterov):
        kw = {}
        if knobs["lr"] and knobs["lr"] not in user:
            kw[knobs["lr"]] = lr
        if knobs["weight_decay"] and knobs["weight_decay"] not in user:
            kw[knobs["weight_decay"]] = weight_decay
        m = knobs["momentum"]
        if m and m not in user:
            if m == "betas":
                b = _default(sig, "betas") or (momentum, 0.999)
                kw[m] = (momentum,) + tuple(b)[1:]
            else:
                kw[m] = momentum
        elif m == "betas" and m in user:  # the user's betas, with the probe's momentum first
            kw[m] = (momentum,) + tuple(user[m])[1:]
        n = knobs["nesterov"]
        if nesterov and n is None:
            raise Unsupported("the optimizer has no Nesterov keyword (tried "
                              f"{', '.join(KNOB_NAMES['nesterov'])}); claim "
                              "nesterov=always if it is always on")
        if n and n not in user:
            kw[n] = bool(nesterov)
        return {**user, **kw}

    def torch_build(ps, momentum, nesterov):
        kw = build_kwargs(momentum, nesterov)
        pos, more = _pack(state["style"] if state["style"] != "auto" else "list",
                          state["extra"], ps)
        return target(pos, **kw, **more) if pos is not None else target(**kw, **more)

    def torch_run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])

        def attempt():
            return torch_steps(lambda ps: torch_build(ps, momentum, nesterov), p0s, steps,
                               dtype, group, deadline)
        try:
            out = attempt()
            if state["style"] == "auto":  # a plain list works: keep it for every later run
                state["style"] = "list"
            return out
        except Unsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding, unless a convention
            if state["style"] != "auto":
                raise Unsupported(_first_line(exc)) from exc
            hint = _convention_hint(exc)
            tried = []
            for style in ([hint] if hint else []) + [s for s in ("use_muon", "named")
                                                      if s != hint]:
                state["style"] = style
                try:
                    out = attempt()
                except Exception as exc2:  # noqa: BLE001
                    tried.append(f"{style!r}: {_first_line(exc2)}")
                    continue
                return out  # this style works: keep it for every later run
            state["style"] = "list"
            raise Unsupported(_first_line(exc) + " (parameters passed as a list; also tried "
                              + "; ".join(tried) + "; choose with --params)") from exc

    def optax_run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])
        try:
            tx = target if kind == "optax_instance" else _call(
                target, build_kwargs(momentum, nesterov), what="constructing the "
                "transformation")
            if not (hasattr(tx, "init") and hasattr(tx, "update")):
                raise DriverError(f"{getattr(target, '__name__', target)!r} returned "
                                  f"{type(tx).__name__}, not an optax GradientTransformation "
                                  "nor a torch optimizer")
            out = optax_steps(tx, p0s, steps, dtype, group, deadline)
        except (Unsupported, DriverError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise Unsupported(_first_line(exc)) from exc
        return out

    def keras_build(momentum, nesterov):
        kw = build_kwargs(momentum, nesterov)
        if kind == "keras":
            return target(**kw)
        # an instance: a fresh copy per run (Keras binds its state to the first variables it
        # sees), its configuration with the probe's settings on top
        return type(target).from_config({**target.get_config(), **kw})

    def keras_run(p0, grads, momentum, nesterov=False, group=False):
        p0s, steps = (p0, grads) if group else ([p0], [[g] for g in grads])
        try:
            return keras_steps(lambda: keras_build(momentum, nesterov), p0s, steps, dtype,
                               group, deadline)
        except (Unsupported, DriverError):
            raise
        except Exception as exc:  # noqa: BLE001 - a refusal is a finding (crashes: the check)
            raise Unsupported(_first_line(exc)) from exc

    def _call(fn, kw, what):
        return (deadline.call if deadline is not None else _direct)(
            lambda: fn(**kw), what=what)

    run = {"torch": torch_run, "keras": keras_run, "keras_instance": keras_run}.get(
        kind, optax_run)
    run.deadline = deadline
    run.knobs = knobs
    run.kind = kind
    run.state = state
    run.momentum_default = _default(sig, knobs["momentum"])
    return run


# -- what a driver returns -----------------------------------------------------------------------

def validated(out, p0, n_steps, group=False):
    """``out`` as a list of ``n_steps`` float64/complex128 arrays of ``p0``'s shape (a list of
    such lists for a group), or :class:`DriverError` saying what the driver returned."""
    if out is None:
        raise DriverError("the driver returned None; it must return the parameter after each "
                          "step (a list with one array per gradient)")
    if isinstance(out, np.ndarray) and not group and out.ndim == np.ndim(p0) + 1:
        out = list(out)
    if not isinstance(out, (list, tuple)):
        raise DriverError(f"the driver returned {type(out).__name__}; it must return a list "
                          f"with the parameter after each of the {n_steps} steps")
    if len(out) != n_steps:
        raise DriverError(f"the driver returned {len(out)} step(s) for {n_steps} gradient(s); "
                          "it must return the parameter after every step")
    shapes = [np.shape(x) for x in p0] if group else None
    res = []
    for t, x in enumerate(out):
        if group:
            if not isinstance(x, (list, tuple)) or len(x) != len(p0):
                raise DriverError(f"step {t + 1}: the driver did not return one array per "
                                  f"parameter of the group ({len(p0)})")
            res.append([_one(y, s, t) for y, s in zip(x, shapes)])
        else:
            res.append(_one(x, np.shape(p0), t))
    return res


def _one(x, shape, t):
    if x is None:
        raise DriverError(f"step {t + 1}: the driver returned None for the parameter")
    try:
        a = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - a foreign object
        raise DriverError(f"step {t + 1}: the driver returned {type(x).__name__}, not an "
                          f"array ({_first_line(exc)})") from exc
    if a.dtype.kind not in "fciu":
        raise DriverError(f"step {t + 1}: the driver returned an array of dtype {a.dtype}, "
                          "not numbers")
    if a.shape != tuple(shape):
        raise DriverError(f"step {t + 1}: the driver returned shape {a.shape} for a parameter "
                          f"of shape {tuple(shape)}")
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def load_optimizer(spec: str):
    """``pkg.module:Class`` (or ``file.py:factory``) -> the object (UsageError otherwise)."""
    return load_target(spec)
