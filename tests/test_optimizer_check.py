"""swanref check-optimizer: the optimizer-level properties on NumPy optimizers (a faithful one and
one wrong one per mistake), and on the real packages where they are installed (skipped here)."""
import numpy as np
import pytest

from swanref.update import orthogonalized_update
from swanref.verify import optimizer as O


def numpy_muon(*, orth_first=False, wd_scaled_lr=False, scale="keller", routes_vectors=True):
    """run(p0, grads, momentum) of a Muon written in NumPy: EMA momentum, then orthogonalise."""
    def run(p0, grads, mu):
        p, buf, out = np.array(p0, dtype=np.float64), np.zeros_like(p0), []
        for g in grads:
            if p.ndim < 2:
                if not routes_vectors:
                    raise ValueError("only matrices")
                p = p - O.LR * np.sign(g)  # an Adam first step
                out.append(p.copy())
                continue
            if orth_first:  # wrong: momentum over orthogonalised gradients
                buf = mu * buf + (1 - mu) * orthogonalized_update(g, "svd", scale=scale)
                u = buf
            else:
                buf = mu * buf + (1 - mu) * g
                u = orthogonalized_update(buf, "svd", scale=scale)
            lr_wd = O.LR * (2 if wd_scaled_lr else 1)
            p = p * (1 - lr_wd * O.WD) - O.LR * u
            out.append(p.copy())
        return out
    return run


CLAIM = O.OptimizerClaim("svd", "keller", precision="float64", param_dtype="float64")


def test_faithful_numpy_muon_conforms():
    r = O.check_optimizer(numpy_muon(), CLAIM, "numpy")
    assert r.conforming, r.table()
    assert r.status("vector_routed") == "pass"


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
    assert r.status("vector_routed") == "pass" and "rejected" in r.results[-1].message


def test_cli_lists_builtins(capsys):
    assert O.main(["--list"]) == 0
    assert "torch.optim.Muon" in capsys.readouterr().out
    assert O.main(["no.such.Optimizer"]) == 2


@pytest.mark.parametrize("name", ["torch.optim.Muon", "optax.contrib.muon",
                                  "pytorch_optimizer.Muon", "heavyball.Muon",
                                  "emerging_optimizers.Muon"])
def test_real_optimizer_conforms(name):
    b = O.BUILTINS[name]
    for mod in b.needs:
        pytest.importorskip(mod)
    r = O.check_optimizer(b.build(), b.claim, name)
    assert r.conforming, r.table()


def test_adamuon_is_not_an_orthogonalised_update():
    b = O.BUILTINS["pytorch_optimizer.AdaMuon"]
    for mod in b.needs:
        pytest.importorskip(mod)
    r = O.check_optimizer(b.build(), b.claim, b.name)
    assert r.status("one_step_wide") == "FAIL"


def numpy_swan():
    """SWAN as spec 4 states it: swan_route decides; "swan" parameters take swan_update (no
    state), the others an Adam first step."""
    import swanref

    def run(p0, grads, mu):
        p, out = np.array(p0, dtype=np.float64), []
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
                             param_dtype="float64", momentum=0.0, pre="grad_norm", nd="routed")
    r = O.check_optimizer(numpy_swan(), claim, "SWAN")
    assert r.conforming, r.table()
    assert r.status("vector_routed") == "pass"
    assert r.status("one_step_conv") == "routed"  # SWAN sends ndim != 2 to Adam (spec 4.2)
    # without GradNorm in the claim the same optimizer is not the orthogonalised gradient
    claim.pre = "none"
    assert O.check_optimizer(numpy_swan(), claim).status("one_step_wide") == "FAIL"
