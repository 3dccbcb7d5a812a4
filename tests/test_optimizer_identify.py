"""``swanref identify --level optimizer`` (docs/spec.md 11.6): the optimizer claim space searched
knob by knob on recorded runs; the printed claim is the one the check ran under, and it reads
back; planted differences are found and the alternatives name the probes that separate them."""
import json

import pytest
from wrong_impls import optimizer_impls as I

from swanref.cli import main as cli_main
from swanref.verify import optimizer as O
from swanref.verify.claims import parse_text
from swanref.verify.optimizer_identify import identify_optimizer, to_claim


def test_planted_epsilon_and_gate_are_identified_and_the_claim_reads_back():
    run = I.make(eps=1e-8, gate="cautious", nesterov_always=True)
    r = identify_optimizer(driver=run, param_dtype="float64")
    c = r.claim
    assert r.match, r.summary()
    assert (c.eps, c.eps_form, c.gate, c.nesterov, c.nesterov_variant, c.compute_dtype) == (
        1e-8, "add", "per_element", "always", "sutskever", "float64"), r.summary()
    assert r.runs < 40  # each probe runs once, every candidate is judged on the recording
    # the claim file, read back, is what the check conforms to
    back = parse_text(r.claim_text(), "toml")
    assert O.check_optimizer(
        run, O.OptimizerClaim.from_claim(back), "numpy").conforming
    # the nearest alternatives are listed with the properties that separate them
    nest = next(a for a in r.alternatives if a.knob == "nesterov")
    assert nest.label == "nesterov=off" and nest.separating[0][0] == "momentum_before_orth"
    # the preset's own epsilon fails where the identified one passes
    own = O.check_optimizer(run, O.OptimizerClaim.from_claim(back.replace(eps=1e-7)), "numpy")
    assert own.status("eps_small_gradient") == "FAIL"
    assert "nearest alternatives" in r.summary()


def test_a_faithful_optimizer_gets_the_default_knobs():
    r = identify_optimizer(driver=I.make(normalise="rows"), param_dtype="float64")
    c = r.claim
    assert r.match and (c.norm_axis, c.gate, c.second_moment, c.scale, c.scale_factor,
                        c.nd) == ("rows", "none", "none", "keller", 1.0, "flatten"), r.summary()


def test_to_claim_refuses_what_no_claim_states():
    oc = O.OptimizerClaim("muon_ns5", nesterov="ema_mu")
    with pytest.raises(ValueError, match="ema_mu"):
        to_claim(oc)


def test_torch_muon_is_identified_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "muon.toml"
    code = cli_main(["identify", "--optimizer", "torch.optim:Muon", "--json",
                     "--output", str(out)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["match"], data["label"]
    c = parse_text(out.read_text(), "toml")
    assert (c.preset, c.compute_dtype, c.nd, c.nesterov, c.nesterov_variant, c.scale) == (
        "torch_muon", "bfloat16", "2d_only", "on", "sutskever", "keller")
    assert cli_main(["identify", "--optimizer", "torch.optim:Muon", "--dtype",
                     "bfloat16"]) == 2


def test_a_hang_stops_identify_with_timeout(capsys):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(2))  # torch's first step imports torch._dynamo (slow)
    p.grad = torch.ones(2)
    torch.optim.SGD([p], lr=0.1).step()
    code = cli_main(["identify", "--optimizer", "wrong_impls.torch_optimizers:HangsAtSecondStep",
                     "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 5 and "momentum_before_orth: step 2 of 2" in out, out


def test_an_exact_method_in_low_precision_is_a_usage_error():
    with pytest.raises(O.UsageError, match="emulated with a preset"):
        O.make_claim({"preset": "svd", "precision": "bfloat16"})


def _routes_nd_and_breaks_complex(inner):
    """Keras 3's Muon, in NumPy: N-D and 1-D parameters take an Adam-like step (|update|
    constant), and a complex parameter gets NaN (``X X^T`` without the conjugate diverges)."""
    import numpy as np

    def run(p0, grads, momentum, nesterov=False, group=False):
        if group or (np.ndim(p0) == 2 and not np.iscomplexobj(p0)):
            return inner(p0, grads, momentum, nesterov=nesterov, group=group)
        p, out = np.array(p0), []
        for g in grads:
            p = p * np.nan if np.iscomplexobj(p0) else p * (1 - I.LR * I.WD) - I.LR * np.sign(g)
            out.append(p.copy())
        return out
    return run


def test_routed_parameters_are_identified_next_to_a_broken_complex_update():
    # the routed N-D parameters are the optimizer's observed rule (status routed: a pass),
    # and an advisory complex failure, the same under every candidate, weighs nothing
    r = identify_optimizer(driver=_routes_nd_and_breaks_complex(I.make()),
                           param_dtype="float64", alternatives=20)
    assert r.match and r.claim.nd == "routed" and not r.claim.complex, r.summary()
    assert r.report.status("complex_input") == "warn"
    other = next(a for a in r.alternatives if a.knob == "nd")  # route_4d_batch_3d, closest
    assert other.separating and other.separating[0][0] in ("one_step_conv", "stacked_3d"), \
        r.summary()
    assert all(a.distance < float("inf") for a in r.alternatives if a.knob != "nd"), \
        r.summary()
