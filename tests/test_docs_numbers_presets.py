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
