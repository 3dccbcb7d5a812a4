"""check-optimizer claims (spec 9.9): each convention a real optimizer has can be claimed, the
faithful NumPy re-implementation (tests/wrong_impls/optimizer_impls.py) passes under it, and
each real bug class fails naming its cause; the verdict needs evidence; driver results are
validated; the zero-glue entry point drives torch optimizers by import path."""
import json
import math

import numpy as np
import pytest

from swanref.verify.targets import UsageError
from wrong_impls import optimizer_impls as I

from swanref.verify import optimizer as O
from swanref.verify import optimizer_glue as G


def claim(**kw):
    base = dict(preset="muon_ns5", scale="keller", precision="float64", param_dtype="float64")
    return O.OptimizerClaim(**{**base, **kw})


def check(run, **kw):
    return O.check_optimizer(run, claim(**kw), "numpy")


def msg(report, name):
    return report.result(name).message


def test_faithful_conforms_with_tight_float64_tolerance():
    r = check(I.make())
    assert r.conforming, r.table()
    assert r.status("eps_small_gradient") == "pass"
    # the noise model, not the flat 1e-9: the tolerance follows the claim's epsilon placement
    assert r.result("one_step_wide").tolerance < 1e-6
    assert r.result("eps_small_gradient").tolerance < 1e-12  # epsilon modelled in place


def test_epsilon_value_is_a_claim():
    r = check(I.make(eps=1e-8))  # claimed: the preset's 1e-7
    assert r.status("eps_small_gradient") == "FAIL", r.table()
    assert "matches: eps 1e-08 (add)" in msg(r, "eps_small_gradient")
    assert r.status("one_step_wide") == "pass"  # only the small-gradient probe sees it
    assert check(I.make(eps=1e-8), eps=1e-8).conforming  # the fix, claimed, conforms
    r = check(I.make(eps_form="clamp"), eps_form="add")
    assert r.status("eps_small_gradient") == "FAIL"
    assert "clamp" in msg(r, "eps_small_gradient")


def test_rectangular_conv_catches_the_kernel_scale():
    r = check(I.make(scale_from_kernel=True))
    assert r.status("one_step_conv") == "FAIL", r.table()
    assert "trailing axes (5, 3)" in msg(r, "one_step_conv")
    assert O.KINDS["conv"][-1] != O.KINDS["conv"][-2]


def test_nd_rules_are_claims():
    # flatten 4-D but batch 3-D (optax-style stacks, conv as (out, -1))
    run = I.make(stack="batched")
    assert check(run, stack="independent").conforming
    r = check(run)  # claimed flattened
    assert r.status("stacked_3d") == "FAIL"
    assert "independent reading" in msg(r, "stacked_3d") and "matches" in msg(r, "stacked_3d")
    # batch all leading axes (dion flatten=False)
    run = I.make(nd="batched", stack="batched")
    assert check(run, nd="batched", stack="batched").conforming
    r = check(run)
    assert r.status("one_step_conv") == "FAIL"
    assert "matches: N-D rule batched" in msg(r, "one_step_conv")
    r = check(I.make(stack="batched", flatten_3d=True), stack="independent")
    assert r.status("stacked_3d") == "FAIL"


def test_nesterov_that_cannot_be_switched_off():
    run = I.make(nesterov_always=True)
    r = check(run, nesterov="sutskever")  # assumes a keyword
    assert r.outcome in ("not conforming", "incomplete"), r.table()
    assert "nesterov=always" in msg(r, "momentum_before_orth")
    r = check(run, nesterov="sutskever", nesterov_always=True)
    assert r.conforming, r.table()
    assert r.status("nesterov") == "pass"
    r = check(run, nesterov="optax", nesterov_always=True)
    assert r.status("momentum_before_orth") == "FAIL"


def test_normuon_rows_and_columns_of_wide_matrices():
    run = I.make(normalise="columns_if_wide")
    assert check(run, normalise="columns_if_wide").conforming
    r = check(I.make(normalise="columns_if_wide", rows_only=True), normalise="columns_if_wide")
    assert r.status("one_step_wide") == "FAIL"
    assert r.status("one_step_tall") == "pass"  # tall matrices normalise rows either way
    assert check(I.make(normalise="rows"), normalise="rows").conforming


def test_cautious_gate():
    run = I.make(gate="cautious")
    assert check(run, gate="cautious").conforming
    assert not check(run).conforming  # the gate unclaimed
    r = check(I.make(gate="cautious", gate_no_rescale=True), gate="cautious")
    assert r.status("one_step_wide") == "FAIL"
    assert "norm ratio" in msg(r, "one_step_wide")


def test_schatten_first_step():
    assert check(I.make(schatten=True), precondition="schatten").status("one_step_wide") \
        == "pass"
    r = check(I.make(schatten=True, schatten_no_sqrt=True), precondition="schatten")
    assert r.status("one_step_wide") == "FAIL"


def test_adamuon_second_moment():
    run = I.make(normalise="elementwise")
    r = check(run, normalise="elementwise", rematch="sqrt_min", second_moment_eps=1e-10)
    assert r.conforming, r.table()
    r = check(I.make(normalise="elementwise", adamuon_no_rematch=True),
              normalise="elementwise", rematch="sqrt_min", second_moment_eps=1e-10)
    assert r.status("one_step_wide") == "FAIL"
    assert "direction distance" in msg(r, "one_step_wide")


def test_conv_broadcast_crash_is_an_error_not_a_rejection():
    r = check(I.make(conv_broadcast=True))
    assert r.status("one_step_conv") == "error", r.table()
    assert r.outcome == "error" and r.exit_code == 3
    # the verdict says the optimizer's own code broke (KellerJordan/Muon before its PR #34
    # added the missing reshape: a 2-D update added to a 4-D weight), not the check's set-up
    assert "the optimizer crashed on one_step_conv" in r.table().splitlines()[-1], r.table()


def test_every_step_raising_is_a_usage_error():
    """Issue 22: never conforming, and not INCOMPLETE either: a usage error naming it."""
    with pytest.raises(UsageError, match="raised on every run"):
        check(I.make(always_raises=True))


@pytest.mark.parametrize("bad, words", [
    (lambda p0, grads, mu, **kw: None, "returned None"),
    (lambda p0, grads, mu, **kw: [p0], "step(s) for"),
    (lambda p0, grads, mu, **kw: [np.zeros(3)] * len(grads), "shape (3,)"),
    (lambda p0, grads, mu, **kw: 5, "returned int"),
])
def test_driver_results_are_validated(bad, words):
    r = O.check_optimizer(bad, claim(), "bad")
    assert r.outcome == "error", r.table()
    text = " ".join(x.message for x in r.results)
    assert words in text


def test_nan_safe_distance():
    assert O._rel(np.full(3, np.nan), np.ones(3)) == np.inf
    assert O._rel(np.ones(3), np.full(3, np.inf)) == np.inf
    # a diverged candidate is never the closest
    assert "diverged" not in O._closest(np.ones(3), {"diverged": np.full(3, np.nan),
                                                    "ok": 2 * np.ones(3)}, 0.1)


def test_bf16_tells_orthogonalisers_apart():
    """At bf16, an exact polar factor is not accepted as Keller's quintic (the flat 0.08 did)."""
    exact = O.OptimizerClaim("svd", "keller", precision="float64", param_dtype="float64")
    run = I.make()

    def svd_run(p0, grads, mu, nesterov=False, group=False):
        if group or np.ndim(p0) != 2 or np.iscomplexobj(p0):
            raise ValueError("only real matrices")
        return [p0 * (1 - O.LR * O.WD) - O.LR * O._expected(exact, grads[0])]
    del run
    r = O.check_optimizer(svd_run, O.OptimizerClaim("torch_muon", "keller",
                                                    precision="bfloat16"), "svd")
    assert r.status("one_step_wide") == "FAIL", r.table()


def test_claim_validation_and_files(tmp_path):
    with pytest.raises(ValueError, match="normalise"):
        claim(normalise="diagonal")
    with pytest.raises(ValueError, match="need a preset"):
        O.OptimizerClaim("svd", eps=1e-8)
    # the shared claim file (docs/spec.md 11) maps onto the optimizer check's knobs
    from swanref.verify.claims import Claim, load_claim
    f = tmp_path / "c.toml"
    f.write_text('format = "swanref-claim"\nversion = 1\nlevel = "optimizer"\n'
                 'preset = "muon_ns5"\neps = 1e-8\neps_form = "add"\nnd = "batch_leading"\n'
                 'nesterov = "always"\nnorm_axis = "columns_if_wide"\ngate = "per_element"\n')
    c = O.OptimizerClaim.from_claim(load_claim(str(f)))
    assert (c.eps, c.eps_form, c.nd, c.stack, c.nesterov, c.nesterov_always, c.normalise,
            c.gate) == (1e-8, "add", "batched", "independent", "sutskever", True,
                        "columns_if_wide", "cautious")
    c = O.OptimizerClaim.from_claim(Claim(preset="muon_ns5", second_moment="adamuon"))
    assert (c.eps_form, c.normalise, c.rematch) == ("invariant", "elementwise", "sqrt_min")
    with pytest.raises(G.UsageError, match="unknown claim knob"):
        O.make_claim({"preset": "muon_ns5", "epsilon": 1})
    with pytest.raises(G.UsageError, match="no lr keyword"):  # neither torch nor optax-like
        O.check_target("numpy.linalg:norm", preset="svd")


def test_typed_kwarg_values():
    assert G.parse_value("1e-7") == 1e-7
    assert G.parse_value("(0.9, 0.95)") == (0.9, 0.95)
    assert G.parse_value("np.float64") is np.float64
    a = G.parse_value("np.array([[3.4, -4.7, 2.0]])")
    assert isinstance(a, np.ndarray) and a.shape == (1, 3)
    assert G.parse_value("plain words") == "plain words"


# -- zero glue on torch optimizers (skipped without torch) --------------------------------------

def _torch_classes():
    torch = pytest.importorskip("torch")
    from wrong_impls import torch_optimizers as T
    return torch, T


def test_glue_parameter_conventions():
    """One test (torch's first optimizer step imports torch._dynamo: seconds, paid once)."""
    _, T = _torch_classes()
    for cls, params in (("UseMuonGroups", "auto"), ("NamedParams", "auto"),
                        ("MuonParamsKwarg", "auto"), ("UseMuonGroups", "use_muon")):
        r = O.check_target(getattr(T, cls), preset="svd", precision="float32", params=params,
                           nesterov="sutskever")
        assert r.conforming, (cls, params, r.table())


def test_glue_cli_import_path_and_kwargs(capsys, monkeypatch, tmp_path):
    _, T = _torch_classes()
    claim_file = tmp_path / "svd.json"
    claim_file.write_text('{"format": "swanref-claim", "version": 1, "level": "optimizer", '
                          '"method": "svd", "compute_dtype": "float32"}')
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    rc = O.main(["wrong_impls.torch_optimizers:UseMuonGroups", "--set", "method=svd",
                 "--claim", str(claim_file), "--kwarg", "lr=0.05", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["claim"]["lr"] == 0.05, out
    rc = O.main(["wrong_impls.torch_optimizers:AlwaysRaises", "--claim", str(claim_file)])
    assert rc == 2  # raised on every run: a usage error (issue 22)
    assert O.main(["wrong_impls.torch_optimizers:UseMuonGroups"]) == 2  # no preset
    assert "needs a preset" in capsys.readouterr().err


def test_optax_steps_is_the_one_optax_loop_of_both_drivers():
    """optimizer.optax_driver and the generic driver's optax path share optax_steps."""
    optax = pytest.importorskip("optax")
    p0, g = np.array([[1.0, 2.0]]), np.array([[1.0, -1.0]])
    (one,) = G.optax_steps(optax.sgd(0.5), [p0], [[g]], "float32", False)
    np.testing.assert_allclose(one, [[0.5, 2.5]], rtol=1e-6)
    assert one.dtype == np.float64
    two = G.optax_steps(optax.sgd(0.5), [p0, 2 * p0], [[g, g], [g, g]], "float32", True)
    np.testing.assert_allclose(two[1][1], [[1.0, 5.0]], rtol=1e-6)
    run = O.optax_driver(lambda mu, nesterov=False: optax.sgd(0.5, momentum=mu or None),
                         "float32")
    np.testing.assert_array_equal(run(p0, [g], 0.0)[0], one)


# -- deadlines (issue 23, item 5): a hang is TIMEOUT, exit 5, naming the property and step ----

def test_a_hanging_driver_is_a_timeout_naming_the_property():
    import threading

    from swanref.verify.targets import TargetTimeout, stop_message
    good = I.make()

    def run(p0, grads, mu, **kw):
        if len(grads) == 2:  # the first two-step property hangs
            threading.Event().wait()
        return good(p0, grads, mu, **kw)
    r = O.check_optimizer(run, claim(), "hangs", timeout=1)
    assert r.outcome == "timeout" and r.exit_code == 5, r.table()
    row = r.result("momentum_before_orth")
    assert row.status == "timeout"
    assert row.message == stop_message(TargetTimeout(1.0, "momentum_before_orth: the driver's "
                                                     "run (construction and 2 step(s))"))
    assert r.status("one_step_wide") == "pass" and r.status("nesterov") == "not-run"
    assert "verdict: TIMEOUT (exit 5)" in r.table()
    with pytest.raises(G.UsageError):
        O.check_optimizer(good, claim(), timeout=-1)
    assert O.check_optimizer(good, claim(), timeout=0).conforming  # 0: no deadline


def test_cli_timeout_names_the_step_and_a_set_method_is_a_claim(capsys):
    torch, _ = _torch_classes()
    p = torch.nn.Parameter(torch.zeros(2))  # torch's first step imports torch._dynamo (slow)
    p.grad = torch.ones(2)
    torch.optim.SGD([p], lr=0.1).step()
    rc = O.main(["wrong_impls.torch_optimizers:HangsAtSecondStep", "--set", "method=svd",
                 "--timeout", "1"])
    out = capsys.readouterr().out
    assert rc == 5, out
    assert "while momentum_before_orth: step 2 of 2 (optimizer.step())" in out
    assert O.main(["wrong_impls.torch_optimizers:HangsAtSecondStep", "--set", "method=svd",
                   "--timeout", "soon"]) == 2


# -- second moments over steps (AdaMuon / NorMuon: v_t = beta2 v_{t-1} + (1 - beta2) s(O_t)) ---

@pytest.mark.parametrize("norm, extra", [("rows", {}), ("elementwise", dict(
    rematch="sqrt_min", second_moment_eps=1e-10))])
def test_second_moment_beta_is_a_claim(norm, extra):
    ema = I.make(normalise=norm, beta2=0.95)
    # the elementwise impl debiases as pytorch-optimizer's AdaMuon does: v / (1 - beta2^t)
    debias = dict(second_moment_debias=True) if norm == "elementwise" else {}
    assert check(ema, normalise=norm, second_moment_beta=0.95, **extra, **debias).conforming
    for run, beta in ((ema, None), (ema, 0.5), (I.make(normalise=norm), 0.95)):
        r = check(run, normalise=norm, second_moment_beta=beta, **extra,
                  **(debias if beta else {}))
        assert r.status("momentum_before_orth") == "FAIL", (beta, r.table())
        assert r.status("one_step_wide") == "pass"  # the first step cannot tell them apart
    with pytest.raises(ValueError, match="needs a normalisation"):
        claim(second_moment_beta=0.95)


def test_second_moment_beta_from_the_claim_record():
    from swanref.verify.claims import Claim
    c = Claim(level="optimizer", preset="torch_muon", second_moment="adamuon",
              second_moment_beta=0.95)
    oc = O.OptimizerClaim.from_claim(c)
    assert (oc.normalise, oc.second_moment_beta) == ("elementwise", 0.95)


def test_installed_adamuon_and_normuon_second_moment_is_modelled():
    """The built-in drivers of pytorch-optimizer's AdaMuon and NorMuon (default beta2 0.95):
    the second step's distance under second_moment_beta=0.95 and without it."""
    from dataclasses import replace
    errs = {}
    for name in ("pytorch_optimizer.AdaMuon", "pytorch_optimizer.NorMuon"):
        b = O.BUILTINS[name]
        for mod in b.needs:
            pytest.importorskip(mod)
        run = O._Runner(b.build())
        for beta in (None, 0.95):
            r = O._momentum_property(run, replace(
                b.claim, second_moment_beta=beta,
                second_moment_debias=beta is not None and b.claim.second_moment_debias),
                                     np.random.default_rng(0), np.float32)
            assert r.status == "pass", r
            errs[name.split(".")[1], beta] = r.error
    # bf16 rounding is about 1e-2; the unmodelled second moment 0.36 (AdaMuon), 0.05 (NorMuon)
    assert errs["AdaMuon", 0.95] < 0.05 < 0.2 < errs["AdaMuon", None], errs
    assert errs["NorMuon", 0.95] < errs["NorMuon", None] / 2, errs


def test_heavyball_caution_is_the_per_element_gate():
    """heavyball caution=True (utils._compilable_cautioning, Cautious Optimizers): the update
    masked where its sign differs from the gradient's, rescaled by numel / kept."""
    pytest.importorskip("torch")
    pytest.importorskip("heavyball")
    from dataclasses import replace
    b = O.BUILTINS["heavyball.Muon"]
    run = O._heavyball_muon(caution=True)
    assert O.check_optimizer(run, replace(b.claim, gate="cautious")).conforming
    r = O.check_optimizer(run, b.claim)  # the gate unclaimed
    assert r.status("one_step_wide") == "FAIL" and r.status("momentum_before_orth") == "FAIL"


def test_a_users_momentum_kwarg_is_the_claims_and_the_probes_still_set_it():
    """`--kwarg momentum=0.95` (torch.optim.Muon's default) gave a false NOT CONFORMING: the
    one-step probes ran at 0.95 where the check assumed 0, the two-step ones at 0.95 against a
    claimed 0.9.  The value is the claim's now, and each probe sets its own."""
    kw, upd = O.user_settings({"momentum": 0.95, "ns_steps": 5},
                              {"momentum": "momentum"}, ())
    assert kw == {"ns_steps": 5} and upd == {"momentum": 0.95}
    kw, upd = O.user_settings({"betas": (0.8, 0.99)}, {"momentum": "betas"}, ())
    assert kw == {"betas": (0.8, 0.99)} and upd == {"momentum": 0.8}
    assert O.user_settings({"momentum": 0.5}, {"momentum": "momentum"}, ("momentum",))[1] == {}
    _, T = _torch_classes()
    r = O.check_target(T.UseMuonGroups, preset="svd", precision="float32", nesterov="sutskever",
                       kwargs={"momentum": 0.5})
    assert r.conforming and r.claim["momentum"] == 0.5, r.table()


def test_an_nd_parameter_routed_to_adam_is_named_as_routed():
    """optax.contrib.muon sends 4-D parameters to Adam; under a claim of nd=flatten the
    conv probe named 'N-D rule batched' (no reading matched): it says what happened now."""
    adam = I.make()

    def run(p0, grads, mu, **kw):
        if np.ndim(p0) > 2:  # an Adam first step: lr * sign(g)
            return [np.asarray(p0) * (1 - I.LR * I.WD) - I.LR * np.sign(grads[0])]
        return adam(p0, grads, mu, **kw)
    r = check(run)
    assert r.status("one_step_conv") == "FAIL"
    assert "Adam-like" in msg(r, "one_step_conv") and "nd=routed" in msg(r, "one_step_conv")


def test_cli_preset_reads_its_source_at_the_optimizer_level(capsys):
    """`--preset X` alone: the preset's compute dtype (torch_muon: bf16) and not its
    orthogonaliser's N-D input rule (heavyball flattens before an orthogonaliser that batches)."""
    from swanref.verify.claims import Claim
    assert Claim.from_preset("heavyball_ns5").nd == "batch_leading"
    assert Claim.from_preset("heavyball_ns5", level="optimizer").nd == "flatten"
    pytest.importorskip("torch")
    code = O.main(["torch.optim:Muon", "--preset", "torch_muon", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["claim"]["precision"] == "bfloat16" and code == 0, out


@pytest.mark.parametrize("name", ["pytorch_optimizer.NorMuon", "pytorch_optimizer.AdaMuon"])
def test_installed_second_moment_eps_is_claimed_and_a_planted_one_named(name):
    """The built-in claims state the source's epsilon (1e-10), beta2 and bias correction: the
    installed optimizer passes second_moment_eps; built with eps=1e-6 it fails, naming it."""
    b = O.BUILTINS[name]
    for mod in b.needs:
        pytest.importorskip(mod)
    make = O._ptopt_normuon if name.endswith("NorMuon") else O._ptopt_adamuon
    rng = np.random.default_rng([0, 22])
    ok = O._axis_eps_property(O._Runner(make()), b.claim, rng, np.float32)
    assert ok.status == "pass", ok
    bad = O._axis_eps_property(O._Runner(make(eps=1e-6)), b.claim,
                               np.random.default_rng([0, 22]), np.float32)
    assert bad.status == "FAIL" and "matches: second_moment_eps=1e-06" in bad.message, bad


def test_a_norm_off_by_another_scale_rule_is_named():
    # Keller's rule applied where Moonlight's is claimed (or both multiplied, a real bug class):
    # the direction agrees, and the one-step message names the rule the norm matches
    r = check(I.make(), scale="moonlight")
    msg = r.result("one_step_tall").message
    assert r.status("one_step_tall") == "FAIL" and "matches: scale keller" in msg, msg
    # Keller's factor on top of Moonlight's: no single rule, the product is named
    r = check(_keller_on_top(I.make()), scale="moonlight")
    msg = r.result("one_step_tall").message
    assert "matches: the norm of scale rule keller x moonlight" in msg, msg


def _keller_on_top(inner):
    """The update of ``inner`` times Moonlight's factor as well (two scale rules multiplied)."""
    def run(p0, grads, mu, nesterov=False, group=False):
        out = inner(p0, grads, mu, nesterov=nesterov, group=group)
        f = 0.2 * math.sqrt(max(np.shape(p0)[-2:])) if not group and np.ndim(p0) == 2 else 1.0
        p = prev = np.asarray(p0, np.float64)
        res = []
        for q in out:
            step = prev * (1 - I.LR * I.WD) - np.asarray(q)   # inner's own update
            p, prev = p * (1 - I.LR * I.WD) - f * step, np.asarray(q)
            res.append(p.copy())
        return res
    return run


def test_a_stack_scaled_from_its_leading_axes_is_named():
    # Keras 3.10's Muon batched 3-D variables but scaled them by max(1, shape[0] / shape[1]):
    # invisible on a (3, 8, 16) probe (Keller's factor 1 either way), named on (12, 8, 4)
    r = check(I.make(stack="batched", scale_from_leading=True), stack="independent")
    assert r.status("stacked_3d") == "FAIL", r.table()
    assert "keller read from axes (0, 1) (12, 8)" in msg(r, "stacked_3d"), msg(r, "stacked_3d")
    assert check(I.make(stack="batched"), stack="independent").status("stacked_3d") == "pass"


def test_a_grad_norm_claim_makes_no_complex_claim():
    # SWAN's GradNorm is real-only (spec 9.7): the expected update of a complex parameter is
    # not the GradNorm of its real part (a float cast with a ComplexWarning), but no claim
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = O.check_optimizer(_routes_nothing_complex(), claim(pre="grad_norm"), "numpy")
    assert r.status("complex_input") == "no claim", r.table()
    assert "real-only" in msg(r, "complex_input")


def _routes_nothing_complex():
    """A driver whose complex step is the raw gradient step (what it returns does not matter:
    the claim has no complex reading)."""
    inner = I.make()

    def run(p0, grads, mu, nesterov=False, group=False):
        if np.iscomplexobj(p0) and not group:
            return [np.asarray(p0) - I.LR * g for g in grads]
        return inner(p0, grads, mu, nesterov=nesterov, group=group)
    return run


def _adam_for_4d(inner):
    """4-D parameters take an Adam-like step (|update| constant), others ``inner``'s."""
    def run(p0, grads, mu, nesterov=False, group=False):
        if group or np.ndim(p0) != 4:
            return inner(p0, grads, mu, nesterov=nesterov, group=group)
        p, out = np.array(p0, dtype=np.float64), []
        for g in grads:
            p = p * (1 - I.LR * I.WD) - I.LR * np.sign(g)
            out.append(p.copy())
        return out
    return run


def test_keras_310_nd_rule_is_a_claim():
    # Keras 3.10-3.12's Muon: 3-D variables batched, 4-D routed to AdamW (1 < ndim < 4)
    from swanref.verify.claims import Claim
    c = O.OptimizerClaim.from_claim(Claim.from_preset(
        "muon_ns5", level="optimizer", compute_dtype="float64", io_dtype="float64",
        nd="route_4d_batch_3d", nesterov="off"))
    assert (c.nd, c.stack) == ("routed", "independent")
    r = O.check_optimizer(_adam_for_4d(I.make(stack="batched")), c, "numpy")
    assert r.conforming and r.status("one_step_conv") == "routed", r.table()
    bug = O.check_optimizer(_adam_for_4d(I.make(stack="batched", scale_from_leading=True)), c,
                            "numpy")
    assert bug.status("stacked_3d") == "FAIL" and "axes (0, 1)" in msg(bug, "stacked_3d")
