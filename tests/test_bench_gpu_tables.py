"""bench_gpu's markdown tables (no GPU needed): every row has its header's columns, and the
goal column follows the goals of docs/performance_gpu.md."""
from swanref.tools import bench_gpu as B

ENV = {"gpu": "GPU", "sm_count": 1, "memory_GiB": 1, "cuda_runtime": 1, "cuda_driver": 1,
       "cupy": "1", "torch": "1", "torch_cuda": "1", "numpy": "1", "python": "3", "swanref": "0"}
PEAKS = {"copy_GBps": 3000.0, "gemm_TFLOPs_float32": 50.0}


def _ns(ms, torch_ms, compile_ms):
    return {"section": "ns", "shape": "1024x4096", "dtype": "float32", "ms": ms,
            "backend_ms": ms, "torch_ms": torch_ms, "compile_ms": compile_ms, "err": 1e-6,
            "torch_err": 1e-6, "peak_MB": 1.0, "torch_peak_MB": 2.0}


ROWS = [
    _ns(2.0, 2.1, 2.0), _ns(2.0, 1.9, 2.0), _ns(2.2, 2.3, 2.0),
    {"section": "presets", "shape": "8x512x2048", "dtype": "bfloat16", "ms": 1.0,
     "backend_ms": 0.9, "public_graph_ms": 0.5, "torch_ms": 0.8, "compile_ms": 0.9,
     "vs_torch_rel": 0.0, "vs_torch_equal_frac": 1.0, "peak_MB": 1, "torch_peak_MB": 2},
    {"section": "agreement", "preset": "muon_ns5", "shape": "4x8", "rel_fro": 0.01,
     "max_ulps": 3.0, "equal_frac": 0.5},
    {"section": "gradnorm", "shape": "4096x11008", "dtype": "float32", "kernel_ms": 0.1,
     "kernel_pct_copy": 90.0, "cupy_ms": 0.11, "cupy_pct_copy": 85.0, "torch_input_ms": 0.12,
     "torch_input_pct_copy": 81.0, "torch_ms": 0.5, "compile_ms": 0.2},
    {"section": "gradnorm", "shape": "2048x2048", "dtype": "float32", "kernel_ms": 0.01,
     "kernel_pct_copy": 90.0, "cupy_ms": 0.012, "cupy_pct_copy": 70.0, "torch_ms": 0.05,
     "compile_ms": 0.011},
    {"section": "exact", "shape": "1024x4096", "dtype": "float64", "ms": 10.0, "torch_ms": 5.0,
     "err": 1e-13, "torch_err": 2e-13, "peak_MB": 1, "torch_peak_MB": 1},
]


def _tables(rows):
    return [t for t in B.tables(ENV, PEAKS, rows, "cmd").split("\n\n") if t.startswith("| ")]


def test_every_row_has_its_headers_columns():
    tables = _tables(ROWS)
    assert len(tables) == 5
    for t in tables:
        lines = t.strip().split("\n")
        widths = {line.count(" | ") for line in lines}
        assert len(widths) == 1, t
        assert set(lines[1].strip("| ").split(" | ")) <= {"---", "---:"}


def test_goal_column():
    ns = _tables(ROWS)[0].strip().split("\n")[2:]
    # eager / swanref >= 1 and swanref <= 1.05 x compile; slower than eager; 1.1 x compile
    assert [line.split(" | ")[10] for line in ns] == ["yes", "no", "no"]
    gn, ex = _tables(ROWS)[3], _tables(ROWS)[4]
    # 85% and 81% >= 80% and faster than compile; 70% >= 60% but slower than torch.compile
    assert [line.split(" | ")[-1] for line in gn.strip().split("\n")[2:]] == ["yes |", "no |"]
    assert ex.strip().endswith("| 1 / 1 |") and "| no |" in ex   # torch 2x faster: missed


def test_the_docs_quick_tables_are_the_stored_h100_run():
    """docs/performance_gpu.md's quick tables (this round, commit fbe6190) are what
    bench_gpu renders from the run's stored rows: the docs cannot drift from the run."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    run = json.loads((root / "tests" / "device" / "bench_quick_h100_fbe6190.json").read_text())
    docs = (root / "docs" / "performance_gpu.md").read_text()
    tables = [t for t in B.tables(run["env"], run["peaks"], run["rows"], "cmd").split("\n\n")
              if t.startswith("| ")]
    assert len(tables) == 3
    for t in tables:
        assert t in docs, t.splitlines()[2]


def test_the_docs_scan_kernel_tables_are_the_stored_h100_runs():
    """docs/performance_gpu.md's baseline and scan-kernel quick tables (issue 25, branch h35)
    are what bench_gpu renders from the two stored runs, between their splice markers."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "performance_gpu.md").read_text()
    for block, name in (("quick-base", "base"), ("quick", "scan")):
        run = json.loads((root / "tests" / "device" / f"bench_quick_h100_h35_{name}.json")
                         .read_text())
        start = docs.index(f"<!-- {block}:begin")
        part = docs[start:docs.index(f"<!-- {block}:end -->", start)]
        tables = [t for t in B.tables(run["env"], run["peaks"], run["rows"], "cmd").split("\n\n")
                  if t.startswith("| ")]
        assert len(tables) == 2
        for t in tables:
            assert t in part, (block, t.splitlines()[2])


def test_the_docs_scan_probe_figures_are_the_stored_probe_output():
    """The A/B figures quoted in docs/performance_gpu.md (checks and muon_ns5 public call,
    scan off -> on, torch eager) are the ranges of tests/device/scan_probe_h100_h35.txt."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    text = (root / "tests" / "device" / "scan_probe_h100_h35.txt").read_text()
    docs = " ".join((root / "docs" / "performance_gpu.md").read_text().split())
    got: dict = {}
    for shape, on, checks, call in re.findall(
            r"^(\S+)\s+scan=(\w+)\s+checks wall ([\d.]+) .*public wall ([\d.]+)", text, re.M):
        got.setdefault(("checks", on), []).append(float(checks))
        got.setdefault((shape, on), []).append(float(call))

    def span(values, digits=2):
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}"
    assert f"the two checks {span(got['checks', 'False'])} -> {span(got['checks', 'True'], 3)} ms" \
        in docs
    assert (f"{span(got['1024x4096', 'False'])} -> {span(got['1024x4096', 'True'])} ms at "
            f"1024x4096 and {span(got['8x512x2048', 'False'])} -> "
            f"{span(got['8x512x2048', 'True'])} ms at 8x512x2048") in docs
    eager = [f"{float(v):.2f}" for v in re.findall(r"torch eager keller wall ([\d.]+)", text)]
    assert f"(torch eager {eager[0]} and {eager[1]} ms in that run)" in docs
    assert text.count("bitwise equal: True") == 2 and "results bitwise equal either way" in docs
