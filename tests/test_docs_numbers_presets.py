"""docs/presets.md 5: the schedule verifier's table is what ``swanref schedule NAME`` computes
(mpmath, so exact to the digits shown; about 2 s for the ten presets)."""
from __future__ import annotations

from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "presets.md"
LOWERS = (1e-2, 1e-3, 1e-4)


def _table():
    text = PAGE.read_text()
    start = text.index("| preset | steps | divisor | slope at 0 | band l=1e-2 |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def _row(name):
    from swanref.presets.schedules import analyse, from_preset
    r = analyse(from_preset(name, None), lowers=LOWERS, dtypes=("bfloat16", "float32"), probes=())
    b = r["band"]
    return ([str(r["steps"]), f"{r['divisor']:g}", f"{r['slope0']:.1f}"]
            + [f"[{b[lo][0]:.4f}, {b[lo][1]:.4f}]" for lo in LOWERS]
            + [f"{r['blowup']:.4f}", f"{r['leak']['bfloat16'][0]:.3f}",
               f"{r['leak']['float32'][0]:.2e}"])


def test_the_command_is_next_to_the_table():
    text = PAGE.read_text()
    start = text.index("| preset | steps | divisor | slope at 0 | band l=1e-2 |")
    assert "`swanref schedule NAME`" in text[start - 200:start]


def test_every_preset_has_a_row():
    from swanref.presets import PRESETS
    rows = _table()
    assert set(rows) == set(PRESETS) - {"custom"}
    # swan_coupled is cubic's scalar map in the coupled form: the row says so, no figures
    assert rows["swan_coupled"][0] == "10" and "as `cubic`" in rows["swan_coupled"][2]


@pytest.mark.parametrize("name", [n for n, cells in _table().items() if "as `" not in cells[2]])
def test_schedule_row_is_what_the_verifier_computes(name):
    assert _table()[name] == _row(name), name


# -- 6.1 / 6.2: the emulation against real PyTorch bf16, from the stored raw data ---------------

DEVICE = Path(__file__).resolve().parent / "device"
RAW = {"6.1 PyTorch 2.13.0 CPU": "result_torch_cpu_2.13.json",
       "6.2 NVIDIA H100": "result_h100_torch2.11.json"}
INPUTS = {"Gaussian 512×2048": "gauss_512x2048", "Gaussian 1024²": "gauss_1024x1024",
          "tall 1536×384": "tall_1536x384", "batch 4×256×768": "batch_4x256x768",
          "rank 64, 256×1024": "rank64_256x1024"}


def _shown(text: str, value: float) -> bool:
    """``text`` is ``value`` at the digits shown."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10.0 ** -decimals + 1e-12


def _validation_rows(heading):
    text = PAGE.read_text()
    start = text.index("### " + heading)
    start = text.index("| input | preset |", start)
    rows, case = [], None
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0]:
            case = next(v for k, v in INPUTS.items() if cells[0].startswith(k))
        preset = cells[1].split("`")[1] + ("@float16" if "fp16" in cells[1] else "")
        rows.append((case, preset, cells[2:6]))
    return rows


@pytest.mark.parametrize("heading", list(RAW))
def test_validation_table_is_the_raw_data(heading):
    import json
    text = PAGE.read_text()
    section = text[text.index("### " + heading):]
    assert f"`tests/device/{RAW[heading]}`" in section[:1500]
    results = {(r["case"], r["preset"]): r
               for r in json.loads((DEVICE / RAW[heading]).read_text())["results"]}
    rows = _validation_rows(heading)
    assert len(rows) >= 10
    for case, preset, (fro, fracs, ulps, errs) in rows:
        r = results[(case, preset)]
        where = (heading, case, preset)
        assert _shown(fro, r["gpu_vs_emu_fro_max_slice"]), where
        equal, le1 = (f.strip().rstrip("%").strip() for f in fracs.split("/"))
        assert int(equal) == round(100 * r["gpu_vs_emu"]["equal_frac"]), where
        assert int(le1) == round(100 * r["gpu_vs_emu"]["le1ulp_frac"]), where
        assert _shown(ulps.split()[0], r["gpu_vs_emu"]["maxabs_in_ulps_of_max"]), where
        dev, emu = (e.strip() for e in errs.split("/"))
        assert _shown(dev, r["gpu_vs_ref64"]) and _shown(emu, r["emu_vs_ref64"]), where


def test_validation_summaries_are_the_raw_data():
    import json
    text = " ".join(PAGE.read_text().split())
    cpu = json.loads((DEVICE / RAW["6.1 PyTorch 2.13.0 CPU"]).read_text())
    gpu = json.loads((DEVICE / RAW["6.2 NVIDIA H100"]).read_text())
    assert (f"torch vs emulation ≤ {cpu['max_gpu_vs_emu_fro_full_rank']:.3f} (relative Frobenius, "
            f"worst slice), largest difference ≤ "
            f"{cpu['max_gpu_vs_emu_maxabs_ulps_of_max_full_rank']:.0f} ulps") in text
    assert (f"`max |e_torch/e_emu − 1|` = {cpu['max_ratio_gpu_emu_err_vs_ref64']:.4f} over all "
            f"{len(cpu['results'])} rows") in text
    assert f"GPU vs emulation ≤ **{gpu['max_gpu_vs_emu_fro_full_rank']:.3f}** relative" in text
    assert (f"(≤ {gpu['max_gpu_vs_emu_maxabs_ulps_of_max_full_rank']:.0f} fp16 ulps for fp16)"
            in text)
    assert (f"within **{100 * gpu['max_ratio_gpu_emu_err_vs_ref64']:.1f} %** (all "
            f"{len(gpu['results'])} rows") in text
