"""check update --preset NAME reads the preset as its source runs it (docs/spec.md 11.1): every
catalogue preset's own emulation conforms with no override, a variant with another epsilon or
step count does not; io_dtype, the cautious gate and a stateful second moment at the update
level; torch.optim.Muon's own orthogonaliser where torch is installed."""
import dataclasses
import pathlib

import numpy as np
import pytest

from swanref.presets.catalogue import PRESETS, ROUTES, get_preset, run_preset, schedule
from swanref.update import orthogonalized_update
from swanref.verify.claims import Claim
from swanref.verify.update_properties import check_update

NAMES = [n for n in list(PRESETS) + list(ROUTES) if n != "custom"]


def emulation(name, **changes):
    """The preset run as its source does (its compute dtype), ``changes`` to the Preset."""
    steps = changes.pop("steps", None)
    p = dataclasses.replace(get_preset(name), **changes)
    sched = schedule(name, steps)
    return lambda G: run_preset(G, p, sched, "source")


def failed(report):
    return {r.name for r in report.results if r.status == "FAIL"}


@pytest.mark.parametrize("name", NAMES)
def test_each_preset_emulation_conforms_to_its_own_claim(name):
    report = check_update(emulation(name), claim=Claim.from_preset(name, scale="none"))
    assert report.conforming, report.table()


@pytest.mark.parametrize("name", NAMES)
def test_another_epsilon_or_step_count_does_not(name):
    p = get_preset(name)
    claim = Claim.from_preset(name, scale="none")
    assert failed(check_update(emulation(name, steps=max(1, p.steps // 2)), claim=claim))
    if p.norm in ("add", "clamp") and p.eps > 0:
        assert "epsilon" in failed(check_update(emulation(name, eps=1e-3), claim=claim))


def test_cli_preset_needs_no_set(capsys):
    from swanref.verify.checker import main
    target = str(pathlib.Path(__file__).parent / "wrong_impls" / "update_impls.py")
    for name in ("torch_muon", "gram_ns", "optax_muon"):
        assert main(["update", target + ":source_emulation", "--preset", name, "--scale", "none",
                     "--kwarg", f"preset={name}"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "dtype=bfloat16" in out and "nd=2d_only" in out
    # --dtype states another compute dtype: torch_muon's bf16 emulation is not float32 compute
    assert main(["update", target + ":source_emulation", "--preset", "torch_muon", "--scale",
                 "none", "--kwarg", "preset=torch_muon", "--dtype", "float32"]) == 1
    assert "matches compute_dtype='bfloat16'" in capsys.readouterr().out


def test_io_dtype_bfloat16_probes_and_updates():
    pytest.importorskip("ml_dtypes")
    import ml_dtypes
    bf16 = np.dtype(ml_dtypes.bfloat16)

    def bf16_update(G):  # a bf16 parameter: gradient and update in bf16, compute in bf16
        assert np.asarray(G).dtype == bf16
        return emulation("torch_muon")(np.asarray(G, np.float32)).astype(bf16)

    claim = Claim.from_preset("torch_muon", scale="none", io_dtype="bfloat16")
    report = check_update(bf16_update, claim=claim)
    assert report.conforming, report.table()
    assert {r.name: r.status for r in report.results}["dtype_kept"] == "pass"
    # returning the compute dtype for a float32 gradient is named
    def from_any(G):  # torch.optim.Muon's orthogonaliser: bf16 whatever the gradient's dtype
        return bf16_update(np.asarray(G).astype(bf16))

    r2 = check_update(from_any, claim=claim.replace(io_dtype=None))
    msg = next(r.message for r in r2.results if r.name == "dtype_kept")
    assert "returns its compute dtype" in msg


def _cautious(G, per_column=False):
    O = orthogonalized_update(G, "svd")
    prod = O * G
    mask = (prod.sum(axis=-2, keepdims=True) > 0) if per_column else prod > 0
    mask = np.broadcast_to(mask, O.shape)
    return np.where(mask, O / max(mask.mean(), 1e-3), 0).astype(O.dtype)


@pytest.mark.parametrize("gate", ["per_element", "per_column"])
def test_cautious_gate_at_the_update_level(gate):
    fn = lambda G: _cautious(G, gate == "per_column")  # noqa: E731
    claim = Claim(method="svd", gate=gate, nd="2d_only")
    assert check_update(fn, claim=claim).conforming
    plain = check_update(lambda G: orthogonalized_update(G, "svd"), claim=claim)
    if gate == "per_element":
        assert not check_update(fn, claim=claim.replace(gate="per_column")).conforming
        assert not plain.conforming
    else:  # on one gradient the column sums of O * G are diag(V S V^T) >= 0: nothing is masked
        assert plain.conforming


def test_second_moment_is_not_applicable_with_its_reason():
    report = check_update(lambda G: orthogonalized_update(G, "svd"),
                          claim=Claim(second_moment="adamuon"))
    assert {r.status for r in report.results} == {"n/a"}
    assert all("optimizer state" in r.message for r in report.results)
    assert not report.conforming


def test_torch_muon_orthogonaliser_conforms_as_its_optimizer_uses_it():
    torch = pytest.importorskip("torch")
    from torch.optim._muon import _zeropower_via_newtonschulz

    def update(G):  # torch.optim.Muon: p.add_ casts the bf16 result to the parameter's dtype
        return _zeropower_via_newtonschulz(G, (3.4445, -4.775, 2.0315), 5, 1e-7).to(G.dtype)

    claim = Claim.from_preset("torch_muon", scale="none")
    assert check_update(update, claim=claim, array_type="torch").conforming
    wrong = lambda G: _zeropower_via_newtonschulz(  # noqa: E731
        G, (3.4445, -4.775, 2.0315), 5, 1e-3).to(G.dtype)
    assert "epsilon" in failed(check_update(wrong, claim=claim, array_type="torch"))
    assert torch is not None


def test_float16_io_outside_the_format_is_skipped_not_a_crash():
    """A float16 parameter: the scaled probes float16 cannot hold say nothing (was a crash)."""
    def fp16_update(G):
        return emulation("gram_ns")(np.asarray(G, np.float32)).astype(np.float16)

    claim = Claim.from_preset("gram_ns", scale="none", io_dtype="float16")
    report = check_update(fp16_update, claim=claim)
    assert report.conforming, report.table()


class FailOnRecompileLimitHit(Exception):
    """torch._dynamo.exc's, as a fullgraph=True compiled target raises it."""


def _compiled_after(n):
    """A stand-in for a torch.compile(dynamic=False, fullgraph=True) target: the polar factor,
    until ``n`` distinct (shape, dtype) have been compiled."""
    seen = set()

    def polar(G):
        key = (G.shape, G.dtype)
        if key not in seen and len(seen) >= n:
            raise FailOnRecompileLimitHit("Hard failure due to fullgraph=True. Recompile limit "
                                          "exceeded (torch._dynamo.config.recompile_limit=8)")
        seen.add(key)
        return orthogonalized_update(G, "svd", scale="none")
    return polar


def test_recompile_limit_is_inconclusive_not_a_failure():
    """Issue 22: a compiled target stopped by torch's recompile limit is INCONCLUSIVE (exit 3)
    with the fix, never NOT CONFORMING."""
    from swanref.verify import checker
    report = check_update(_compiled_after(2), claim=Claim(method="svd", scale="none"))
    stopped = [r for r in report.results if r.status == "compile-limit"]
    assert stopped and not report.failures, report.table()
    assert report.outcome == "INCONCLUSIVE" and report.exit_code == 3
    assert "recompile_limit" in stopped[0].message and "compile_mode = None" in \
        stopped[0].message
    # the operator level: hypothesis draws many shapes; the summary offers --shapes few
    op = checker.check(_compiled_after(3), "whiten", properties=["agrees_with_reference"],
                       examples=10, target_name="mod:polar", suggest=False)
    assert op.status("agrees_with_reference") == "compile-limit", op.table()
    assert op.exit_code == 3 and "--shapes few" in op.table()


def test_compile_room_is_put_back(monkeypatch):
    import sys
    import types
    from swanref.verify.targets import COMPILE_ROOM, compile_room
    cfg = types.SimpleNamespace(recompile_limit=8)  # torch._dynamo.config's knob, as loaded
    monkeypatch.setitem(sys.modules, "torch._dynamo.config", cfg)
    seen = {}
    with compile_room(seen):
        assert cfg.recompile_limit == COMPILE_ROOM
    assert cfg.recompile_limit == 8 and seen == {"recompile_limit": 8}


def test_compiled_target_gets_the_room_on_the_worker_thread():
    """torch >= 2.6 keeps dynamo's config per thread: the room must be made on the thread
    that calls the target (it was made on the caller's, and a faithful compiled target failed
    at the 9th shape)."""
    torch = pytest.importorskip("torch")

    def _ns(G):
        return G / (G.norm() + 1e-300)  # one scale: the update is unchanged
    normalise = torch.compile(_ns, dynamic=False, backend="eager", fullgraph=True)

    def update(G):  # an svd update around a compiled step that sees every probe shape
        out = torch.from_numpy(orthogonalized_update(normalise(G).numpy(), "svd",
                                                     scale="none"))
        return out.to(G.dtype)
    torch._dynamo.reset()
    report = check_update(update, claim=Claim(method="svd", scale="none"), array_type="torch")
    assert report.conforming, report.table()
    assert any("recompile_limit was" in h for h in report.hints)
    assert torch._dynamo.config.recompile_limit == 8  # the caller's value is untouched


def coefficient_array_target(G, ns_coeffs):
    """Reads ``ns_coeffs.ndim`` as optax's orthogonalize_via_newton_schulz does."""
    assert ns_coeffs.ndim == 1 and ns_coeffs.dtype == G.dtype
    return G * 0 + G * ns_coeffs.sum() / ns_coeffs.sum()


def test_a_coefficient_list_becomes_the_targets_array():
    """optax reads ns_coeffs.ndim: a --kwarg list becomes an array of the target's framework
    in the gradient's precision (checked on optax by hand: CONFORMING under optax_muon)."""
    pytest.importorskip("torch")
    from swanref.verify.checker import check
    report = check(coefficient_array_target, "update", array_type="torch",
                   kwargs={"ns_coeffs": [3.4445, -4.775, 2.0315]}, properties=["dtype_kept"],
                   scale="none")
    assert report.conforming, report.table()


def test_pytorch_optimizer_gram_newton_schulz_float16(capsys):
    """pytorch-optimizer's Gram Newton-Schulz returns float16: io_dtype states it; a probe
    float16 cannot hold is skipped (was a crash)."""
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_optimizer")
    from swanref.verify.checker import main
    assert main(["update", "pytorch_optimizer.optimizer.utils.matrix:"
                 "zero_power_via_gram_newton_schulz", "--preset", "gram_ns", "--scale", "none",
                 "--array-type", "torch", "--set", "io_dtype=float16", "--set",
                 "coefficients=[[3.4445,-4.775,2.0315]]", "--set", "eps_form=clamp",
                 "--set", "norm_scale=1.0"]) == 0, capsys.readouterr().out
