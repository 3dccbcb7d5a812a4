"""swanref check update: the faithful update passes, each wrong one fails the property that
names its mistake (tests/wrong_impls/update_impls.py)."""
import pathlib

import pytest

from swanref.verify.update_properties import UpdateClaim, check_update
from wrong_impls import update_impls as W  # tests/ is on sys.path (rootdir conftest)


def failed(report):
    return {r.name for r in report.results if r.status == "FAIL"}



def spec_reading(fn, properties=None, **kw):
    """The spec reading of a preset (docs/spec.md 9.5: its epsilon after an exact power-of-two
    prescale, float64): ``claim=UpdateClaim(...).to_claim()``; the keywords of check_update
    read a preset as its source runs it, as the CLI does."""
    return check_update(fn, claim=UpdateClaim(**kw).to_claim(), properties=properties)

@pytest.mark.parametrize("fn, claim", [
    (W.faithful, dict(preset="muon_ns5")),
    (W.faithful_stack, dict(preset="muon_ns5", stack_dims=1)),
    (W.you_faithful, dict(preset="you_ns5")),
    (W.normuon_faithful, dict(preset="svd", row_norm=True)),
    (W.heavyball_faithful, dict(preset="heavyball_svd")),
    (W.aol_faithful, dict(preset="optax_muon_aol")),
])
def test_faithful_updates_conform(fn, claim):
    report = spec_reading(fn, **claim)
    assert report.conforming, report.table()
    assert not failed(report)


@pytest.mark.parametrize("fn, claim, prop", [
    (W.scale_from_kernel_axes, dict(preset="muon_ns5"), "scale_conv"),
    (W.keller_and_moonlight, dict(preset="muon_ns5"), "scale_wide"),
    (W.skip_orthogonalisation, dict(preset="muon_ns5"), "direction"),
    (W.conv_not_flattened, dict(preset="muon_ns5"), "nd_round_trip"),
    (W.conv_not_reshaped, dict(preset="muon_ns5"), "nd_round_trip"),
    (W.stack_flattened, dict(preset="muon_ns5", stack_dims=1), "stack_independent"),
    (W.scaled_in_place, dict(preset="muon_ns5"), "no_mutation"),
    (W.float32_result, dict(preset="muon_ns5"), "dtype_kept"),
    (W.epsilon_floor, dict(preset="muon_ns5"), "direction_scale_invariant"),
    (W.you_table_mistyped, dict(preset="you_ns5"), "direction"),
    (W.normuon_without_rematch, dict(preset="svd", row_norm=True), "scale_wide"),
    (W.normuon_zero_is_nan, dict(preset="svd", row_norm=True), "zero_to_zero"),
    (W.svd_branch_u_v, dict(preset="heavyball_svd"), "direction"),
    (W.aol_d2a, dict(preset="optax_muon_aol"), "direction"),
])
def test_wrong_update_is_named(fn, claim, prop):
    report = spec_reading(fn, **claim)
    assert not report.conforming
    assert prop in failed(report), report.table()


def test_scale_diagnosis_names_the_kernel_axes():
    report = spec_reading(W.scale_from_kernel_axes, preset="muon_ns5")
    msg = next(r.message for r in report.results if r.name == "scale_conv")
    assert "trailing axes" in msg


def test_skip_is_recognised_as_raw_gradient():
    report = spec_reading(W.skip_orthogonalisation, preset="muon_ns5")
    msg = next(r.message for r in report.results if r.name == "direction")
    assert "raw gradient" in msg


def test_command_line(tmp_path, capsys):
    from swanref.verify.checker import main
    target = str(pathlib.Path(__file__).parent / "wrong_impls" / "update_impls.py") + ":"
    # --preset reads the preset as its source runs it (bf16, eps on the raw gradient, N-D
    # batched); the float64 spec reading with (out, -1) views states those knobs back
    spec_reading = ["--dtype", "float64", "--set", "nd=flatten", "--set", "eps=null",
                    "--set", "eps_form=null", "--set", "norm_scale=null"]
    assert main(["update", target + "faithful", "--preset", "muon_ns5"] + spec_reading) == 0
    assert "CONFORMING" in capsys.readouterr().out
    assert main(["update", target + "keller_and_moonlight", "--preset", "muon_ns5",
                 "--json"] + spec_reading) == 1
    import json
    out = json.loads(capsys.readouterr().out)
    assert "scale_wide" in out["failed_properties"]
    assert main(["update", target + "faithful_stack", "--preset", "muon_ns5",
                 "--stack-dims", "1"] + spec_reading) == 0
    table = tmp_path / "k.txt"
    table.write_text("3.4445 -4.7750 2.0315\n")
    assert main(["update", target + "faithful", "--preset", "custom", "--coefficients",
                 str(table), "--steps", "5"] + spec_reading) == 0
    capsys.readouterr()
    assert main(["update", target + "faithful", "--scale", "kimi"]) == 2
    assert "unknown scale rule" in capsys.readouterr().err
    assert main(["update", "--list-properties"]) == 0
    assert "stack_independent" in capsys.readouterr().out


def test_python_entry_point():
    from swanref.verify.checker import check
    assert check(W.faithful, "update", claim=UpdateClaim("muon_ns5").to_claim()).conforming


@pytest.mark.parametrize("preset, extra", [("torch_muon", []), ("muon_ns5", ["--dtype",
                                                                             "float32"]),
                                           ("svd", []), ("gram_ns", ["--scale", "moonlight"])])
def test_python_keywords_read_a_preset_as_the_cli_does(preset, extra):
    """check_update(fn, preset=X) and check(fn, "update", preset=X) read the preset as
    `swanref check update --preset X` does (compute dtype, N-D rule, epsilon, low-precision
    order): one code path, update_claim_knobs."""
    from swanref.verify.checker import _update_claim_from_args, build_parser, check
    args = build_parser().parse_args(["update", "t", "--preset", preset] + extra)
    cli = UpdateClaim.from_claim(_update_claim_from_args(args)).describe()
    kw = {k.lstrip("-"): v for k, v in zip(extra[::2], extra[1::2])}
    api = check_update(W.faithful, preset=preset, properties=["dtype_kept"], **kw)
    via = check(W.faithful, "update", preset=preset, properties=["dtype_kept"], **kw)
    assert api.claim == via.claim == cli
    if preset == "torch_muon":  # its source: bf16, 2-D only, clamp 1e-7 on the raw gradient
        assert (cli["dtype"], cli["nd"], cli["eps_form"]) == ("bfloat16", "2d_only", "clamp")
