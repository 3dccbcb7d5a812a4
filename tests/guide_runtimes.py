"""Measure the runtimes docs/guide.md quotes (not collected by pytest) and store them in
docs/figures/guide_runtimes.json with the machine, load, versions and commit.

    python tests/guide_runtimes.py [OUTDIR]

Each command runs in its own process from OUTDIR (default: a temporary folder); its wall time
and the CPU time of the child (user, system) are recorded.  tests/test_docs_numbers.py checks
that the guide quotes these figures (never the timings themselves: they vary with the machine).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "figures", "guide_runtimes.json")

#: the guide's runtime commands, in the order the guide quotes them
COMMANDS = (
    "swanref report --backend reference",
    "swanref study out/study",
    "swanref study out/q --quick",
    "swanref train-demo out/demo",
    "swanref train-demo out/demoq --quick",
)


def measure(command: str, cwd: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(shlex.split(command), cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"command": command, "returncode": done.returncode, "wall_s": round(wall, 2),
            "user_s": round(after.ru_utime - before.ru_utime, 2),
            "sys_s": round(after.ru_stime - before.ru_stime, 2),
            "load_average_before": [round(x, 2) for x in os.getloadavg()]}


def main(outdir: str) -> dict:
    import numpy
    import swanref
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    rows = []
    for command in COMMANDS:
        rows.append(measure(command, outdir))
        print(rows[-1], flush=True)
    data = {"meta": {"script": "python tests/guide_runtimes.py", "commit": commit,
                     "date": datetime.datetime.now(datetime.timezone.utc).strftime(
                         "%Y-%m-%d %H:%M UTC"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                     "versions": {"swanref": swanref.__version__, "numpy": numpy.__version__,
                                  "python": platform.python_version()}},
            "runs": rows}
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    return data


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
