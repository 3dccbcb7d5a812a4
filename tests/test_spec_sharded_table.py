"""docs/spec.md 10.2: the reduction-order table is what its command prints (two significant
digits), so the spec cannot drift from the code."""
import re
from pathlib import Path

import pytest

from swanref.verify import distributed as D

SPEC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"
ROWS = {
    "GradNorm": dict(op="grad_norm"),
    "whiten `svd`": dict(op="whiten"),
    "whiten `eigh`": dict(op="whiten", method="eigh"),
    "whiten `newton_schulz` (10 steps)": dict(op="whiten", method="newton_schulz"),
    "preset `muon_ns5`": dict(op="whiten", preset="muon_ns5"),
    "preset `muon_ns5`, float32": dict(op="whiten", preset="muon_ns5", dtype="float32"),
    "preset `muon_ns5`, bfloat16": dict(op="whiten", preset="muon_ns5", dtype="bfloat16"),
}


def _table():
    text = SPEC.read_text()
    start = text.index("| claim | `R` | whole tolerance |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, r, tol = (c.strip() for c in line.strip("|").split("|"))
        rows[name] = (float(r), float(tol))
    return rows


def test_the_command_is_next_to_the_table():
    text = SPEC.read_text()
    start = text.index("| claim | `R` | whole tolerance |")
    assert re.search(r"Command: `python -c \"from swanref.verify import distributed",
                     text[start:start + 3000])


@pytest.mark.parametrize("name", list(ROWS))
def test_each_row_is_what_the_code_computes(name):
    table = _table()
    assert set(table) == set(ROWS)
    claim = D.ShardedClaim(**ROWS[name])
    G = D.sharded_inputs(claim, "cols", 2)[0].G
    r = D.reduction_term(claim, G, 2)
    tol = D.agreement(claim, G, D.reference(claim, G), 2).tolerance
    doc_r, doc_tol = table[name]
    # two significant digits in the docs: within half a unit of the second digit
    assert abs(doc_r - r) <= 0.05 * abs(r) + 1e-300, (name, r, doc_r)
    assert abs(doc_tol - tol) <= 0.05 * abs(tol), (name, tol, doc_tol)
