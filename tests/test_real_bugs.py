"""Real bugs from public trackers (tests/corpus/real_bugs.py): under the claim a user of that code
would write, the fix conforms, the bug is NOT CONFORMING, and the named cause is the bug's.

Each pair is checked where its claim lives: the operator check (``check_preset``) and the preset
diagnosis for orthogonalisers, the update check for update functions, ``identify`` for the knob
the fix changed.  NumPy only (no third-party packages)."""
import importlib

import pytest

from corpus import real_bugs as R
from swanref.verify import identify
from swanref.verify.checker import check_preset
from swanref.verify.claims import Claim
from swanref.verify.update_properties import check_update

diag = importlib.import_module("swanref.presets.diagnose")


def _fails(rep, name):
    return next(r for r in rep.results if r.name == name and r.status == "FAIL")


# -- epsilon: NeMo#229/#230, F.normalize eps 1e-7 -> 1e-15 ------------------------------------

def test_nemo_lowered_epsilon():
    # NeMo main's user claims its preset: the fix conforms, the bug is named by its epsilon
    fix = check_preset(R.nemo_eps_fix, "nemo_polar_express", dtype="float32", examples=2)
    assert fix.conforming, fix.table()
    d = diag.diagnose(R.nemo_eps_bug, "nemo_polar_express", dtype="float32")
    assert not d.match
    named = (d.closest,) + d.ties
    assert any("eps=1e-07" in t or "emerging_polar_express" in t for t in named), d.summary()
    # identify states the epsilon each one has
    assert (identify(R.nemo_eps_fix, "float32").claim.eps,
            identify(R.nemo_eps_bug, "float32").claim.eps) == (1e-15, 1e-7)


# -- coefficient table: NeMo#73/#74, a polar_express table that was not the paper's ----------

def test_nemo_table_from_another_source_is_named_a_table():
    fix = check_preset(R.nemo_table_fix, "emerging_polar_express", dtype="float32", steps=8,
                       examples=2)
    assert fix.conforming, fix.table()
    d = diag.diagnose(R.nemo_table_bug, "emerging_polar_express", dtype="float32", steps=8)
    assert not d.match
    assert d.closest.startswith("a different coefficient table"), d.summary()
    assert "keeps G's singular vectors" in d.note


# -- complex: optax#1506, x @ x.T instead of x @ x.T.conj() -----------------------------------

def test_optax_missing_conjugate():
    claim = Claim.from_preset("optax_muon", scale="none", nd="2d_only", complex=True)
    assert check_update(R.optax_conj_fix, claim=claim).conforming
    bug = check_update(R.optax_conj_bug, claim=claim)
    assert not bug.conforming
    assert "missing conjugate" in _fails(bug, "complex_input").message


# -- dtype/casting: DeepSpeed#8533, cast to float16 before normalising ---------------------------

def test_deepspeed_cast_before_normalise():
    # the float16 range probe (norm above 65504) tells the two orders apart
    bug = diag.diagnose(R.deepspeed_gram_bug, "muon_ns5", dtype="float16")
    assert bug.match, bug.summary()            # it does what muon_ns5 does: cast first
    fix = diag.diagnose(R.deepspeed_gram_fix, "muon_ns5", dtype="float16")
    assert not fix.match and "normalises in float32" in fix.closest, fix.summary()
    assert "beyond float16's range" in fix.worst_probe
    # identify states the order; the update check names the overflow of the buggy order
    assert identify(R.deepspeed_gram_fix, "float32").claim.lowprec_order == \
        "normalise_then_cast"
    assert identify(R.deepspeed_gram_bug, "float32").claim.lowprec_order == \
        "cast_then_normalise"
    claim = Claim.from_preset("muon_ns5", scale="none", nd="batch_leading",
                              compute_dtype="float16", lowprec_order="normalise_then_cast")
    rep = check_update(R.deepspeed_gram_bug, claim=claim, properties=["epsilon"])
    assert "cast to float16 before the normalisation overflows" in \
        _fails(rep, "epsilon").message
    assert check_update(R.deepspeed_gram_fix, claim=claim,
                        properties=["epsilon"]).status("epsilon") == "pass"


def test_subnormal_probe_asserts_nothing_in_float16():
    # entries ~1e-6 or 1e-7: float16 subnormals (spacing 6e-8), 3% or 30% rounding error -- amplified
    # by the schedule's slope the probe asserts nothing; at unit scale the roundoff is float16's
    import numpy as np
    from swanref.presets.catalogue import get_preset, schedule
    G = np.random.default_rng(0).standard_normal((16, 40))
    pre = get_preset("muon_ns5")
    assert diag.subnormal_roundoff([G], pre, "float16") == diag.UNIT_ROUNDOFF["float16"]
    assert diag.subnormal_roundoff([G * 1e-6], pre, "float16") > 0.02
    assert diag.probe_tolerance(G * 1e-7, pre, schedule("muon_ns5"), "float16") > \
        diag.NO_CLAIM_LIMIT
    assert diag.subnormal_roundoff([G * 1e-6], pre, "float32") == diag.UNIT_ROUNDOFF["float32"]


# -- N-D reshape and scale rule: DeepSpeed#8552, conv scale from the kernel axes, no reshape ---

def test_deepspeed_conv_scale_and_shape():
    claim = Claim.from_preset("muon_ns5", scale="keller", nd="flatten_4d_batch_3d")
    assert check_update(R.deepspeed_conv_fix, claim=claim).conforming
    bug = check_update(R.deepspeed_conv_bug, claim=claim)
    assert not bug.conforming
    assert "trailing axes" in _fails(bug, "scale_conv").message
    assert "parameter's shape" in _fails(bug, "nd_round_trip").message


# -- NaN/zero: dion#24, 0/0 in NorMuon's norm ratio ---------------------------------------------

def test_dion_normuon_zero_gradient():
    claim = Claim.from_preset("muon_ns5", scale="none", nd="2d_only", norm_axis="rows")
    bug = check_update(R.dion_normuon_bug, claim=claim, properties=["zero_to_zero"])
    assert "non-finite" in _fails(bug, "zero_to_zero").message
    assert check_update(R.dion_normuon_fix, claim=claim,
                        properties=["zero_to_zero"]).status("zero_to_zero") == "pass"


# -- aliasing: pytorch#190597, in-place div_ through grad.bfloat16()'s alias --------------------

def test_torch_muon_in_place_alias():
    # the transcription computes in float64 (torch's bf16 alias case: input dtype == compute
    # dtype), so the claim states float64 compute; from_preset alone reads torch's bf16
    claim = Claim.from_preset("torch_muon", scale="none", compute_dtype="float64")
    assert claim.nd == "2d_only"
    assert check_update(R.torch_alias_fix, claim=claim).conforming
    bug = check_update(R.torch_alias_bug, claim=claim)
    assert "modified its input" in _fails(bug, "no_mutation").message
    op = check_preset(R.torch_alias_bug, "torch_muon", examples=2)
    assert not op.conforming and _fails(op, "input_not_modified")


# -- a step that never orthogonalises: DeepSpeed#8441 (ZeRO stage 0 ran SGD) -------------------

@pytest.mark.parametrize("level", ["update", "operator"])
def test_deepspeed_stage0_skipped_orthogonalisation(level):
    if level == "update":
        claim = Claim.from_preset("muon_ns5", scale="keller", nd="2d_only")
        assert check_update(R.deepspeed_stage0_fix, claim=claim).conforming
        bug = check_update(R.deepspeed_stage0_bug, claim=claim)
        assert "orthogonalisation skipped" in _fails(bug, "direction").message
    else:
        d = diag.diagnose(R.deepspeed_stage0_bug, "muon_ns5")
        assert d.closest.startswith("no orthogonalisation"), d.summary()
        # the fix's update scale is named as a scale on the result, not as a table
        d = diag.diagnose(R.deepspeed_stage0_fix, "muon_ns5")
        assert d.closest.startswith("the preset's output times a constant"), d.summary()


def test_identify_names_the_map_when_nothing_matches():
    r = identify(R.deepspeed_stage0_bug, "float64", names=["muon_ns5"], include_routes=False)
    assert not r.match
    assert any(n.startswith("no orthogonalisation") for n in r.notes), r.summary()


def test_distance_to_an_overflowed_reference_is_infinite():
    import numpy as np
    out = np.ones((2, 3, 3))
    ref = out.copy()
    ref[1, 0, 0] = np.inf      # the second matrix of a candidate overflowed, the first is exact
    assert diag.relative_distance(out, ref) == float("inf")
    assert diag.relative_distance(out, out) == 0.0
