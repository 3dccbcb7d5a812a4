"""Real bugs from public trackers, each as a pair: the code before the fix (``*_bug``) and after
it (``*_fix``), transcribed to NumPy from the commit or pull request named in the docstring.

Small and faithful: the line the fix changed is kept as the source wrote it; everything around
it is the source's convention (normalisation, table, orientation, precision).  Low precision is
emulated as PyTorch eager rounds it (products accumulate in float32 and round once, element-wise
operations round once).  tests/test_real_bugs.py checks each pair under the claim a user of that
code would write: the fix conforms, the bug does not, and the named cause is the bug's.
No swanref imports besides its rounding helper (the pairs are written from the sources).
"""
from __future__ import annotations

import numpy as np

from swanref.presets.lowprec import round_to

KELLER = (3.4445, -4.7750, 2.0315)


def _wide(X):
    tall = X.shape[-2] > X.shape[-1]
    return (np.swapaxes(X, -1, -2) if tall else X), tall


def _back(X, tall):
    return np.swapaxes(X, -1, -2) if tall else X


def _fro(X):
    return np.sqrt(np.sum(np.abs(X) ** 2, axis=(-2, -1), keepdims=True))


# == NVIDIA-NeMo/Emerging-Optimizers muon_utils.newton_schulz (float32, F.normalize, addmm) =====

#: _COEFFICIENT_SETS["polar_express"] before ba5196b (#74, issue #73: "Current coefficient
#: mismatch those in origin paper")
NEMO_PE_BEFORE_74 = (
    (7.2086, -15.5131, 9.0178), (3.9623, -2.5813, 0.4542), (3.9466, -2.5765, 0.4544),
    (3.8991, -2.5671, 0.4566), (3.7186, -2.5308, 0.4653), (3.1390, -2.3073, 0.4733),
    (2.1715, -1.5246, 0.3885), (1.8648, -1.2224, 0.3577),
)
#: ... and after it (what main still has)
NEMO_PE = (
    (8.2051, -22.9019, 16.4607), (4.0664, -2.8612, 0.5184), (3.9096, -2.8234, 0.5250),
    (3.2856, -2.4153, 0.4853), (2.2779, -1.6198, 0.3985), (1.8726, -1.2307, 0.3585),
    (1.8564, -1.2132, 0.3568), (1.8750, -1.2500, 0.3750),
)


def _nemo(x, steps, table, eps, mode="repeat_last"):
    """newton_schulz(x, steps, coefficient_type='polar_express'): float32 only, transpose tall
    input, X = F.normalize(x, dim=(-2, -1), eps) = x / max(||x||_F, eps), then per step
    A = X X^T; B = addmm(A, A, A, beta=b, alpha=c); X = addmm(X, B, X, beta=a)."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"Input tensor x must be in float32, got {x.dtype}")
    X, tall = _wide(x)
    X = (X / np.maximum(_fro(X), np.float32(eps))).astype(np.float32)
    if mode == "cycle":
        sched = [table[i % len(table)] for i in range(steps)]
    else:
        sched = list(table[:steps]) + [table[-1]] * max(0, steps - len(table))
    for a, b, c in sched:
        A = X @ np.swapaxes(X, -1, -2)
        B = np.float32(b) * A + np.float32(c) * (A @ A)
        X = np.float32(a) * X + B @ X
    return _back(X, tall)


def nemo_eps_bug(x):
    """Emerging-Optimizers before 7ebd3cf (PR #230, issue #229): F.normalize eps=1e-7, so an
    input with ||x||_F < 1e-7 is divided by 1e-7 and the iteration "silently degenerates"."""
    return _nemo(x, 5, NEMO_PE, 1e-7)


def nemo_eps_fix(x):
    """7ebd3cf: eps lowered to 1e-15 ("fp32-safe: 1e-15**2 is a normal float32")."""
    return _nemo(x, 5, NEMO_PE, 1e-15)


def nemo_table_bug(x):
    """Before ba5196b (#74, issue #73): the polar_express table did not match the paper
    (8 steps: the source required steps to be a multiple of the table's length)."""
    return _nemo(x, 8, NEMO_PE_BEFORE_74, 1e-7)


def nemo_table_fix(x):
    """ba5196b: the paper's table (to 4 decimals)."""
    return _nemo(x, 8, NEMO_PE, 1e-7)


def nemo_cycle_bug(x):
    """Before bd8aae3 (#94; issue #90, PR #91: "the Polar Express paper recommends that for
    steps greater than 8, we repeat the last set of (a,b,c)"): coefficient_sets[i % 8]."""
    return _nemo(x, 16, NEMO_PE, 1e-7, mode="cycle")


def nemo_cycle_fix(x):
    """bd8aae3: polar_express iterates with mode='repeat_last'."""
    return _nemo(x, 16, NEMO_PE, 1e-7, mode="repeat_last")


# == google-deepmind/optax contrib/_muon.py, complex parameters ===============================

def _optax(x, conj, eps=1e-8, steps=5):
    """orthogonalize_via_newton_schulz (ns_coeffs 'standard', preconditioning 'frobenius') in
    the input dtype: transpose tall, x /= ||x||_F + eps, then _newton_schulz_iterator."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"Input must have shape (m, n), got shape={x.shape}")
    X, tall = _wide(x)
    X = X / (np.linalg.norm(X) + eps)
    a, b, c = KELLER
    for _ in range(steps):
        A = X @ (X.T.conj() if conj else X.T)
        B = b * A + c * A @ A
        X = a * X + B @ X
    return _back(X, tall)


def optax_conj_bug(x):
    """Before 17e3e7ae (PR #1506, issue #1494): ``a = x @ x.T`` -- for complex x not the
    Hermitian Gram matrix, so complex parameters are not orthogonalised."""
    return _optax(x, conj=False)


def optax_conj_fix(x):
    """17e3e7ae: ``a = x @ x.T.conj()``."""
    return _optax(x, conj=True)


# == deepspeedai/DeepSpeed runtime/zero/muon/original_muon.py ===================================

def _r(x, fmt):
    return round_to(np.asarray(x, np.float32), fmt).astype(np.float32)


def _mm(A, B, fmt):
    return _r(np.matmul(A, B, dtype=np.float32), fmt)


def _gram_ns_fp16(X, steps=5, restart_at=2, fmt="float16"):
    """zeropower_via_gram_newtonschulz's iteration on a normalised wide X in float16:
    standard quintic for square X, else the Gram form with a restart at step 2."""
    a, b, c = (np.float32(v) for v in KELLER)
    n, m = X.shape[-2:]
    if m <= n:
        for _ in range(steps):
            A = _mm(X, np.swapaxes(X, -1, -2), fmt)
            B = _r(_r(b * A, fmt) + _mm(_r(c * A, fmt), A, fmt), fmt)
            X = _r(_r(a * X, fmt) + _mm(B, X, fmt), fmt)
        return X
    R = _mm(X, np.swapaxes(X, -1, -2), fmt)
    Q = None
    eye = np.eye(n, dtype=np.float32)
    for i in range(steps):
        if i == restart_at and i != 0:
            X = _mm(Q, X, fmt)
            R = _mm(X, np.swapaxes(X, -1, -2), fmt)
            Q = None
        Z = _r(_r(b * R, fmt) + _mm(_r(c * R, fmt), R, fmt), fmt)
        if Q is None:
            Q = _r(Z + a * eye, fmt)
        else:
            Q = _r(_r(a * Q, fmt) + _mm(Z, Q, fmt), fmt)
        if i < steps - 1 and (i + 1) != restart_at:
            RZ = _r(_r(a * R, fmt) + _mm(Z, R, fmt), fmt)
            R = _r(_r(a * RZ, fmt) + _mm(Z, RZ, fmt), fmt)
    return _mm(Q, X, fmt)


def deepspeed_gram_bug(G):
    """(Returned in G's dtype, as muon_update's ``update.to(orig_dtype)``.)
    zeropower_via_gram_newtonschulz before PR #8533: ``X = G.to(float16)``, then
    ``X / (X.norm() + 1e-7)`` in float16.  "fp16 stops at 65504, so a finite fp32 gradient
    under a loss scale arrived at the iteration as inf, normalized to nan" (or a norm that
    overflows: every entry divided by inf)."""
    X, tall = _wide(_r(G, "float16"))
    nrm = _r(np.sqrt(np.sum(X.astype(np.float64) ** 2, axis=(-2, -1), keepdims=True)),
             "float16")
    X = _r(X / _r(nrm + np.float32(1e-7), "float16"), "float16")
    return _back(_gram_ns_fp16(X), tall).astype(np.asarray(G).dtype)  # muon_update: orig_dtype


def deepspeed_gram_fix(G):
    """PR #8533: "Normalize first, then cast: fp16 inputs normalize in fp32 and come back to
    fp16"; the iteration is unchanged."""
    X, tall = _wide(np.asarray(G, np.float32))
    nrm = np.sqrt(np.sum(X.astype(np.float64) ** 2, axis=(-2, -1), keepdims=True))
    X = _r(X / (np.float32(nrm) + np.float32(1e-7)), "float16")
    return _back(_gram_ns_fp16(X), tall).astype(np.asarray(G).dtype)


def _keller_f64(U):
    X, tall = _wide(np.asarray(U, np.float64))
    X = X / (_fro(X) + 1e-7)
    a, b, c = KELLER
    for _ in range(5):
        A = X @ np.swapaxes(X, -1, -2)
        X = a * X + (b * A + c * A @ A) @ X
    return _back(X, tall)


def deepspeed_conv_bug(grad):
    """muon_update (standard route, float64 for the check) before PR #8552: a conv gradient is
    viewed as (out, -1) and orthogonalised, but the scale reads the kernel's last two axes
    ``max(1, grad.size(-2) / grad.size(-1))**0.5`` (kh/kw) and the update keeps the flattened
    shape ("The aspect-ratio correction also reads the kernel dimensions instead of the
    flattened matrix")."""
    grad = np.asarray(grad)
    update = grad.reshape(len(grad), -1) if grad.ndim == 4 else grad
    update = _keller_f64(update)
    update = update * max(1, grad.shape[-2] / grad.shape[-1]) ** 0.5
    return update.astype(grad.dtype)


def deepspeed_conv_fix(grad):
    """PR #8552: the scale from the matrix orthogonalised, the original shape restored."""
    grad = np.asarray(grad)
    update = grad.reshape(len(grad), -1) if grad.ndim == 4 else grad
    update = _keller_f64(update) * max(1, update.shape[-2] / update.shape[-1]) ** 0.5
    return update.reshape(grad.shape).astype(grad.dtype)


# == microsoft/dion normuon.py normuon_normalization (fresh buffer, neutral step) ===============

def _normuon(U, beta2, safe):
    """Keller's orthogonaliser, then normuon_normalization on a fresh V (zeros): V lerps to
    (1 - beta2) * row mean of U^2, U / (sqrt(V) + 1e-8), then the Frobenius norm restored by
    ||U||_F / ||U_new||_F (dion 2971bba)."""
    G = np.asarray(U)
    if G.ndim != 2:
        raise ValueError("2-D gradients only")
    O = _keller_f64(G)
    V = (1 - beta2) * np.mean(O * O, axis=-1, keepdims=True)
    N = O / (np.sqrt(V) + 1e-8)
    norm_new = np.linalg.norm(N)
    if safe:
        norm_new = max(norm_new, 1e-8)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (N * (np.linalg.norm(O) / norm_new)).astype(G.dtype)


def dion_normuon_bug(U):
    """Before 2971bba (PR #24): ``ratio = norm_U / norm_U_new`` -- 0/0 = NaN when the gradient
    is zero ("zero-initialized output projection layers")."""
    return _normuon(U, 0.95, safe=False)


def dion_normuon_fix(U):
    """2971bba: ``norm_U_new.clamp(min=1e-8)`` before the ratio."""
    return _normuon(U, 0.95, safe=True)


# == pytorch/pytorch torch/optim/_muon.py _zeropower_via_newtonschulz (in-place on an alias) =====

def _torch_muon_orth(grad, copy):
    """The orthogonaliser in its compute dtype (float64 for the check): ``X = grad.bfloat16()``
    is ``grad`` itself when grad already has that dtype; then ``X.div_(X.norm().clamp(min=eps))``
    and the addmm steps, 2-D only, transposed to wide."""
    grad = np.asarray(grad)
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    X = grad.astype(np.float64, copy=copy)   # torch: grad.bfloat16() (no copy if already bf16)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T                              # a view, as X.T in torch
    X /= max(np.linalg.norm(X), 1e-7)        # div_: in place, through the alias
    a, b, c = KELLER
    for _ in range(5):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return (X.T if tall else X).astype(grad.dtype)


def torch_alias_bug(grad):
    """pytorch/pytorch PR #190597 review: "grad.bfloat16() returns grad itself when grad is
    already bf16, and the div_ below is in place. With nesterov=False the caller passes the
    momentum buffer directly, so the optimizer state was normalized on every step."""
    return _torch_muon_orth(grad, copy=False)


def torch_alias_fix(grad):
    """The review's fix: normalise a copy (out of place), the caller's tensor untouched."""
    return _torch_muon_orth(grad, copy=True)


# == deepspeedai/DeepSpeed Muon at ZeRO stage 0 (issue #8441, PR #8442) ========================

def deepspeed_stage0_bug(grad):
    """Issue #8441: "{"optimizer": {"type": "Muon"}} with no zero_optimization block trains with
    SGD. Newton-Schulz never runs" -- the parameter's update (a neutral momentum step) is the
    gradient itself."""
    return np.array(grad, copy=True)


def deepspeed_stage0_fix(grad):
    """PR #8442: stage 0 runs muon_update (Keller's orthogonaliser, float64 for the check;
    scale max(1, m/n)**0.5 of the 2-D gradient)."""
    grad = np.asarray(grad)
    if grad.ndim != 2:
        raise ValueError("2-D parameters only (N-D ones go to AdamW)")
    return (_keller_f64(grad) * max(1, grad.shape[-2] / grad.shape[-1]) ** 0.5).astype(grad.dtype)
