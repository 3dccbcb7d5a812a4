"""Put a bench_gpu markdown file (``--markdown``) into docs/performance_gpu.md, between its
``<!-- bench:begin ... -->`` and ``<!-- bench:end -->`` lines (the full bench), or with
``--block quick`` between ``<!-- quick:begin ... -->`` and ``<!-- quick:end -->`` (the latest
quick bench); the prose around it (code state of the run, goals) is still edited by hand.

    python tests/device/splice_bench.py /work/.device/N/bench.md
    python tests/device/splice_bench.py --block quick /work/.device/N/bench_quick.md
"""
import pathlib
import re
import sys

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "performance_gpu.md"


def main(path, block="bench"):
    bench = pathlib.Path(path).read_text().strip()
    # the device's output folder out of the command line
    bench = re.sub(r"--json \S*/(bench\w*\.json) --markdown \S*/(bench\w*\.md)",
                   r"--json \1 --markdown \2", bench)
    text = DOC.read_text()
    begin = text.index(f"<!-- {block}:begin")
    begin = text.index("\n", begin) + 1
    end = text.index(f"<!-- {block}:end -->")
    DOC.write_text(text[:begin] + bench + "\n" + text[end:])


if __name__ == "__main__":
    args = sys.argv[1:]
    which = "bench"
    if args[:1] == ["--block"]:
        which, args = args[1], args[2:]
    main(args[0], which)
