"""Faithful NumPy transcriptions of real update conventions on the raw gradient (no power-of-two
prescale: the epsilon sits where each source puts it), and their real bugs, for claims that
state the epsilon, the norm axis and the N-D rule (tests/test_update_claims.py).  Written
independently of swanref."""
import numpy as np

from wrong_impls.update_impls import KELLER, YOU

PE_SPEEDRUN = (  # modded-nanogpt polar_express (safety 1.02 folded into all but the last)
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns(G, coeffs, eps=1e-7, form="add", safety=1.0, transpose_back=True):
    X = np.asarray(G, np.float64)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    f = np.linalg.norm(X) * safety
    X = X / (f + eps if form == "add" else max(f, eps))
    for a, b, c in coeffs:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    if tall and transpose_back:
        X = X.T
    return X


def _keller_scale(G):
    m, n = G.shape
    return max(1.0, m / n) ** 0.5


def keller(G, eps=1e-7):  # KellerJordan/Muon zeropower_via_newtonschulz5 + muon_update scale
    return (ns(G, (KELLER,) * 5, eps) * _keller_scale(G)).astype(G.dtype)


def keller_wrong_eps(G):
    return keller(G, eps=1e-8)


def you_original(G):  # microsoft/dion You coefficients, eps 1e-7
    return (ns(G, YOU, 1e-7) * _keller_scale(G)).astype(G.dtype)


def you_fixed(G):  # the public fix: a smaller epsilon
    return (ns(G, YOU, 1e-10) * _keller_scale(G)).astype(G.dtype)


def torch_clamp(G):  # torch.optim.Muon: norm().clamp(min=eps)
    return (ns(G, (KELLER,) * 5, 1e-7, "clamp") * _keller_scale(G)).astype(G.dtype)


def clamp_as_add(G):  # the bug: a clamp source transcribed with an added epsilon
    return (ns(G, (KELLER,) * 5, 1e-7, "add") * _keller_scale(G)).astype(G.dtype)


def moonlight(G):  # Moonlight: 0.2 sqrt(max(m, n))
    return (ns(G, (KELLER,) * 5) * 0.2 * max(G.shape) ** 0.5).astype(G.dtype)


def moonlight_missing_scale(G):
    return (ns(G, (KELLER,) * 5) * max(G.shape) ** 0.5).astype(G.dtype)


def wrong_branch(G):  # tall input: transposed in, never transposed back (reshaped instead)
    X = ns(G, (KELLER,) * 5, transpose_back=False)
    return (X.reshape(G.shape) * _keller_scale(G)).astype(G.dtype)


def two_d_only(G):
    if np.ndim(G) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    return keller(G)


def _rows(O):
    rms = np.sqrt(np.mean(O * O, axis=-1, keepdims=True))
    return np.where(rms > 0, O / np.where(rms > 0, rms, 1), 0)


def _rematch(O, R, G):
    r = np.linalg.norm(R)
    return ((R * np.linalg.norm(O) / r if r > 0 else R) * _keller_scale(G)).astype(G.dtype)


def normuon_rows(G):  # NorMuon: rows to RMS 1, re-matched to ||O||_F
    O = ns(G, (KELLER,) * 5)
    return _rematch(O, _rows(O), G)


def normuon_columns(G):  # the bug: columns normalised
    O = ns(G, (KELLER,) * 5)
    return _rematch(O, _rows(O.T).T, G)
