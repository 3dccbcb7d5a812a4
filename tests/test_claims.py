"""The claim core (swanref.verify.claims, docs/spec.md 11): record, file format, applicability,
tolerance, command-line parsing and the adapters of the check levels."""
import argparse
import ast
import json
import os
import pathlib

import numpy as np
import pytest

from swanref.presets.catalogue import get_preset, run_preset, schedule
from swanref.verify import claims as C
from swanref.verify.claims import Claim, ClaimError
from swanref.verify.distributed import ShardedClaim
from swanref.verify.optimizer import OptimizerClaim
from swanref.verify.targets import UsageError
from swanref.verify.update_properties import UpdateClaim, check_update
from wrong_impls import update_impls as W  # tests/ is on sys.path (rootdir conftest)


def _pow2(G):
    return G / 2.0 ** np.ceil(np.log2(np.max(np.abs(G))))


# -- the record --------------------------------------------------------------------------------

def test_every_knob_is_documented_with_a_source_and_its_default_is_valid():
    for name, knob in C.KNOBS.items():
        assert knob.doc and knob.source, name
        assert knob.check(knob.default, name) == knob.default
    assert set(C.KNOBS) == {f.name for f in Claim.__dataclass_fields__.values()}


@pytest.mark.parametrize("knobs", [
    dict(eps=-1.0), dict(eps=float("nan")), dict(eps_form="mul"), dict(compute_dtype="int8"),
    dict(nd="flatten_all_the_things"), dict(steps=0), dict(steps=2.5), dict(steps=True),
    dict(preset="no_such_preset"), dict(scale="bogus"), dict(coefficients=[[1, 2]]),
    dict(mesh=[2, 0]), dict(momentum=1.5), dict(complex="yes"),
    dict(tolerance_overrides={"bfloat16": {"tol": 0.1}}),
    dict(tolerance_overrides={"bfloat16": {"tol": 0.1, "reason": " "}}),
    # a relative distance of 1 is a zero output's: such a tolerance asserts nothing
    dict(tolerance=1.0), dict(tolerance_overrides={"bfloat16": {"tol": 1.0, "reason": "r"}}),
    dict(method="eigh", preset="muon_ns5"), dict(method="preset"), dict(beta=0.5),
    dict(op="grad_norm", preset="muon_ns5"),
])
def test_invalid_values_are_clear_errors(knobs):
    with pytest.raises(ClaimError):
        Claim(**knobs)


def test_unknown_knobs_are_clear_errors():
    for build in (lambda: Claim.from_dict({"epsilon": 1e-7}),
                  lambda: Claim().replace(epsilon=1e-7),
                  lambda: Claim.from_preset("muon_ns5", epsilon=1e-7)):
        with pytest.raises(ClaimError, match="unknown claim knob.*'epsilon'.*known: level"):
            build()
    with pytest.raises(ClaimError, match="unknown preset"):
        Claim.from_preset("muon_ns6")
    assert issubclass(ClaimError, UsageError) and issubclass(ClaimError, ValueError)


def test_from_preset_writes_out_the_sources_normalisation():
    c = Claim.from_preset("torch_muon", eps=1e-12)
    assert (c.preset, c.method, c.eps, c.eps_form, c.steps) == ("torch_muon", "preset", 1e-12,
                                                                 "clamp", 5)
    assert Claim.from_preset("polar_express").norm_scale == 1.01
    assert Claim.from_preset("optax_muon_aol").norm == "aol"
    # ... and its precision, N-D rule and low-precision order (docs/spec.md 11.1)
    t = Claim.from_preset("torch_muon")
    assert (t.compute_dtype, t.nd, t.lowprec_order) == ("bfloat16", "2d_only",
                                                        "cast_then_normalise")
    g = Claim.from_preset("gram_ns")
    assert (g.compute_dtype, g.nd, g.lowprec_order) == ("float16", "batch_leading",
                                                        "normalise_then_cast")
    assert Claim.from_preset("optax_muon").compute_dtype == "float64"  # its input's dtype
    assert Claim.from_preset("nemo_polar_express").compute_dtype == "float32"
    # overrides still win
    assert Claim.from_preset("torch_muon", compute_dtype="float32", nd="flatten").nd == "flatten"
    assert Claim(preset="you_ns5").effective_eps == (1e-7, "add")
    c2 = c.replace(eps=1e-7)
    assert c2 != c and c.eps == 1e-12   # immutable: replace makes a new record
    with pytest.raises(AttributeError):
        c.eps = 0.0


# -- the file format ---------------------------------------------------------------------------

RICH = dict(level="sharded", preset="polar_express_nanogpt", steps=5, eps=1e-8, eps_form="clamp",
            norm_scale=1.02, compute_dtype="bfloat16", io_dtype="float32",
            lowprec_order="normalise_then_cast", nd="flatten_4d_batch_3d", stack_dims=1,
            complex=True, norm_axis="columns_if_wide", scale="moonlight", scale_factor=0.5,
            gate="per_column", second_moment="adamuon", nesterov="always",
            nesterov_variant="optax", momentum=0.95, shard_split="chunk", mesh=[2, 4],
            coefficients=[[3.4445, -4.775, 2.0315], [2.0, -1.5, 0.5]],
            tolerance_overrides={"bfloat16": {"tol": 0.12, "reason": "Triton kernel order"}})


@pytest.mark.parametrize("suffix", ["toml", "json"])
@pytest.mark.parametrize("defaults", [False, True])
def test_round_trip(tmp_path, suffix, defaults):
    claim = Claim(**RICH)
    assert Claim.from_dict(claim.to_dict()) == claim
    path = tmp_path / f"c.{suffix}"
    C.save_claim(claim, path, defaults=defaults)
    assert C.load_claim(path) == claim
    text = path.read_text()
    assert "swanref-claim" in text and ("version = 1" in text or '"version": 1' in text)


def test_to_dict_leaves_out_defaults():
    assert Claim().to_dict() == {"format": "swanref-claim", "version": 1}
    assert Claim(eps=1e-9).to_dict()["eps"] == 1e-9


@pytest.mark.parametrize("text, suffix, match", [
    ('format = "other"\n', "toml", "format must be"),
    ('format = "swanref-claim"\nversion = 2\n', "toml", "version 2 is not supported"),
    ('eps = [1e-7\n', "toml", "not valid TOML"),
    ('{"eps": NaN}', "json", "not valid JSON"),
    ('{"eps": 1e999}', "json", "eps must be in"),
    ('[1, 2]', "json", "a claim is a table"),
    ('{"a": {"b": {"c": {"d": {"e": 1}}}}}', "json", "nested deeper"),
    ('{"mesh": [[[[[1]]]]]}', "json", "nested deeper"),
    ('eps = 1e-7\n', "yaml", "are .toml or .json"),
    ('{"nd": "2d"}', "json", "nd must be one of"),
])
def test_bad_files_are_clear_errors(tmp_path, text, suffix, match):
    path = tmp_path / f"c.{suffix}"
    path.write_text(text)
    with pytest.raises(ClaimError, match=match) as info:
        C.load_claim(path)
    assert str(path) in str(info.value)


def test_hostile_paths(tmp_path):
    with pytest.raises(ClaimError, match="not a regular file"):
        C.load_claim(tmp_path)
    with pytest.raises(ClaimError, match="not found"):  # swanref.spec.input_files (spec 6.7)
        C.load_claim(tmp_path / "missing.toml")
    big = tmp_path / "big.json"
    big.write_text("{" + " " * (C.fileformat.MAX_BYTES + 10) + "}")
    with pytest.raises(ClaimError, match="above the .*-byte limit"):
        C.load_claim(big)
    binary = tmp_path / "b.json"
    binary.write_bytes(b'{"eps": "\xff"}')
    with pytest.raises(ClaimError, match="not UTF-8"):
        C.load_claim(binary)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "f.toml"
        os.mkfifo(fifo)
        with pytest.raises(ClaimError, match="not a regular file"):
            C.load_claim(fifo)   # returns at once: opened non-blocking, never read


# -- applicability ------------------------------------------------------------------------------

def test_not_applicable_reports_the_premise():
    stated = Claim.from_preset("muon_ns5")
    why = C.not_applicable(stated, "direction_scale_invariant")
    assert "add 1e-07" in why and "raw input" in why
    # the spec reading (eps after the power-of-two prescale) keeps the property
    assert C.not_applicable(Claim(preset="muon_ns5"), "direction_scale_invariant") is None
    assert C.not_applicable(Claim.from_preset("jiacheng6"), "direction_scale_invariant") is None
    two_d = Claim(nd="2d_only")
    for prop in ("nd_round_trip", "scale_conv", "stacked_3d"):
        assert "2-D only" in C.not_applicable(two_d, prop)
    assert C.not_applicable(Claim(), "nd_round_trip") is None
    assert "complex" in C.not_applicable(Claim(), "complex_input")
    assert C.not_applicable(Claim(complex=True), "complex_input") is None
    assert C.not_applicable(Claim(nesterov="off"), "nesterov")
    assert C.not_applicable(Claim(), "direction") is None
    assert C.unsupported_shape(Claim(nd="routed"), (4, 2, 3)) and \
        C.unsupported_shape(Claim(nd="routed"), (4, 6)) is None


def test_register_premise():
    C.register_premise("test_only_property", lambda c: "gate claimed" if c.gate != "none"
                       else None)
    assert C.not_applicable(Claim(gate="per_element"), "test_only_property") == "gate claimed"
    assert C.not_applicable(Claim(), "test_only_property") is None


# -- tolerance --------------------------------------------------------------------------------

def test_float64_tolerance_covers_a_nesterov_moved_epsilon():
    """An optimizer's first Nesterov step orthogonalises 1.49 G: the source's add-epsilon sits at
    another relative place; the derived term covers the real shift, the bare floor does not."""
    G = _pow2(np.random.default_rng(3).standard_normal((5, 8)))
    p, s = get_preset("muon_ns5"), schedule("muon_ns5")
    unit = [X / np.linalg.norm(X) for X in (run_preset(G, p, s), run_preset(1.49 * G, p, s))]
    shift = float(np.linalg.norm(unit[0] - unit[1]))
    claim = Claim.from_preset("muon_ns5", compute_dtype="float64")
    tol = C.tolerance(claim, "optimizer", G, rescale=1.49)
    assert C.tolerance(claim, "optimizer", G) < shift <= tol <= 5 * shift
    # a clamp epsilon far below the norm never moves
    assert C.eps_shift(Claim.from_preset("torch_muon"), G, 1.49) == 0.0


def test_tolerance_per_dtype_follows_the_noise_model():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((16, 40))
    rank1 = np.outer(rng.standard_normal(16), rng.standard_normal(40))
    base = Claim(preset="muon_ns5")
    tols = {dt: C.tolerance(base.replace(compute_dtype=dt), "update", G)
            for dt in C.DTYPES}
    assert tols == {"float64": 1e-9, "float32": 1e-5, "bfloat16": 0.08, "float16": 0.02}
    # a rank-1 probe carries rounding noise through the schedule's slope at 0 (spec 8.6)
    assert C.tolerance(base.replace(compute_dtype="float32"), "update", rank1) > 1e-4
    assert C.tolerance(Claim(), "update", G) >= 1e-9
    assert C.tolerance(Claim(method="newton_schulz"), "update", G) >= 1e-9
    assert C.tolerance(Claim(tolerance=0.3), "update", G) == 0.3
    over = base.replace(compute_dtype="bfloat16", tolerance_overrides={
        "bfloat16": {"tol": 0.15, "reason": "speedrun Triton kernels"}})
    assert C.tolerance(over, "update", G) == 0.15
    assert C.tolerance(over.replace(compute_dtype="float16"), "update", G) == 0.02
    with pytest.raises(ClaimError, match="unknown level"):
        C.tolerance(base, "model", G)


def test_level_terms_are_added_at_their_level_only():
    G = np.random.default_rng(1).standard_normal((4, 6))
    claim = Claim(level="sharded")
    before = C.tolerance(claim, "sharded", G)
    C.register_term("sharded", lambda c, g: 1e-6)
    try:
        assert C.tolerance(claim, "sharded", G) == pytest.approx(before + 1e-6)
        assert C.tolerance(claim, "update", G) == before
    finally:
        C.tolerance_model._TERMS["sharded"].pop()
    with pytest.raises(ClaimError):
        C.register_term("model", lambda c, g: 0.0)


# -- command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("1e-12", 1e-12), ("5", 5), ("true", True), ("False", False), ("None", None),
    ("null", None), ("[1, 2.5]", [1, 2.5]), ('{"a": 1}', {"a": 1}), ("keller", "keller"),
    ("torch.float64", C.DtypeName("torch", "float64")),
    ("jnp.bfloat16", C.DtypeName("jnp", "bfloat16")), ("NaN", "NaN"),
])
def test_parse_value(text, value):
    assert C.parse_value(text) == value


def test_dtype_names_resolve_lazily():
    assert C.parse_value("np.float32").resolve() is np.float32
    with pytest.raises(ClaimError, match="has no 'float99'"):
        C.parse_value("numpy.float99").resolve()


def _args(argv):
    ap = argparse.ArgumentParser()
    C.add_claim_arguments(ap)
    return ap.parse_args(argv)


def test_claim_from_args_precedence(tmp_path):
    path = tmp_path / "c.toml"
    C.save_claim(Claim(scale="moonlight", eps=1e-9), path)
    got = C.claim_from_args(_args(["--claim", str(path), "--preset", "you_ns5",
                                   "--set", "eps=1e-12", "--set", "compute_dtype=torch.bfloat16"]),
                            base={"scale": "spectral", "stack_dims": 1})
    assert (got.preset, got.scale, got.stack_dims, got.eps, got.eps_form, got.compute_dtype) \
        == ("you_ns5", "moonlight", 1, 1e-12, "add", "bfloat16")
    assert C.claim_from_args(_args([])) == Claim()
    for bad in (["--set", "epsilon=1"], ["--set", "eps"], ["--set", "eps=-1"]):
        with pytest.raises(ClaimError):
            C.claim_from_args(_args(bad))


def test_claim_from_args_defaults_sit_below_everything(tmp_path):
    """A level's default (check-optimizer's float32) applies only where nothing states the
    knob: not over the preset's source dtype, a --claim file, --set or base."""
    f32 = {"compute_dtype": "float32"}
    assert C.claim_from_args(_args(["--preset", "torch_muon"]), defaults=f32
                             ).compute_dtype == "bfloat16"
    assert C.claim_from_args(_args(["--preset", "cubic"]), defaults=f32
                             ).compute_dtype == "float32"          # source: the input's dtype
    assert C.claim_from_args(_args(["--set", "method=svd"]), defaults=f32
                             ).compute_dtype == "float32"
    path = tmp_path / "c.toml"
    C.save_claim(Claim(preset="torch_muon", compute_dtype="bfloat16"), path)
    assert C.claim_from_args(_args(["--claim", str(path)]), defaults=f32
                             ).compute_dtype == "bfloat16"
    assert C.claim_from_args(_args(["--preset", "torch_muon"]), base={"compute_dtype": "float16"},
                             defaults=f32).compute_dtype == "float16"


# -- adapters: the levels build their claims from a Claim, verdicts unchanged ----------------

@pytest.mark.parametrize("fn, kwargs", [
    (W.faithful, dict(preset="muon_ns5")),
    (W.epsilon_floor, dict(preset="muon_ns5")),
    (W.normuon_faithful, dict(preset="svd", row_norm=True)),
    (W.stack_flattened, dict(preset="muon_ns5", stack_dims=1)),
])
def test_update_check_from_a_claim_gives_the_same_verdict(fn, kwargs):
    claim = UpdateClaim(**kwargs).to_claim()
    legacy = check_update(fn, claim=UpdateClaim(**kwargs).to_claim())
    via = check_update(fn, claim=claim)
    assert [(r.name, r.status) for r in via.results] == \
        [(r.name, r.status) for r in legacy.results]
    assert UpdateClaim.from_claim(claim) == UpdateClaim(**kwargs)


def test_levels_refuse_knobs_they_cannot_evaluate_yet():
    with pytest.raises(UsageError, match="cannot evaluate claim knob.*pre='grad_norm'"):
        check_update(W.faithful, claim=Claim.from_preset("muon_ns5", pre="grad_norm"))
    # the preset's own written-out values and other levels' knobs are fine
    UpdateClaim.from_claim(Claim.from_preset("muon_ns5", momentum=0.95, shard_split="chunk"))
    with pytest.raises(ClaimError, match="gate='per_column'"):
        ShardedClaim.from_claim(Claim(gate="per_column"))
    # the low-precision order reaches the optimizer level's reference (spec 9.7)
    oc = OptimizerClaim.from_claim(Claim(preset="torch_muon", lowprec_order="normalise_then_cast"))
    assert oc.preset_object.lowprec_order == "normalise_then_cast"
    assert OptimizerClaim.from_claim(Claim.from_preset("heavyball_ns5").replace(
        lowprec_order="cast_then_normalise")).preset_object.lowprec_order == "cast_then_normalise"
    assert OptimizerClaim.from_claim(Claim(preset="torch_muon", nesterov="always")
                                     ).nesterov_always


def test_optimizer_and_sharded_adapters():
    oc = OptimizerClaim.from_claim(Claim(preset="torch_muon", compute_dtype="float32",
                                         momentum=0.95, nesterov="off", nd="routed"))
    assert (oc.preset, oc.precision, oc.param_dtype, oc.momentum, oc.nesterov, oc.nd,
            oc.stack) == ("torch_muon", "float32", "float32", 0.95, None, "routed", "routed")
    assert OptimizerClaim.from_claim(Claim(preset="optax_muon", nesterov_variant="optax")
                                     ).nesterov == "optax"
    sc = ShardedClaim.from_claim(Claim(level="sharded", preset="you_ns5", steps=5,
                                       compute_dtype="float32"))
    assert (sc.op, sc.preset, sc.steps, sc.dtype) == ("whiten", "you_ns5", 5, "float32")
    assert ShardedClaim.from_claim(Claim(method="newton_schulz", beta=0.5)).iterative


def test_claims_core_imports_no_check_level():
    """The levels build on the claim core, never the reverse (no import circle)."""
    root = pathlib.Path(C.__file__).parent
    levels = {"checker", "update_properties", "optimizer", "distributed", "conformance",
              "properties"}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[-1] not in levels, (path.name, node.module)
    json.dumps(Claim(**RICH).to_dict())   # plain data


def test_spec_section_quotes_the_code():
    """docs/spec.md 11 quotes these constants; the test fails when they drift."""
    from swanref.presets.diagnose import MATCH_TOLERANCE
    text = (pathlib.Path(__file__).parents[1] / "docs" / "spec.md").read_text()
    sec = text[text.index("## 11. Claims"):text.index("## 12. Changelog")]
    assert f"C_EPS_SHIFT = {C.tolerance_model.C_EPS_SHIFT:g}" in sec
    assert f"at most {C.fileformat.MAX_BYTES // 1024} KiB" in sec
    assert f"nested at most {C.fileformat.MAX_DEPTH} levels" in sec
    floors = ", ".join(f"{MATCH_TOLERANCE[d]:g}".replace("e-0", "e-") for d in C.DTYPES)
    assert f"({floors} for float64, float32, bfloat16, float16)" in sec
    example = sec[sec.index('    format = "swanref-claim"'):sec.index("A file of another")]
    expected = C.dumps(Claim.from_preset("torch_muon", eps=1e-12))
    assert [ln.strip() for ln in example.strip().splitlines()] == expected.strip().splitlines()


def test_verification_guide_lists_every_knob():
    from swanref.verify.claims.knobs import knob_table
    text = (pathlib.Path(__file__).parents[1] / "docs" / "verification.md").read_text()
    assert knob_table() in text
    sec = text[text.index("### Writing a claim"):]
    toml = sec[sec.index("```toml\n") + 8:sec.index("```", sec.index("```toml\n") + 8)]
    claim = C.parse_text(toml, "toml")
    assert claim.tolerance_overrides[0][1][0] == 0.12
    assert C.tolerance(claim, "update", np.eye(4, 6)) == 0.12


def test_check_update_cli_takes_claim_set_and_kwarg(tmp_path, capsys):
    from swanref.verify.checker import main, parse_kwarg
    target = str(pathlib.Path(__file__).parent / "wrong_impls" / "update_impls.py") + ":faithful"
    path = tmp_path / "keller.toml"
    C.save_claim(Claim(preset="muon_ns5", scale="keller"), path)
    assert main(["update", target, "--claim", str(path)]) == 0
    # --set overrides the file: the faithful Keller update is not Moonlight's
    assert main(["update", target, "--claim", str(path), "--set", "scale=moonlight"]) == 1
    # a stated epsilon other than the faithful transcription's: rejected, the cause named
    float64 = ["--dtype", "float64", "--set", "nd=flatten"]
    assert main(["update", target, "--preset", "muon_ns5", "--set", "eps=1e-12"] + float64) == 1
    assert "matches eps=1e-07 (add)" in capsys.readouterr().out
    assert main(["update", target, "--preset", "muon_ns5", "--set", "pre=grad_norm"]) == 2
    assert "cannot evaluate claim knob(s) pre='grad_norm'" in capsys.readouterr().err
    assert main(["update", target, "--preset", "muon_ns5", "--set", "nd=3d"]) == 2
    assert parse_kwarg("dtype=np.float32") == ("dtype", np.float32)
    assert parse_kwarg("coeffs=(1, 2)") == ("coeffs", (1, 2))
    assert parse_kwarg("mode=svd") == ("mode", "svd")
