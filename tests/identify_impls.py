"""Faithful NumPy re-implementations of real orthogonaliser conventions, for
tests/test_identify.py (written from the public sources named in each docstring)."""
import numpy as np

from swanref.presets.lowprec import round_to

KELLER = (3.4445, -4.7750, 2.0315)
PE_SPEEDRUN = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def _quintic(G, eps, table=(KELLER,) * 5):
    """The shared core of Keller-style sources, in float64 and batched over leading axes:
    transpose tall matrices, X / (||X||_F + eps) per matrix, then X <- a X + (b A + c A A) X
    with A = X X^T for each (a, b, c) of ``table``."""
    X = np.asarray(G, np.float64)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = np.swapaxes(X, -1, -2)
    X = X / (np.linalg.norm(X, axis=(-2, -1), keepdims=True) + eps)
    for a, b, c in table:
        A = X @ np.swapaxes(X, -1, -2)
        X = a * X + (b * A + c * (A @ A)) @ X
    return np.swapaxes(X, -1, -2) if tall else X


def torch_muon_orth(G, eps=1e-7, steps=5):
    """torch/optim/_muon.py _zeropower_via_newtonschulz in float64: 2-D only, transpose to
    wide, X / max(||X||_F, eps), addmm steps."""
    G = np.asarray(G)
    if G.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    a, b, c = KELLER
    X = G.astype(np.float64)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / max(np.linalg.norm(X), eps)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return (X.T if tall else X).astype(G.dtype)


def keller_add_fixed_eps(G):
    """KellerJordan/Muon zeropower_via_newtonschulz5 in float64 with the epsilon lowered to
    1e-12 (the public fix of a too-large floor): X / (||X||_F + 1e-12), batched."""
    return _quintic(G, 1e-12)


def _r(x, fmt):
    return round_to(x, fmt)


def _mm(A, B, fmt):
    return _r(np.matmul(A, B, dtype=np.float32), fmt)


def lowprec_orth(G, coeffs, eps, scale, fmt, normalise_first=False):
    """A quintic Newton-Schulz in bf16/fp16 as PyTorch eager rounds it: products accumulate in
    float32 and round once; elementwise ops round once.  ``normalise_first``: X / (||X|| s +
    eps) in float32, then cast (Dao-AILab gram-newton-schulz, DiffSinger#301); else cast, then
    normalise in the low format (modded-nanogpt polar_express)."""
    G = np.asarray(G, np.float32)
    tall = G.shape[-2] > G.shape[-1]
    X = np.swapaxes(G, -1, -2) if tall else G
    if normalise_first:
        nrm = np.sqrt(np.sum(X.astype(np.float64) ** 2, axis=(-2, -1), keepdims=True))
        X = _r((X / (np.float32(nrm) * np.float32(scale) + np.float32(eps))).astype(np.float32),
               fmt)
    else:
        X = _r(X, fmt)
        nrm = _r(np.sqrt(np.sum(X.astype(np.float64) ** 2, axis=(-2, -1),
                                keepdims=True)).astype(np.float32), fmt)
        d = _r(_r(nrm * np.float32(scale), fmt) + np.float32(eps), fmt)
        X = _r(X / d, fmt)
    for a, b, c in coeffs:
        A = _mm(X, np.swapaxes(X, -1, -2), fmt)
        B = _r(_r(np.float32(b) * A, fmt) + _mm(_r(np.float32(c) * A, fmt), A, fmt), fmt)
        X = _r(_r(np.float32(a) * X, fmt) + _mm(B, X, fmt), fmt)
    X = np.swapaxes(X, -1, -2) if tall else X
    return X.astype(np.float32)


def polar_express_bf16(G):
    """modded-nanogpt train_gpt.py polar_express: bf16, X / (||X|| 1.02 + 1e-6), 5 steps."""
    return lowprec_orth(G, PE_SPEEDRUN, 1e-6, 1.02, "bfloat16")


def keller_fp16_normalise_first(G):
    """Keller's quintic in float16 after a float32 normalisation X / (||X||_F + 1e-7)."""
    return lowprec_orth(G, (KELLER,) * 5, 1e-7, 1.0, "float16", normalise_first=True)


def normuon_columns_update(G):
    """A NorMuon-style update: Keller's float64 quintic (add 1e-7), then each column to RMS 1
    with the Frobenius norm restored, then Moonlight's 0.2 sqrt(max(m, n)); 2-D only."""
    G = np.asarray(G)
    if G.ndim != 2:
        raise ValueError("2-D gradients only")
    O = _quintic(G, 1e-7)        # Keller's own epsilon
    fro = np.linalg.norm(O)
    rms = np.sqrt(np.mean(O * O, axis=0, keepdims=True))
    R = np.where(rms > 0, O / np.where(rms > 0, rms, 1), 0)
    fr = np.linalg.norm(R)
    R = R * (fro / fr) if fr > 0 else R
    m, n = G.shape
    return R * 0.2 * np.sqrt(max(m, n))


def torch_muon_update(G):
    """torch.optim.Muon's update direction on a neutral step: its orthogonaliser times
    adjust_lr_fn='original' sqrt(max(1, m/n)) (2-D only)."""
    O = torch_muon_orth(G)
    m, n = np.asarray(G).shape
    return (O * np.sqrt(max(1.0, m / n))).astype(np.asarray(G).dtype)


def keller_torch_test_table(G):
    """Keller's normalisation (add 1e-7) with torch's test table (3.4, -4.7, 2.0)
    (test/optim OptimizerInfo optim_inputs_func_muon ns_coefficients), 5 steps, batched."""
    return _quintic(G, 1e-7, ((3.4, -4.7, 2.0),) * 5)


def keller_muon_update(G):
    """KellerJordan/Muon muon.py muon_update on a neutral step, in float64: a 4-D conv weight
    is viewed as (out, -1), a 3-D gradient goes to zeropower as a batch of its last two axes;
    scale max(1, m/n)**0.5 of the matrices orthogonalised."""
    G = np.asarray(G)
    U = G.reshape(len(G), -1) if G.ndim == 4 else G
    X = _quintic(U, 1e-7) * max(1.0, U.shape[-2] / U.shape[-1]) ** 0.5
    return X.reshape(G.shape).astype(G.dtype)


def hangs_on_tiny_input(G):
    """Never returns on a tiny-norm input (a convergence loop that never ends): identify's
    --timeout must name the probe."""
    G = np.asarray(G, np.float64)
    if 0 < np.linalg.norm(G) < 1e-9:
        import threading
        threading.Event().wait()
    U, _, Vh = np.linalg.svd(G, full_matrices=False)
    return U @ Vh
