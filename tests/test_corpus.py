"""Zero false rejections: independent correct implementations (tests/corpus/impls.py, written
without swanref) are accepted by ``swanref check`` under the claims they satisfy.  torch/JAX
versions run where those packages are installed and skip cleanly otherwise."""
import importlib.util

import pytest

from swanref.verify.checker import check
from corpus import impls as C

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None

CASES = [
    # (implementation, op, claim keywords, array type, needs)
    ("gn_textbook", "grad_norm", {}, "numpy", None),
    ("gn_textbook", "grad_norm", {"dtype": "float32"}, "numpy", None),
    ("gn_shifted", "grad_norm", {}, "numpy", None),
    ("gn_welford", "grad_norm", {}, "numpy", None),
    ("gn_2d_only", "grad_norm", {}, "numpy", None),
    ("gn_float32", "grad_norm", {"dtype": "float32"}, "numpy", None),
    ("polar_svd", "whiten", {}, "numpy", None),
    ("polar_svd", "whiten", {"dtype": "float32"}, "numpy", None),
    ("polar_scipy_2d", "whiten", {"full_rank_only": True}, "numpy", None),
    ("keller_numpy", "whiten", {"preset": "muon_ns5"}, "numpy", None),
    ("keller_numpy", "whiten", {"preset": "muon_ns5", "dtype": "float32"}, "numpy", None),
    ("gn_torch", "grad_norm", {}, "torch", "torch"),
    ("gn_torch", "grad_norm", {"dtype": "float32"}, "torch", "torch"),
    ("polar_torch", "whiten", {}, "torch", "torch"),
    ("keller_torch_2d", "whiten", {"preset": "muon_ns5", "dtype": "bfloat16"}, "torch",
     "torch"),
    ("gn_jax", "grad_norm", {}, "jax", "jax"),
    ("polar_jax", "whiten", {}, "jax", "jax"),
    ("gn_jax_jit", "grad_norm", {"shapes": "few"}, "jax", "jax"),
    ("sinkgd_clamped", "sinkgd_update", {"eps": 1e-8}, "numpy", None),
    ("sinkgd_clamped", "sinkgd_update", {"eps": 1e-8, "dtype": "float32"}, "numpy", None),
]


@pytest.mark.parametrize("impl,op,kw,array_type,needs", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2].get('preset', '')}{c[2].get('dtype', '')}"
                              for c in CASES])
def test_correct_implementation_is_accepted(impl, op, kw, array_type, needs):
    if needs == "torch" and not HAVE_TORCH:
        pytest.skip("torch is not installed")
    if needs == "jax" and not HAVE_JAX:
        pytest.skip("jax is not installed")
    report = check(getattr(C, impl), op, examples=8, array_type=array_type, **kw)
    assert report.exit_code == 0, report.table()
    if impl.endswith("2d_only") or impl.endswith("_2d"):
        # the batch class is refused: reported as unsupported, with the exception, not a failure
        assert any(r.status == "unsupported" and r.exception for r in report.results), \
            report.table()


def test_a_sinkgd_line_epsilon_is_a_claim():
    """Public SinkGD code clamps every line norm (axolotl ``clamp_min(1e-8)``): the default
    claim (no epsilon) rejects it on rows of norm below 1e-8, the claim ``eps=1e-8`` (clamp)
    accepts it with the scale-invariance properties not applicable, and the wrong form or value
    is rejected."""
    from swanref.verify.claims import Claim
    plain = check(C.sinkgd_clamped, "sinkgd_update", examples=10)
    assert not plain.conforming
    ok = check(C.sinkgd_clamped, "sinkgd_update", claim=Claim(eps=1e-8, eps_form="clamp"),
               examples=10)
    assert ok.conforming, ok.table()
    na = {r.name for r in ok.results if r.status == "n/a"}
    assert na == {"scale_invariance", "row_scale_invariance"}, ok.table()
    for wrong in (dict(eps=1e-8, eps_form="add"), dict(eps=1e-6, eps_form="clamp")):
        r = check(C.sinkgd_clamped, "sinkgd_update", claim=Claim(**wrong), examples=10)
        assert r.status("agrees_with_reference") == "FAIL", (wrong, r.table())


def test_a_textbook_grad_norm_with_eps_on_2d_matrices_is_a_claim():
    """ethansmith2000/SWANOptimizer's GradNorm: ``(G - mean) / sqrt(var + 1e-8)`` over axis 1.
    Its constant rows give the rounded mean over sqrt(eps) (spec 8.1's offset term with the
    eps in the denominator covers it), and a 3-D array is read along the wrong axis: the claim
    ``nd = 2d_only`` makes ``batched`` not applicable instead of a failure."""
    from swanref.verify.claims import Claim
    r = check(C.gn_eps_dim1, "grad_norm", claim=Claim(eps=1e-8, nd="2d_only"), examples=15)
    assert r.conforming, r.table()
    assert r.status("batched") == "n/a" and r.status("constant_row_zero") == "pass"
    assert check(C.gn_eps_dim1, "grad_norm", claim=Claim(eps=1e-8),
                 examples=15).status("batched") == "FAIL"


def test_scale_invariance_is_not_claimed_under_a_stated_epsilon():
    for op, kw in (("swan_update", {"eps": 1e-8}), ("sinkgd_update", {"eps": 1e-8})):
        r = check(lambda G: G, op, properties=["scale_invariance"], examples=2, **kw)
        assert r.status("scale_invariance") == "n/a", (op, r.table())
