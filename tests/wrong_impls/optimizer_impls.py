"""A small Muon-style optimizer in NumPy, faithful to one public convention per knob, with one
switch per real bug class (tests/test_optimizer_claims.py).  Float64 throughout; the
orthogonaliser is Keller's quintic (``muon_ns5``: ``X / (||X||_F + eps)``, 5 steps, wide
orientation), as KellerJordan/Muon ``zeropower_via_newtonschulz5`` writes it.

Knobs (the faithful conventions): ``eps``/``eps_form``; ``nd`` ("flattened": (shape[0], -1),
pytorch-optimizer/KellerJordan; "batched": leading axes are a batch, dion ``flatten=False``);
``stack`` for 3-D; ``nesterov_always`` (no keyword: Nesterov is always on, sutskever form);
``normalise`` ("rows": NorMuon's per-neuron rows, zichongli5/NorMuon and pytorch-optimizer;
"columns_if_wide": rows of tall, columns of wide matrices; both re-matched to ``||O||_F``; "elementwise": AdaMuon's ``O / (|O| + eps)`` re-matched to ``sqrt(min(m, n))``);
``gate`` ("cautious": heavyball/Cautious ``mask = sign(u) == sign(g)``, ``u * mask /
mean(mask)``); ``schatten`` (optax ``preconditioning='schatten'``).

Bugs: ``scale_from_kernel`` (the scale read from ``shape[-2:]`` of a conv weight: Keller's
``muon_update`` ``grad.size(-2) / grad.size(-1)``), ``rows_only`` (rows of a wide matrix
too, where columns are claimed), ``gate_no_rescale``, ``schatten_no_sqrt`` (``X / ||X X^T||_F``), ``adamuon_no_rematch``,
``conv_broadcast`` (a conv weight crashes on a broadcast), ``always_raises``, ``eps_value`` set
to another epsilon than claimed, ``flatten_3d`` (a stack flattened where batched is claimed),
``scale_from_leading`` (a batched 3-D stack scaled by its axes (0, 1): Keras 3.10's Muon).
"""
import math

import numpy as np

LR, WD = 0.1, 0.1
KELLER = (3.4445, -4.7750, 2.0315)


def ns5(G, eps=1e-7, form="add", schatten=False, schatten_no_sqrt=False):
    X = np.array(G, dtype=np.float64)
    flip = X.shape[-2] > X.shape[-1]
    if flip:
        X = np.swapaxes(X, -1, -2)
    nrm = np.linalg.norm(X, axis=(-2, -1), keepdims=True)
    if not schatten:
        X = X / (nrm + eps if form == "add" else np.maximum(nrm, eps))
    a, b, c = KELLER
    for i in range(5):
        A = X @ np.swapaxes(X, -1, -2)
        if schatten and i == 0:
            r = np.maximum(np.linalg.norm(A, axis=(-2, -1), keepdims=True), 1e-8)
            s = 1 / r if schatten_no_sqrt else 1 / np.sqrt(r)
            X, A = X * s, A * s * s
        X = a * X + (b * A + c * A @ A) @ X
    return np.swapaxes(X, -1, -2) if flip else X


def make(*, eps=1e-7, eps_form="add", nd="flattened", stack="flattened", nesterov_always=False,
         normalise="none", gate="none", schatten=False, beta2=None, **bugs):
    bad = set(bugs) - {"scale_from_kernel", "rows_only", "gate_no_rescale",
                       "schatten_no_sqrt", "adamuon_no_rematch", "conv_broadcast",
                       "always_raises", "flatten_3d", "scale_from_leading"}
    assert not bad, bad

    def update(buf, g, state):
        shape = buf.shape
        rule = stack if buf.ndim == 3 else nd
        if bugs.get("flatten_3d") and buf.ndim == 3:
            rule = "flattened"
        if buf.ndim > 2 and rule == "batched":
            V = buf.reshape((-1,) + shape[-2:])
        else:
            V = buf.reshape(shape[0], -1)
        if bugs.get("conv_broadcast") and buf.ndim == 4:
            V = V + np.ones(shape[-1])  # a bias-like vector of the kernel width: a crash
        O = ns5(V, eps, eps_form, schatten, bugs.get("schatten_no_sqrt", False))
        m, n = V.shape[-2:]
        t = state["t"] = state.get("t", 0) + 1
        if normalise in ("rows", "columns_if_wide"):
            axis = -1 if (m >= n or normalise == "rows" or bugs.get("rows_only")) else -2
            ms = np.mean(O * O, axis=axis, keepdims=True)
            if beta2 is not None:  # NorMuon: second_momentum_buffer.lerp_(mean(O^2), 1 - b2)
                ms = state["v"] = beta2 * state.get("v", 0) + (1 - beta2) * ms
            rms = np.sqrt(ms)
            N = O / rms
            O = N * (np.linalg.norm(O, axis=(-2, -1), keepdims=True)
                     / np.linalg.norm(N, axis=(-2, -1), keepdims=True))
        elif normalise == "elementwise":
            if beta2 is None:
                N = O / (np.abs(O) + 1e-10)
            else:  # AdaMuon: v.mul_(b2).addcmul_(O, O, 1 - b2); O / (sqrt(v / (1 - b2^t)) + eps)
                v = state["v"] = beta2 * state.get("v", 0) + (1 - beta2) * O * O
                N = O / (np.sqrt(v / (1 - beta2 ** t)) + 1e-10)
            O = N if bugs.get("adamuon_no_rematch") else \
                N * (math.sqrt(min(m, n)) / np.linalg.norm(N, axis=(-2, -1), keepdims=True))
        if bugs.get("scale_from_kernel") and buf.ndim == 4:
            m, n = shape[-2:]
        if bugs.get("scale_from_leading") and buf.ndim == 3:
            m, n = shape[:2]  # Keras 3.10's Muon: max(1, shape[0] / shape[1]) on a batch
        U = (O * math.sqrt(max(1.0, m / n))).reshape(shape)
        if gate == "cautious":
            mask = (U * g > 0).astype(np.float64)
            U = U * mask if bugs.get("gate_no_rescale") else U * mask / max(mask.mean(), 1e-3)
        return U

    def run(p0, grads, mu, nesterov=False, group=False):
        if group:
            per = [run(p, [gs[i] for gs in grads], mu) for i, p in enumerate(p0)]
            return [[per[i][t] for i in range(len(p0))] for t in range(len(grads))]
        if bugs.get("always_raises"):
            raise ValueError("this optimizer's step is broken")
        if nesterov and not nesterov_always:
            raise TypeError("unexpected keyword argument 'nesterov'")
        if np.iscomplexobj(p0) or np.ndim(p0) < 2:
            raise ValueError("only real matrices are supported")
        p = np.array(p0, dtype=np.float64)
        buf, out, state = np.zeros_like(p), [], {}
        for g in grads:
            buf = mu * buf + (1 - mu) * g
            u = (1 - mu) * g + mu * buf if nesterov_always else buf
            p = p * (1 - LR * WD) - LR * update(u, g, state)
            out.append(p.copy())
        return out
    return run
