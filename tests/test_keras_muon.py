"""Keras 3's Muon (``keras.optimizers.Muon``) checked as its users would, with zero glue: the
optimizer by import path (``check-optimizer``, Keras's calling convention: ``keras.Variable``
parameters, ``apply_gradients``), its orthogonaliser method by ``Class().method``
(``check update``), and ``identify --level optimizer``.  The claim is what its source says:
Keller's quintic, 5 steps, ``X / (||X||_F + 1e-7)`` in the variable's dtype (float32), the
Moonlight rule ``0.2 sqrt(max(m, n))`` (``rms_rate``), SGD-form Nesterov, and every non-2-D
variable routed to AdamW.  Skipped without keras (or a backend it can load)."""
import os

import pytest

from swanref.verify.checker import check
from swanref.verify.claims import Claim
from swanref.verify.optimizer import check_target
from swanref.verify.optimizer_identify import identify_optimizer


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # keras reads it at its first import
    try:
        import keras
    except Exception as exc:  # noqa: BLE001 - no keras, or no backend it can load
        pytest.skip(f"keras not importable: {type(exc).__name__}: {exc}")
    if not hasattr(keras.optimizers, "Muon"):
        pytest.skip("keras without keras.optimizers.Muon (added in 3.10)")
    return keras


CLAIM = Claim.from_preset("muon_ns5", level="optimizer", compute_dtype="float32",
                          scale="moonlight", nd="routed")


def test_keras_muon_conforms_by_import_path(keras):
    r = check_target("keras.optimizers:Muon", CLAIM)
    assert r.conforming, r.table()
    assert [r.status(f"one_step_{k}") for k in ("wide", "tall", "square", "conv")] == [
        "pass", "pass", "pass", "routed"], r.table()
    assert r.status("nesterov") == "pass" and r.status("stacked_3d") == "routed"
    # an instance is rebuilt per probe from its configuration (Keras binds state to variables)
    assert check_target(keras.optimizers.Muon(ns_steps=5), CLAIM).conforming


@pytest.mark.parametrize("cls, prop, words", [
    ("MuonClampEps", "eps_small_gradient", "matches: eps 1e-07 (clamp)"),
    ("MuonStaleNesterov", "nesterov", "closest to no Nesterov"),
    ("MuonDoubleScale", "one_step_tall", "scale rule keller x moonlight"),
])
def test_planted_keras_bugs_are_named(keras, cls, prop, words):
    r = check_target(f"wrong_impls.keras_muon:{cls}", CLAIM)
    assert not r.conforming and r.status(prop) == "FAIL", r.table()
    assert words in r.result(prop).message, r.result(prop).message


def test_keras_orthogonaliser_method_conforms_at_the_update_level(keras):
    from swanref.verify.targets import load_target
    fn = load_target("keras.optimizers:Muon().zeropower_via_newtonschulz5")
    claim = Claim.from_preset("muon_ns5", compute_dtype="float32", scale="none",
                              io_dtype="float32", nd="batch_leading")
    r = check(fn, "update", claim=claim, kwargs={"steps": 5})
    assert r.conforming, r.table()


def test_keras_muon_is_identified(keras):
    r = identify_optimizer("keras.optimizers:Muon")
    c = r.claim
    assert r.match, r.summary()
    assert (c.preset, c.compute_dtype, c.scale, c.scale_factor, c.nd, c.nesterov,
            c.nesterov_variant, c.eps, c.eps_form) == (
        "muon_ns5", "float32", "moonlight", 1.0, "routed", "on", "sutskever", 1e-7, "add"), \
        r.summary()
