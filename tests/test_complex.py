"""Complex input (spec 9.7): whitening and the presets use conjugate transposes, the polar
factor is U V^H; the C++ core is real-only and says so."""
import numpy as np
import pytest

import swanref
from swanref.presets import catalogue as C
from swanref.verify.update_properties import UpdateClaim, check_update
from wrong_impls import update_impls as W  # tests/ is on sys.path (rootdir conftest)

rng = np.random.default_rng(9)


def cplx(shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def polar(Z):
    U, _, Vh = np.linalg.svd(Z, full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5), (2, 3, 5)])
@pytest.mark.parametrize("method, kw, tol", [
    ("svd", {}, 1e-13), ("eigh", {}, 1e-11), ("newton_schulz", {"steps": 60}, 1e-12)])
def test_whiten_complex_is_the_polar_factor(shape, method, kw, tol):
    Z = cplx(shape)
    out = swanref.whiten(Z, method, **kw)
    assert out.dtype == np.complex128 and out.shape == Z.shape
    np.testing.assert_allclose(out, polar(Z), rtol=0, atol=tol)
    # U V^H is unitary on the row space: X X^H = I for a wide full-rank Z
    if shape[-2] <= shape[-1]:
        eye = np.eye(shape[-2])
        np.testing.assert_allclose(out @ np.swapaxes(out, -1, -2).conj(), np.broadcast_to(
            eye, out.shape[:-2] + eye.shape), atol=tol * 10)


def test_complex64_kept():
    Z = cplx((4, 7), np.complex64)
    for method in ("svd", "muon_ns5", "cubic"):
        assert swanref.whiten(Z, method).dtype == np.complex64


@pytest.mark.parametrize("name", ["cubic", "swan_coupled"])
def test_convergent_presets_reach_u_vh(name):
    Z = cplx((4, 6))
    out = swanref.whiten(Z, name, steps=40)
    np.testing.assert_allclose(out, polar(Z), atol=1e-13)


@pytest.mark.parametrize("name", ["muon_ns5", "torch_muon", "optax_muon", "you_ns5",
                                  "polar_express", "jiacheng6", "gram_ns", "heavyball_svd"])
def test_preset_on_complex_acts_on_singular_values_only(name):
    """U p(S) V^H: the same polynomial of the singular values as for a real matrix with them."""
    Z = cplx((4, 6))
    U, s, Vh = np.linalg.svd(Z, full_matrices=False)
    out = swanref.whiten(Z, name)
    # rotate into the singular basis: U^H out V must be diagonal with p(s) on it
    D = U.conj().T @ out @ Vh.conj().T
    off = D - np.diag(np.diag(D))
    assert np.abs(off).max() < 1e-12
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    real = Q @ np.diag(s) @ np.linalg.qr(rng.standard_normal((6, 4)))[0].T
    p_real = np.linalg.svd(swanref.whiten(real, name), compute_uv=False)
    np.testing.assert_allclose(np.sort(np.diag(D).real), np.sort(p_real), atol=1e-12)


def test_aol_complex_matches_an_independent_transcription():
    """optax.contrib's AOL first step on complex input (x @ x.T.conj(), rowsum |A|), written out
    here; swanref's route equals the real optax 0.2.8 to 2.5e-15 (docs/spec.md 9.6)."""
    Z = cplx((4, 6))
    a, b, c = 3.4445, -4.7750, 2.0315
    X = Z.copy()
    A = X @ X.conj().T
    s = 1 / np.sqrt(np.maximum(np.abs(A).sum(-1), 1e-8))[:, None]
    X, A = X * s, A * s * s.T
    X = a * X + (b * A + c * A @ A) @ X
    for _ in range(4):
        A = X @ X.conj().T
        X = a * X + (b * A + c * A @ A) @ X
    np.testing.assert_allclose(swanref.whiten(Z, "optax_muon_aol"), X, atol=1e-13)


def test_transpose_without_conjugate_is_wrong():
    """The bug class: A = X X^T on complex input is not the polar factor."""
    Z = cplx((4, 6))
    X = Z / np.linalg.norm(Z)
    for _ in range(40):
        X = 1.5 * X - 0.5 * (X @ X.T) @ X
    assert not np.all(np.isfinite(X)) or np.linalg.norm(X - polar(Z)) > 0.1


def test_cpp_backend_refuses_complex_clearly():
    Z = cplx((3, 4))
    with pytest.raises(TypeError, match="backend='reference'"):
        swanref.whiten(Z, backend="cpp")
    for f in (swanref.grad_norm, swanref.swan_update, swanref.sinkgd_update):
        with pytest.raises(TypeError, match="complex"):
            f(Z)
    with pytest.raises(TypeError, match="real formats"):
        C.whiten_preset(Z, "muon_ns5", emulate="bfloat16")


def test_update_operator_complex():
    Z = cplx((4, 2, 3))
    out = swanref.orthogonalized_update(Z, "svd", scale="none")
    np.testing.assert_allclose(out.reshape(4, 6), polar(Z.reshape(4, 6)), atol=1e-13)


def test_update_check_complex():
    spec = UpdateClaim("muon_ns5", complex=True).to_claim()  # the spec reading (9.5)
    assert check_update(W.faithful, claim=spec).conforming
    report = check_update(W.complex_without_conjugate, claim=spec)
    assert report.status("complex_input") == "FAIL"
    assert report.status("direction") == "pass"  # real input is fine: only complex is wrong
