"""swanref check-optimizer: the optimizer-level properties on NumPy optimizers (a faithful one and
one wrong one per mistake), and on the real packages where they are installed (skipped here)."""
import contextlib
import dataclasses
import pathlib
import re

import numpy as np
import pytest
from wrong_impls import update_impls as W

from swanref.update import orthogonalized_update
from swanref.verify import optimizer as O


def numpy_muon(*, orth_first=False, wd_scaled_lr=False, scale="keller", routes_vectors=True,
               orth=None, nesterov="sutskever", complex_ok=True, group="separate"):
    """run(p0, grads, momentum, nesterov=False, group=False) of a Muon written in NumPy: EMA
    momentum, then orthogonalise.  ``orth`` replaces the orthogonalised update (default: exact,
    flattened N-D); ``nesterov`` is how a Nesterov run combines: "sutskever" (torch's
    u = lerp(g, b, mu)), "after" (wrong: orthogonalise g and b, then combine) or "ignored"
    (wrong: u = b).  A group run (``group=True``: a list of parameters) steps each parameter
    alone (``group="separate"``) or batches the same-shape ones wrongly: ``"rows"`` (one
    orthogonalisation of the rows-concatenated (B m, n) stack, each block scaled as its own
    parameter) or ``"joint_norm"`` (the Keller quintic on the (B, m, n) stack with one Frobenius
    norm over the whole stack)."""
    def default_orth(G):
        return orthogonalized_update(G, "svd", scale=scale)
    orth = orth or default_orth

    def run(p0, grads, mu, nesterov_on=False, **kw):
        if kw.pop("group", False):
            return group_run(p0, grads, mu)
        nest = kw.get("nesterov", nesterov_on)
        if np.iscomplexobj(p0) and not complex_ok:
            raise TypeError("no complex parameters")
        dt = np.complex128 if np.iscomplexobj(p0) else np.float64
        p, out = np.array(p0, dtype=dt), []
        buf = np.zeros_like(p)
        for g in grads:
            if p.ndim < 2:
                if not routes_vectors:
                    raise ValueError("only matrices")
                p = p - O.LR * np.sign(g)  # an Adam first step
                out.append(p.copy())
                continue
            if orth_first:  # wrong: momentum over orthogonalised gradients
                buf = mu * buf + (1 - mu) * orth(g)
                u = buf
            else:
                buf = mu * buf + (1 - mu) * g
                if nest and nesterov == "after":
                    u = (1 - mu) * orth(g) + mu * orth(buf)
                elif nest and nesterov == "sutskever":
                    u = orth((1 - mu) * g + mu * buf)
                else:
                    u = orth(buf)
            lr_wd = O.LR * (2 if wd_scaled_lr else 1)
            p = p * (1 - lr_wd * O.WD) - O.LR * u
            out.append(p.copy())
        return out

    def group_run(p0s, steps, mu):
        if group == "separate":  # each parameter its own optimizer state and update
            per = [run(p, [gs[i] for gs in steps], mu) for i, p in enumerate(p0s)]
            return [[per[i][t] for i in range(len(p0s))] for t in range(len(steps))]
        ps, bufs, out = [np.array(p, dtype=np.float64) for p in p0s], [0.0] * len(p0s), []
        m, n = ps[0].shape
        for gs in steps:
            bufs = [mu * b + (1 - mu) * g for b, g in zip(bufs, gs)]
            if group == "rows":  # wrong: one Gram sum_i B_i^T B_i for the whole stack
                O_ = orthogonalized_update(np.concatenate(bufs, axis=0), "svd", scale="none")
                k = max(1.0, m / n) ** 0.5 if scale == "keller" else 1.0
                us = [k * O_[i * m:(i + 1) * m] for i in range(len(ps))]
            else:  # "joint_norm", wrong: X / ||stack||_F, then the quintic per slice
                X = np.stack(bufs)
                X = X / (np.linalg.norm(X) + 1e-7)
                for a, b, c in (W.KELLER,) * 5:
                    A = X @ np.swapaxes(X, -1, -2)
                    X = a * X + (b * A + c * A @ A) @ X
                us = [x * W.keller_scale(m, n) for x in X]
            ps = [p * (1 - O.LR * O.WD) - O.LR * u for p, u in zip(ps, us)]
            out.append([p.copy() for p in ps])
        return out
    return run


CLAIM = O.OptimizerClaim("svd", "keller", precision="float64", param_dtype="float64",
                         nesterov="sutskever")


def test_faithful_numpy_muon_conforms():
    r = O.check_optimizer(numpy_muon(), CLAIM, "numpy")
    assert r.conforming, r.table()
    assert r.status("vector_routed") == "pass"
    for name in ("nesterov", "stacked_3d", "complex_input"):
        assert r.status(name) == "pass", r.table()


# -- Nesterov, stacks, complex: each property rejects its wrong implementation -------------------

def test_nesterov_after_orthogonalisation_is_named():
    r = O.check_optimizer(numpy_muon(nesterov="after"), CLAIM, "numpy")
    assert r.status("nesterov") == "FAIL"
    msg = next(x.message for x in r.results if x.name == "nesterov")
    assert "after orthogonalisation" in msg, msg
    assert r.status("momentum_before_orth") == "pass"  # only the Nesterov path is wrong


def test_nesterov_ignored_and_wrong_convention_fail():
    r = O.check_optimizer(numpy_muon(nesterov="ignored"), CLAIM)
    assert r.status("nesterov") == "FAIL"
    assert "no Nesterov" in next(x.message for x in r.results if x.name == "nesterov")
    # the faithful (torch-style) optimizer does not satisfy optax's bias-corrected weights
    claim = O.OptimizerClaim("svd", "keller", precision="float64", param_dtype="float64",
                             nesterov="optax")
    r = O.check_optimizer(numpy_muon(), claim)
    assert r.status("nesterov") == "FAIL"
    assert "closest to sutskever" in next(x.message for x in r.results if x.name == "nesterov")


@pytest.mark.parametrize("mu", [0.5, 0.9, 0.95])
def test_nesterov_weights_follow_the_sources(mu):
    """The weights of NESTEROV, recomputed by running each source's recurrence literally on
    scalar gradients (the recurrences are linear: u2 = a1 g1 + a2 g2)."""
    def sutskever(gs):  # torch _single_tensor_muon: buf.lerp_(g, 1 - mu); g.lerp(buf, mu)
        b, us = 0.0, []
        for g in gs:
            b = b + (1 - mu) * (g - b)
            us.append(g + mu * (b - g))
        return us

    def optax(gs):  # scale_by_muon(nesterov=True), count t = 1, 2
        m, us = 0.0, []
        for t, g in enumerate(gs, 1):
            m = mu * m + (1 - mu) * g
            us.append(mu * m / (1 - mu ** (t + 1)) + (1 - mu) * g / (1 - mu ** t))
        return us

    def grokfast(gs):  # heavyball _compilable_nesterov_ema_: ema = lerp(e, g, 1 - mu); g + ema
        e, us = 0.0, []
        for g in gs:
            e = e + (1 - mu) * (g - e)
            us.append(g + e)
        return us
    for name, fn in (("sutskever", sutskever), ("optax", optax), ("grokfast", grokfast)):
        u1 = fn([1.0, 0.0])[0]
        a1, a2 = fn([1.0, 0.0])[1], fn([0.0, 1.0])[1]
        c1, c2 = O.NESTEROV[name][0](mu)
        assert u1 > 0 and a1 > 0 and a2 > 0
        assert a1 / a2 == pytest.approx(c1 / c2, rel=1e-12), name


def test_stack_flattened_when_claimed_independent_is_named():
    claim = O.OptimizerClaim("muon_ns5", "keller", precision="float64", param_dtype="float64",
                             stack="independent")
    assert O.check_optimizer(numpy_muon(orth=W.faithful_stack), claim).status("stacked_3d") \
        == "pass"
    r = O.check_optimizer(numpy_muon(orth=W.stack_flattened), claim)
    assert r.status("stacked_3d") == "FAIL"
    r = O.check_optimizer(numpy_muon(orth=W.faithful), claim)  # (B, m n): one matrix
    assert r.status("stacked_3d") == "FAIL"
    assert "flattened reading" in next(x.message for x in r.results if x.name == "stacked_3d")
    # and the reverse: a flattening claim rejects per-slice orthogonalisation
    claim.stack = "flattened"
    assert O.check_optimizer(numpy_muon(orth=W.faithful), claim).status("stacked_3d") == "pass"
    assert O.check_optimizer(numpy_muon(orth=W.faithful_stack), claim).status("stacked_3d") \
        == "FAIL"


def test_same_shape_parameters_orthogonalised_jointly_are_named():
    """Three same-shape matrices in one group: a batched path that orthogonalises the stack
    jointly (rows concatenated, or one Frobenius norm over the stack) is rejected with
    same_shape_independent named; the per-parameter optimizer passes."""
    r = O.check_optimizer(numpy_muon(), CLAIM)
    assert r.status("same_shape_independent") == "pass", r.table()
    r = O.check_optimizer(numpy_muon(group="rows"), CLAIM)
    assert _fails(r) == ["same_shape_independent"], r.table()
    msg = next(x.message for x in r.results if x.name == "same_shape_independent")
    assert "matches rows concatenated" in msg and "the grouping changes it" in msg, msg
    # the joint norm is invisible to an exact SVD; with the Keller quintic (W.faithful matches
    # muon_ns5 in float64) it leaves the small-gradient parameters unconverged
    claim = O.OptimizerClaim("muon_ns5", "keller", precision="float64", param_dtype="float64",
                             nesterov="sutskever", eps_form="invariant")
    r = O.check_optimizer(numpy_muon(orth=W.faithful), claim)
    assert r.status("same_shape_independent") == "pass", r.table()
    r = O.check_optimizer(numpy_muon(orth=W.faithful, group="joint_norm"), claim)
    assert _fails(r) == ["same_shape_independent"], r.table()
    res = next(x for x in r.results if x.name == "same_shape_independent")
    assert res.error > 0.1 and "one norm shared across the stack" in res.message, res.message
    # and the rows-concatenated batching under the quintic claim
    r = O.check_optimizer(numpy_muon(orth=W.faithful, group="rows"), claim)
    assert r.status("same_shape_independent") == "FAIL"


def test_driver_without_groups_is_unsupported():
    inner = numpy_muon()

    def run(p0, grads, mu, nesterov=False):  # no group keyword
        return inner(p0, grads, mu, nesterov=nesterov)

    def reads_list_as_stack(p0, grads, mu, nesterov=False, **kw):  # ignores group=True
        return inner(np.array(p0), [np.array(g) for g in grads], mu, nesterov=nesterov)
    for driver in (run, reads_list_as_stack):
        r = O.check_optimizer(driver, CLAIM)
        assert r.status("same_shape_independent") == "unsupported" and r.conforming


def test_complex_input_follows_the_claims_complex_knob():
    """A claim file's ``complex = false`` (the default) excludes complex_input's premise: a
    wrong complex update is a warning, never a failure; ``complex = true`` judges it."""
    from swanref.verify.claims import Claim
    run = numpy_muon(orth=W.complex_without_conjugate)
    base = dict(level="optimizer", preset="muon_ns5", compute_dtype="float64", nesterov="off")
    r = O.check_optimizer(run, O.OptimizerClaim.from_claim(Claim(**base)))
    assert r.status("complex_input") == "warn" and r.conforming, r.table()
    assert "states no complex support" in r.result("complex_input").message
    r = O.check_optimizer(run, O.OptimizerClaim.from_claim(Claim(**base, complex=True)))
    assert r.status("complex_input") == "FAIL"
    r = O.check_optimizer(numpy_muon(orth=W.faithful, complex_ok=False),
                          O.OptimizerClaim.from_claim(Claim(**base)))
    assert r.status("complex_input") == "not applicable" and r.conforming


def test_complex_without_conjugate_is_named():
    claim = O.OptimizerClaim("muon_ns5", "keller", precision="float64", param_dtype="float64",
                             eps_form="invariant")
    assert O.check_optimizer(numpy_muon(orth=W.faithful), claim).status("complex_input") \
        == "pass"
    r = O.check_optimizer(numpy_muon(orth=W.complex_without_conjugate), claim)
    assert r.status("complex_input") == "FAIL"
    assert r.status("one_step_wide") == "pass"  # real input cannot tell X X^T from X X^H

    def drops_imaginary(G):
        return W.faithful(np.real(G))
    r = O.check_optimizer(numpy_muon(orth=drops_imaginary), claim)
    assert r.status("complex_input") == "FAIL"
    assert "imaginary part is dropped" in \
        next(x.message for x in r.results if x.name == "complex_input")
    r = O.check_optimizer(numpy_muon(orth=W.faithful, complex_ok=False), claim)
    assert r.status("complex_input") == "unsupported" and r.conforming


def test_old_driver_without_nesterov_keyword():
    inner = numpy_muon()

    def run(p0, grads, mu):  # the PR-1 driver signature
        return inner(p0, grads, mu)
    r = O.check_optimizer(run, CLAIM)
    assert r.status("nesterov") == "unsupported" and r.status("one_step_wide") == "pass"


def test_orthogonalising_before_momentum_is_named():
    r = O.check_optimizer(numpy_muon(orth_first=True), CLAIM, "numpy")
    assert r.status("momentum_before_orth") == "FAIL"
    assert r.status("one_step_wide") == "pass"  # one step cannot tell the order apart


def test_wrong_weight_decay_and_scale_fail_one_step():
    assert O.check_optimizer(numpy_muon(wd_scaled_lr=True), CLAIM).status("one_step_wide") \
        == "FAIL"
    r = O.check_optimizer(numpy_muon(scale="moonlight"), CLAIM)
    assert r.status("one_step_tall") == "FAIL"


def test_rejection_is_reported_not_failed():
    r = O.check_optimizer(numpy_muon(routes_vectors=False), CLAIM)
    assert r.status("vector_routed") == "pass"
    assert "rejected" in next(x.message for x in r.results if x.name == "vector_routed")


def test_cli_lists_builtins(capsys):
    assert O.main(["--list"]) == 0
    assert "torch.optim.Muon" in capsys.readouterr().out
    assert O.main(["no.such.Optimizer"]) == 2


def _jax_on_cpu(name):
    """The docs' table is JAX on the CPU; on a GPU JAX's default float32 matmul precision is
    TF32-like and optax's float32 claim fails (direction distance 2.6e-3 on an H100)."""
    if name != "optax.contrib.muon":
        return contextlib.nullcontext()
    import jax
    return jax.default_device(jax.devices("cpu")[0])


@pytest.mark.parametrize("name", ["torch.optim.Muon", "optax.contrib.muon",
                                  "pytorch_optimizer.Muon", "heavyball.Muon",
                                  "emerging_optimizers.Muon"])
def test_real_optimizer_conforms(name):
    """Every verdict as the installed source predicts (docs/optimizers.md): conforming, except
    heavyball's complex parameters (accepted, imaginary part dropped by its bf16 cast)."""
    b = O.BUILTINS[name]
    for mod in b.needs:
        pytest.importorskip(mod)
    with _jax_on_cpu(name):
        r = O.run_builtin(name)  # check_optimizer, and same_shape_independent per variant
    fails = [x.name for x in r.results if x.status == "FAIL"]
    assert fails == (["complex_input"] if name == "heavyball.Muon" else []), r.table()
    expect = {"torch.optim.Muon": ("pass", "unsupported", "unsupported"),
              "optax.contrib.muon": ("pass", "pass", "pass"),
              "pytorch_optimizer.Muon": ("pass", "pass", "unsupported"),
              "heavyball.Muon": ("pass", "pass", "FAIL"),
              "emerging_optimizers.Muon": ("pass", "unsupported", "unsupported")}[name]
    assert tuple(r.status(k) for k in ("nesterov", "stacked_3d", "complex_input")) == expect
    # three same-shape matrices in one group: per parameter in every package (default path and
    # its other batching option, see test_same_shape_group_batching_as_the_source_says)
    group = {x.name: x.status for x in r.results if x.name.startswith("same_shape")}
    assert group == {"same_shape_independent": "pass",
                     **{f"same_shape_independent[{k}]": "pass" for k in b.variants}}, r.table()
    if name == "heavyball.Muon":
        assert "imaginary part is dropped" in next(x.message for x in r.results
                                                   if x.name == "complex_input")


def _documented_rows(name):
    """docs/optimizers.md's results-table rows of builtin ``name``."""
    doc = (pathlib.Path(__file__).parents[1] / "docs" / "optimizers.md").read_text()
    return [ln for ln in doc.splitlines()
            if ln.startswith(f"| `{name}` | {O.BUILTINS[name].needs[-1]} ")]


def _skip_unless_documented_version(name):
    """Skip where the installed package is not the version docs/optimizers.md's table names."""
    installed = O.package_label(O.BUILTINS[name])
    named = {ln.split(" | ")[1] for ln in _documented_rows(name)}
    if installed not in named:
        pytest.skip(f"installed {installed}; the docs name {', '.join(sorted(named))}")


@pytest.mark.parametrize("name, label, batch", [
    ("pytorch_optimizer.Muon", None, (3, 8, 16)),          # foreach=None batches on the CPU too
    ("pytorch_optimizer.Muon", "foreach=True", (3, 8, 16)),
    ("pytorch_optimizer.AdaMuon", None, (8, 16)),          # foreach=False by default
    ("pytorch_optimizer.AdaMuon", "foreach=True", (3, 8, 16)),
    ("heavyball.Muon", None, (8, 16)),                     # multi_tensor, yet one matrix a call
    ("heavyball.Muon", "multi_tensor=False", (8, 16)),
])
def test_same_shape_group_batching_as_the_source_says(name, label, batch, monkeypatch):
    """What each orthogonaliser receives for a group of three (8, 16) parameters: the
    pytorch-optimizer foreach path stacks them into one (3, 8, 16) call of
    zero_power_via_newton_schulz_5 (base.py MuonBase._orthogonalize, torch.stack), which
    normalises per matrix (norm over dim=(-2, -1)) and iterates with bmm, so the update stays
    per parameter; heavyball's orthogonalize_update is no_state_no_multi_tensor (one call per
    parameter).  The verdict is same_shape_independent pass (AdaMuon under its
    normalise=elementwise claim too)."""
    b = O.BUILTINS[name]
    for mod in b.needs:
        pytest.importorskip(mod)
    _skip_unless_documented_version(name)  # the spy patches the package's internals
    calls = []
    if name.startswith("pytorch_optimizer"):  # imported by name in both modules
        from pytorch_optimizer.optimizer.muon import adamuon, base
        targets, attr = (base, adamuon), "zero_power_via_newton_schulz_5"
    else:
        from heavyball import utils
        targets, attr = (utils,), "inplace_orthogonal_"
    inner = getattr(targets[0], attr)

    def spy(x, *a, **k):
        calls.append(tuple(x.shape))
        return inner(x, *a, **k)
    for target in targets:
        monkeypatch.setattr(target, attr, spy)
    run = (b.variants[label] if label else b.build)()
    res = O.same_shape_property(run, b.claim, 0, np.float64 if b.claim.param_dtype == "float64"
                                else np.float32)
    n_group = len(O.GROUP_NORMS)
    want = [batch] if len(batch) == 3 else [batch] * n_group
    assert calls[:len(want)] == want, calls
    assert res.status == "pass", res


def test_adamuon_needs_its_second_moment_claim():
    """pytorch-optimizer's AdaMuon: an orthogonalised update divided elementwise by its second
    moment; without normalise=elementwise in the claim the one-step comparison fails, with it
    the update matches (in bf16 the sign-flip tolerance makes the wide probe assert nothing,
    so the distance itself is checked)."""
    b = O.BUILTINS["pytorch_optimizer.AdaMuon"]
    for mod in b.needs:
        pytest.importorskip(mod)
    plain = dataclasses.replace(b.claim, normalise="none", rematch="orth", second_moment_eps=0.0,
                                second_moment_beta=None, second_moment_debias=False)
    r = O.check_optimizer(b.build(), plain, b.name)
    assert r.status("one_step_wide") == "FAIL"
    r = O.check_optimizer(b.build(), b.claim, b.name)
    assert r.result("one_step_wide").error < 1e-4 and r.conforming, r.table()


def numpy_swan():
    """SWAN as spec 4 states it: swan_route decides; "swan" parameters take swan_update (no
    state), the others an Adam first step."""
    import swanref

    def run(p0, grads, mu):
        p, out = np.array(p0, dtype=np.result_type(p0, np.float64)), []
        for g in grads:
            if swanref.swan_route("fc1.weight" if p.ndim == 2 else "fc1.bias", p.shape) == "swan":
                p = p * (1 - O.LR * O.WD) - swanref.swan_update(g, lr=O.LR)
            else:
                p = p - O.LR * np.sign(g)
            out.append(p.copy())
        return out
    return run


def test_swan_itself():
    import swanref
    assert swanref.swan_route("fc1.weight", (8, 16)) == "swan"
    assert swanref.swan_route("embed.weight", (50, 8)) == "adam"
    assert swanref.swan_route("fc1.bias", (8,)) == "adam"
    claim = O.OptimizerClaim("newton_schulz", "swan", precision="float64",
                             param_dtype="float64", momentum=0.0, pre="grad_norm", nd="routed",
                             stack="routed")
    r = O.check_optimizer(numpy_swan(), claim, "SWAN")
    assert r.conforming, r.table()
    assert r.status("vector_routed") == "pass"
    assert r.status("one_step_conv") == "routed"  # SWAN sends ndim != 2 to Adam (spec 4.2)
    # without GradNorm in the claim the same optimizer is not the orthogonalised gradient
    claim.pre = "none"
    assert O.check_optimizer(numpy_swan(), claim).status("one_step_wide") == "FAIL"


# -- SWAN on a small torch model: the routing rule and the update per parameter ------------------

SWAN_CLAIM = dict(preset="newton_schulz", scale="swan", pre="grad_norm", precision="float64",
                  param_dtype="float64", momentum=0.0)


def swan_model_report(variant):
    torch = pytest.importorskip("torch")
    from wrong_impls import swan_torch
    torch.manual_seed(0)
    model = swan_torch.TinyModel().double()
    run = O.torch_model_driver(lambda named: swan_torch.SWAN(named, lr=O.LR, weight_decay=O.WD,
                                                             variant=variant), model)
    return O.check_model(run, O.OptimizerClaim(**SWAN_CLAIM), name=f"SWAN ({variant})")


def _fails(report):
    return sorted(r.name for r in report.results if r.status == "FAIL")


def test_swan_torch_model_conforms():
    import swanref
    r = swan_model_report("faithful")
    assert r.conforming, r.table()
    routed = {x.name[len("update["):-1] for x in r.results if x.name.startswith("update[")}
    # swan_route: the 2-D block weights are whitened; embedding, head, biases, norm, conv: Adam
    assert routed == {"up.weight", "down.weight", "mix.weight"}
    assert swanref.swan_route("lm_head.weight", (50, 8)) == "adam"
    assert len([x for x in r.results if x.name.startswith("routing[")]) == 11


@pytest.mark.parametrize("variant, fails", [
    ("vectors_whitened", ["routing[conv.bias]", "routing[down.bias]", "routing[norm.bias]",
                          "routing[norm.weight]", "routing[up.bias]"]),
    ("embedding_whitened", ["routing[embed.weight]", "routing[lm_head.weight]"]),
    ("conv_flattened", ["routing[conv.weight]"]),
    ("whiten_first", ["update[down.weight]", "update[mix.weight]", "update[up.weight]"]),
    ("no_rescale", ["update[down.weight]", "update[mix.weight]", "update[up.weight]"]),
])
def test_swan_torch_wrong_variants_are_named(variant, fails):
    r = swan_model_report(variant)
    assert _fails(r) == fails, r.table()


def test_swan_torch_model_gradients_from_autograd():
    """The model runs forward and backward; the routing is the same with real gradients."""
    torch = pytest.importorskip("torch")
    from wrong_impls import swan_torch
    torch.manual_seed(1)
    model = swan_torch.TinyModel().double()
    out = model(torch.randint(0, 50, (2, 5)), torch.randn(2, 4, 6, 6, dtype=torch.float64))
    out.square().mean().backward()
    opt = swan_torch.SWAN(model.named_parameters(), lr=O.LR, weight_decay=O.WD)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    W = model.up.weight
    U = ((before["up.weight"] * (1 - O.LR * O.WD) - W.detach()) / O.LR).numpy()
    E = O._expected(O.OptimizerClaim(**SWAN_CLAIM), W.grad.numpy())
    assert np.linalg.norm(U - E) / np.linalg.norm(E) < 1e-9


@pytest.mark.parametrize("name", list(O.BUILTINS))
def test_docs_table_row_is_what_the_command_prints(name):
    """docs/optimizers.md's results rows are `swanref check-optimizer --table` output (checked
    where the installed package has the version the row names)."""
    b = O.BUILTINS[name]
    for mod in b.needs:
        pytest.importorskip(mod)
    documented = _documented_rows(name)
    assert len(documented) == 1
    _skip_unless_documented_version(name)
    with _jax_on_cpu(name):
        row = O.results_table([name])
    # verdicts and text exactly; distances within a factor 4: BLAS builds and jax versions move
    # them (8.8e-07 here is 1.0e-06 with JAX on another machine's CPU)
    number = re.compile(r"\d\.\de[-+]\d\d")
    assert number.sub("#", documented[0]) == number.sub("#", row)
    for doc_value, value in zip(number.findall(documented[0]), number.findall(row)):
        lo, hi = sorted((float(doc_value), float(value)))
        assert hi <= 4 * lo, (doc_value, value)


def test_optimizer_raising_on_every_run_is_a_usage_error():
    """Issue 22: an optimizer that raises on every run is a usage error (exit 2) naming the
    exception, not INCOMPLETE with every property 'unsupported'."""
    from swanref.verify.optimizer import OptimizerClaim, check_optimizer
    from swanref.verify.targets import UsageError

    def broken(p0, grads, momentum, nesterov=False, group=False):
        raise RuntimeError("always broken")
    with pytest.raises(UsageError, match="every run of the check.*always broken"):
        check_optimizer(broken, OptimizerClaim("torch_muon", "keller"), timeout=None)
