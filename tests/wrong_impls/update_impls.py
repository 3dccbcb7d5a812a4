"""A faithful NumPy transcription of a Muon-style update and one wrong variant per bug class.

The faithful update (Keller's quintic, spec section 9 conventions): reshape (out, *in) to
(out, prod(in)), rescale by an exact power of two, normalise X / (||X||_F + 1e-7), five
quintic steps on the wide orientation, scale sqrt(max(1, m/n)), reshape back, same dtype.
Written independently of swanref so that the check compares two transcriptions.
"""
import numpy as np

KELLER = (3.4445, -4.7750, 2.0315)
YOU = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
       (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012))


def _h(X, conj=True):
    Xt = np.swapaxes(X, -1, -2)
    return Xt.conj() if conj else Xt


def pow2(M):
    amax = np.max(np.abs(M), axis=(-2, -1), keepdims=True)
    e = np.frexp(np.where(amax > 0, amax, 1.0))[1]
    return (M * np.ldexp(1.0, -e)).astype(M.dtype)


def ns5(X, coeffs=(KELLER,) * 5, eps=1e-7, conj=True):
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = np.swapaxes(X, -1, -2)
    X = X / (np.linalg.norm(X, axis=(-2, -1), keepdims=True) + eps)
    for a, b, c in coeffs:
        A = X @ _h(X, conj)
        B = b * A + (c * A) @ A
        X = a * X + B @ X
    if tall:
        X = np.swapaxes(X, -1, -2)
    return X


def keller_scale(m, n):
    return max(1.0, m / n) ** 0.5


def faithful(G):
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return (ns5(pow2(M)) * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


def faithful_stack(G):
    G = np.asarray(G)
    M = G.reshape(G.shape[0], G.shape[1], -1)
    m, n = M.shape[-2:]
    return (ns5(pow2(M)) * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


# -- wrong, one mistake each ------------------------------------------------------------------

def scale_from_kernel_axes(G):
    """Scale read from G.size(-2)/G.size(-1) of the N-D gradient (kh/kw for a conv weight)."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    return (ns5(pow2(M)) * keller_scale(G.shape[-2], G.shape[-1])).reshape(G.shape)


def keller_and_moonlight(G):
    """Keller's sqrt(max(1, m/n)) and Moonlight's 0.2 sqrt(max(m, n)) applied together."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return (ns5(pow2(M)) * keller_scale(m, n) * 0.2 * max(m, n) ** 0.5).reshape(G.shape)


def skip_orthogonalisation(G):
    """A code path that applies the (scaled) raw gradient."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    U = M / np.linalg.norm(M) * min(m, n) ** 0.5  # even the norm of an orthogonal matrix
    return (U * keller_scale(m, n)).reshape(G.shape)


def conv_not_flattened(G):
    """The N-D gradient orthogonalised as a batch of (kh, kw) matrices."""
    G = np.asarray(G)
    if G.ndim == 2:
        return faithful(G)
    return ns5(pow2(G)) * keller_scale(G.shape[0], int(np.prod(G.shape[1:])))


def conv_not_reshaped(G):
    """The (out, in*kh*kw) update returned without reshaping back."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return ns5(pow2(M)) * keller_scale(m, n)


def stack_flattened(G):
    """A stack (B, m, n) flattened to (B*m, n) and orthogonalised as one matrix."""
    G = np.asarray(G)
    B, m = G.shape[0], G.shape[1]
    M = G.reshape(B * m, -1)
    return (ns5(pow2(M)) * keller_scale(m, M.shape[1])).reshape(G.shape)


def complex_without_conjugate(G):
    """A = X X^T instead of X X^H."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return (ns5(pow2(M), conj=False) * keller_scale(m, n)).reshape(G.shape)


def scaled_in_place(G):
    """The float64 gradient rescaled in place before orthogonalising."""
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    M /= np.linalg.norm(M)
    return (ns5(pow2(M)) * keller_scale(m, n)).reshape(G.shape)


def float32_result(G):
    """A float32 update whatever the parameter's dtype."""
    return faithful(G).astype(np.float32)


def epsilon_floor(G):
    """Keller's normalisation without the power-of-two rescale: 1e-7 decides tiny gradients."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return (ns5(M) * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


def you_table_mistyped(G):
    """You's five quintics with one digit of the third triple transcribed wrongly."""
    table = list(YOU)
    table[2] = (3.7418, -5.5193, 2.3037)
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return (ns5(pow2(M), coeffs=table) * keller_scale(m, n)).reshape(G.shape)


def you_faithful(G):
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    return (ns5(pow2(M), coeffs=YOU) * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


# -- NorMuon (row normalisation with Frobenius re-match), on the exact polar factor ------------

def _polar(M):
    U, _, Vh = np.linalg.svd(M, full_matrices=False)
    return U @ Vh


def normuon_faithful(G):
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    if not np.any(M):
        return np.zeros_like(G)
    O = _polar(M)
    rms = np.sqrt(np.mean(O * O, axis=-1, keepdims=True))
    R = np.where(rms > 0, O / np.where(rms > 0, rms, 1), 0)
    R = R * (np.linalg.norm(O) / np.linalg.norm(R))
    return (R * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


def normuon_without_rematch(G):
    """Rows normalised, Frobenius norm not re-matched."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    if not np.any(M):
        return np.zeros_like(G)
    O = _polar(M)
    R = O / np.sqrt(np.mean(O * O, axis=-1, keepdims=True))
    return (R * keller_scale(m, n)).reshape(G.shape)


def normuon_zero_is_nan(G):
    """The re-match computed as 0/0 on a zero update."""
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    m, n = M.shape
    U, s, Vh = np.linalg.svd(M, full_matrices=False)
    O = U @ np.diag((s > 0).astype(float)) @ Vh
    with np.errstate(invalid="ignore", divide="ignore"):
        R = O / np.sqrt(np.mean(O * O, axis=-1, keepdims=True))
        R = R * (np.linalg.norm(O) / np.linalg.norm(R))
    return (R * keller_scale(m, n)).reshape(G.shape)


# -- hybrid and preconditioned routes ------------------------------------------------------------

def _flat(G):
    G = np.asarray(G)
    M = G.reshape(G.shape[0], -1)
    return G, M, M.shape[0], M.shape[1]


def _heavyball(M, uv_transposed=True):
    if M.shape[0] == M.shape[1]:  # square: the SVD branch
        U, _, Vh = np.linalg.svd(M)
        return U @ Vh if uv_transposed else U @ Vh.T
    tall = M.shape[0] > M.shape[1]
    X = M.T if tall else M
    X = X / max(np.linalg.norm(X), 1e-7)
    for a, b, c in YOU:
        S = X @ X.T
        X = ((c * S + b * np.eye(len(S))) @ S + a * np.eye(len(S))) @ X
    return X.T if tall else X


def heavyball_faithful(G):
    G, M, m, n = _flat(G)
    return (_heavyball(pow2(M)) * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


def svd_branch_u_v(G):
    """heavyball's mode='legacy_svd': U @ Vh.T for square matrices instead of U @ Vh."""
    G, M, m, n = _flat(G)
    return (_heavyball(pow2(M), uv_transposed=False) * keller_scale(m, n)).reshape(G.shape)


def _aol(M, d2a=False):
    tall = M.shape[0] > M.shape[1]
    X = M.T if tall else M
    a, b, c = KELLER
    A = X @ _h(X)
    s = 1 / np.sqrt(np.maximum(np.abs(A).sum(-1), 1e-8))[:, None]
    X = X * s
    A = A * s * s if d2a else A * s * s.T  # D^2 A (wrong) or D A D
    X = a * X + (b * A + (c * A) @ A) @ X
    for _ in range(4):
        A = X @ _h(X)
        X = a * X + (b * A + (c * A) @ A) @ X
    return X.T if tall else X


def aol_faithful(G):
    G, M, m, n = _flat(G)
    return (_aol(pow2(M)) * keller_scale(m, n)).reshape(G.shape).astype(G.dtype)


def aol_d2a(G):
    """AOL rescaling applied as D^2 A instead of D A D."""
    G, M, m, n = _flat(G)
    return (_aol(pow2(M), d2a=True) * keller_scale(m, n)).reshape(G.shape)


def source_emulation(G, preset):
    """The catalogue's emulation of ``preset`` as its source runs it (no scale rule)."""
    from swanref.presets.catalogue import whiten_preset
    return whiten_preset(G, preset, emulate="source")
