"""check update under claims that state what real code does (docs/spec.md 9, 11): the stated
epsilon at its place, N-D rules, norm axes, applicability, per-probe tolerances; each real bug
caught with its cause named, each fix accepted."""
import numpy as np
import pytest

from swanref.update import orthogonalized_update
from swanref.verify.claims import Claim
from swanref.verify.update_properties import UpdateClaim, check_update
from wrong_impls import claimed_updates as C


def P(name, **knobs):
    """The preset's claim for these 2-D-only float64 transcriptions."""
    knobs.setdefault("nd", "2d_only")
    knobs.setdefault("compute_dtype", "float64")
    return Claim.from_preset(name, **knobs)


def status(report):
    return {r.name: r.status for r in report.results}


def message(report, name):
    return next(r.message for r in report.results if r.name == name)


def test_stated_epsilon_turns_the_fix_and_the_bug_around():
    fixed = P("you_ns5", eps=1e-10)
    assert check_update(C.you_fixed, claim=fixed).conforming
    bad = check_update(C.you_original, claim=fixed)
    assert status(bad)["epsilon"] == "FAIL"
    assert "matches eps=1e-07 (add)" in message(bad, "epsilon")
    # under the preset's own epsilon the verdicts swap
    assert check_update(C.you_original, claim=P("you_ns5")).conforming
    assert status(check_update(C.you_fixed, claim=P("you_ns5")))["epsilon"] \
        == "FAIL"


@pytest.mark.parametrize("fn, claim, prop, cause", [
    (C.keller_wrong_eps, P("muon_ns5"), "epsilon", "eps=1e-08 (add)"),
    (C.clamp_as_add, P("torch_muon"), "epsilon", "eps=1e-07 (add)"),
    (C.moonlight_missing_scale, P("muon_ns5", scale="moonlight"), "scale_wide",
     "unit_rms"),
    (C.wrong_branch, P("muon_ns5"), "direction", None),
    (C.normuon_columns, P("muon_ns5", norm_axis="rows"), "direction",
     "norm_axis='columns'"),
])
def test_real_bugs_are_caught_with_their_cause(fn, claim, prop, cause):
    report = check_update(fn, claim=claim, properties=[prop])
    assert status(report)[prop] == "FAIL", report.table()
    if cause:
        assert cause in message(report, prop)


@pytest.mark.parametrize("fn, claim", [
    (C.keller, P("muon_ns5")),
    (C.torch_clamp, P("torch_muon")),
    (C.moonlight, P("muon_ns5", scale="moonlight")),
    (C.normuon_rows, P("muon_ns5", norm_axis="rows")),
    (C.normuon_columns, P("muon_ns5", norm_axis="columns")),
])
def test_faithful_conventions_conform(fn, claim):
    report = check_update(fn, claim=claim.replace(nd="2d_only"))
    assert report.conforming, report.table()


def test_two_d_only_claim_makes_nd_probes_not_applicable():
    report = check_update(C.two_d_only, claim=P("muon_ns5", nd="2d_only"))
    assert report.conforming, report.table()
    st = status(report)
    assert st["scale_conv"] == st["nd_round_trip"] == "n/a"
    assert "2-D only" in message(report, "nd_round_trip")
    assert st["zero_to_zero"] == "pass"  # its 2-D probe still ran
    # under the default N-D rule the same function is rightly rejected
    assert not check_update(C.two_d_only, claim=P("muon_ns5", nd="flatten")).conforming


def test_applicability_of_the_epsilon_properties():
    stated = check_update(C.keller, claim=P("muon_ns5"))
    assert status(stated)["direction_scale_invariant"] == "n/a"
    assert "acts on the raw gradient" in message(stated, "direction_scale_invariant")
    assert status(stated)["epsilon"] == "pass"
    legacy = check_update(C.keller, claim=UpdateClaim("muon_ns5").to_claim(),
                          properties=["epsilon"])
    assert status(legacy)["epsilon"] == "n/a"
    assert status(stated)["complex_input"] == "n/a"


def test_nesterov_rescaled_epsilon_passes_direction_and_complex_in_float64():
    def rescaled(G):  # an optimizer's first Nesterov step: the eps sees 1.49 G
        from wrong_impls.update_impls import ns5, keller_scale
        m, n = G.shape
        return (ns5(1.49 * np.asarray(G)) * keller_scale(m, n)).astype(G.dtype)
    claim = P("muon_ns5", complex=True, nd="2d_only")
    report = check_update(rescaled, claim=claim, properties=["direction", "complex_input"])
    assert report.conforming, report.table()
    # with a flat 1e-9 the same target fails, and the message does not blame the conjugate
    flat = check_update(rescaled, claim=claim.replace(tolerance=1e-12),
                        properties=["complex_input"])
    assert status(flat)["complex_input"] == "FAIL"
    assert "not a missing conjugate" in message(flat, "complex_input")


def test_missing_conjugate_is_named():
    from wrong_impls.update_impls import complex_without_conjugate
    report = check_update(complex_without_conjugate, claim=UpdateClaim(
        "muon_ns5", complex=True).to_claim(), properties=["complex_input"])
    assert "a missing conjugate" in message(report, "complex_input")


def test_reference_knobs():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((4, 7))
    np.testing.assert_allclose(orthogonalized_update(G * 1e-9, "muon_ns5", eps=1e-7),
                               C.keller(G * 1e-9), rtol=1e-9, atol=1e-15)
    X = rng.standard_normal((3, 4, 5))
    batched = orthogonalized_update(X, "svd", nd="batch_leading")
    np.testing.assert_allclose(batched[1], orthogonalized_update(X[1], "svd"), atol=1e-12)
    with pytest.raises(ValueError, match="2-D parameters only"):
        orthogonalized_update(X, "svd", nd="2d_only")
    cols = orthogonalized_update(G, "svd", norm_axis="columns")
    assert np.allclose(np.sqrt(np.mean(cols ** 2, axis=0)),
                       np.sqrt(np.mean(cols ** 2, axis=0))[0])
    with pytest.raises(ValueError, match="production preset"):
        orthogonalized_update(G, "newton_schulz", eps=1e-7)
    # normalise in float32 then cast: finite where a float16 cast first overflows
    big = orthogonalized_update(G * 1e6, "gram_ns", emulate="float16",
                                lowprec_order="normalise_then_cast")
    assert np.all(np.isfinite(big))


def test_fp16_cast_order_bug_is_named():
    def cast_first(G):  # faithful in all but the order: float16 cast before the norm
        X = np.asarray(G).astype(np.float16).astype(np.float32)
        return orthogonalized_update(X, "gram_ns", emulate="float16", eps=1e-7,
                                     lowprec_order="normalise_then_cast", nd="2d_only",
                                     check_finite=False)
    claim = P("gram_ns", compute_dtype="float16",
                              lowprec_order="normalise_then_cast", nd="2d_only")
    report = check_update(cast_first, claim=claim, properties=["epsilon"])
    assert status(report)["epsilon"] == "FAIL"
    assert "overflows" in message(report, "epsilon")


def test_faithful_bf16_polar_express_and_fp16_gram_ns_in_torch_conform():
    torch = pytest.importorskip("torch")

    def speedrun(G):  # modded-nanogpt polar_express, bf16
        X = torch.as_tensor(G).bfloat16()
        tall = X.size(-2) > X.size(-1)
        if tall:
            X = X.mT
        X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
        for a, b, c in C.PE_SPEEDRUN:
            A = X @ X.mT
            B = b * A + c * A @ A
            X = a * X + B @ X
        if tall:
            X = X.mT
        m, n = G.shape
        return (X.float() * max(1, m / n) ** 0.5).numpy().astype(G.dtype)

    report = check_update(speedrun, claim=P("polar_express_nanogpt", compute_dtype="bfloat16"))
    assert report.conforming, report.table()
    assert status(report)["epsilon"] == "pass"

    from swanref.presets.catalogue import PE_GRAM5

    def gram_fp16(G):  # Dao-AILab gram-newton-schulz order: normalise in float32, iterate fp16
        X = torch.as_tensor(G).float()
        tall = X.size(-2) > X.size(-1)
        if tall:
            X = X.mT
        X = (X / (X.norm() + 1e-7)).half()  # the 1.05 is folded into PE_GRAM5
        for a, b, c in PE_GRAM5:  # the standard form (the Gram form differs in rounding only)
            A = X @ X.mT
            X = a * X + (b * A + c * A @ A) @ X
        if tall:
            X = X.mT
        m, n = G.shape
        return (X.float() * max(1, m / n) ** 0.5).numpy().astype(G.dtype)

    claim = P("gram_ns", compute_dtype="float16", lowprec_order="normalise_then_cast")
    report = check_update(gram_fp16, claim=claim)
    assert report.conforming, report.table()


def test_pytest_plugin_takes_a_claim(tmp_path):
    import os
    import subprocess
    import sys
    import textwrap
    from importlib.metadata import entry_points
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plugin = [] if any(ep.name == "swanref" for ep in entry_points(group="pytest11")) \
        else ["-p", "swanref.pytest_plugin"]
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        from swanref.verify.claims import Claim
        from wrong_impls import claimed_updates as C

        def test_fix(swanref_check):
            swanref_check(C.you_fixed, "update", claim=Claim.from_preset("you_ns5"),
                          eps=1e-10, nd="2d_only")

        def test_original(swanref_check):  # the command line's claim
            swanref_check(C.you_original, "update")
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.path.join(root, "tests")]))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin,
            "--swanref-preset", "you_ns5", "--swanref-set", "eps=1e-10",
            "--swanref-set", "nd=2d_only"]
    p = subprocess.run(base + ["test_user.py", "--swanref-target",
                               "update=wrong_impls.claimed_updates:you_fixed"],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert "1 failed, 2 passed" in p.stdout, p.stdout + p.stderr
    assert "matches eps=1e-07 (add)" in p.stdout


# -- NorMuon's own epsilon and the gate's rescale (issue 22) -----------------------------------

def _normuon_svd(eps, beta2=0.95):
    """Exact polar factor, then pytorch-optimizer NorMuon's first step: rows divided by
    sqrt((1 - beta2) mean(O^2)) + eps, re-matched to ||O||_F, Keller's scale."""
    def fn(G):
        G = np.asarray(G)
        if not G.any():
            return np.zeros_like(G)
        u, _, vt = np.linalg.svd(G, full_matrices=False)
        O = u @ vt
        N = O / (np.sqrt((1 - beta2) * np.mean(O * O, axis=-1, keepdims=True)) + eps)
        N = N * (np.linalg.norm(O) / np.linalg.norm(N))
        return (N * max(1.0, G.shape[0] / G.shape[1]) ** 0.5).astype(G.dtype)
    return fn


def test_second_moment_eps_is_stated_and_checked_at_its_place():
    from swanref.verify.claims import Claim
    claim = Claim(level="update", norm_axis="rows", nd="2d_only", second_moment_eps=1e-8,
                  second_moment_beta=0.95)
    assert check_update(_normuon_svd(1e-8), claim=claim).conforming
    bad = check_update(_normuon_svd(1e-6), claim=claim)
    assert status(bad)["second_moment_eps"] == "FAIL"
    assert "matches second_moment_eps=1e-06" in message(bad, "second_moment_eps")
    # the (1 - beta2) share is the source's: a debiased claim puts the epsilon elsewhere
    assert status(check_update(_normuon_svd(1e-8), claim=claim.replace(
        second_moment_debias=True)))["second_moment_eps"] == "FAIL"
    unstated = check_update(_normuon_svd(1e-8), claim=claim.replace(
        second_moment_eps=None, second_moment_beta=None))
    assert status(unstated)["second_moment_eps"] == "n/a"


def test_removed_eps_where_knob_names_its_replacement():
    from swanref.verify.claims import Claim, ClaimError
    with pytest.raises(ClaimError, match="second_moment_eps"):
        Claim.from_dict({"eps_where": "row_norm"})
    with pytest.raises(ClaimError, match="need a normalisation"):
        Claim(second_moment_eps=1e-8)


def test_pytorch_optimizer_apply_cautious_is_gate_rescale_kept_plus_one():
    torch = pytest.importorskip("torch")
    base = pytest.importorskip("pytorch_optimizer.base.optimizer")
    from swanref.verify.claims import Claim

    def cautious(G):  # the exact update, gated by pytorch-optimizer's own apply_cautious
        G = np.asarray(G)
        u, _, vt = np.linalg.svd(G, full_matrices=False)
        U = torch.from_numpy(u @ vt * max(1.0, G.shape[0] / G.shape[1]) ** 0.5)
        base.BaseOptimizer.apply_cautious(U, torch.from_numpy(G))
        return U.numpy().astype(G.dtype)
    claim = Claim(level="update", nd="2d_only", gate="per_element",
                  gate_rescale="kept_plus_one")
    props = ["direction", "scale_wide", "scale_tall", "scale_square"]
    assert check_update(cautious, claim=claim, properties=props).conforming
    other = check_update(cautious, claim=claim.replace(gate_rescale="kept"), properties=props)
    assert not other.conforming and status(other)["scale_wide"] == "FAIL"
