"""Put a bench_gpu markdown file (``--markdown``) into docs/performance_gpu.md, between its
``<!-- bench:begin ... -->`` and ``<!-- bench:end -->`` lines; the prose around it (code state
of the run, goals) is still edited by hand.

    python tests/device/splice_bench.py /work/.device/N/bench.md
"""
import pathlib
import sys

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "performance_gpu.md"


def main(path):
    bench = pathlib.Path(path).read_text().strip()
    bench = bench.replace("--json /root/out/bench.json --markdown /root/out/bench.md",
                          "--json bench.json --markdown bench.md")
    text = DOC.read_text()
    begin = text.index("<!-- bench:begin")
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- bench:end -->")
    DOC.write_text(text[:begin] + bench + "\n" + text[end:])


if __name__ == "__main__":
    main(sys.argv[1])
