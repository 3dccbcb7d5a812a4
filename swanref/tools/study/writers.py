"""The study's files: NAME.png/.svg/.csv/.json per study, numbers.json, index.md/.html."""
from __future__ import annotations

import csv
import html
import json
import math
import os
import platform

import numpy as np
import scipy

from swanref import __version__
from swanref.spec.readings import SPEC_VERSION
from swanref.tools.study.common import ACCURATE, Result, bf16
from swanref.spec.output_files import open_output

#: the definitions every page states once (the figures' axes use them)
DEFINITIONS = ("Errors of matrix results are ||X - X*||_F / sqrt(k), k = min(m, n) (spec 0): the "
               "root-mean-square error per singular direction. Tolerances are those of "
               "docs/spec.md section 8 (swanref.spec.tolerance). The dash-dotted line at "
               f"{ACCURATE:g} is the 'accurate' threshold used by the summary table of "
               "docs/guide.md. Crosses mark diverged runs and errors beyond the axis, drawn at "
               "the clip height.")


def jsonable(v):
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else (None if math.isnan(v) else
                                           ("inf" if v > 0 else "-inf"))
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"


def versions() -> dict:
    import matplotlib
    v = {"swanref": __version__, "spec": SPEC_VERSION, "python": platform.python_version(),
         "numpy": np.__version__, "scipy": scipy.__version__,
         "matplotlib": matplotlib.__version__}
    if bf16() is not None:
        import ml_dtypes
        v["ml_dtypes"] = ml_dtypes.__version__
    return v


def write_result(res: Result, outdir: str, meta: dict):
    base = os.path.join(outdir, res.name)
    with open_output(base + ".png", "wb") as fh:
        res.figure.savefig(fh, format="png", dpi=90)
    with open_output(base + ".svg", "wb") as fh:
        res.figure.savefig(fh, format="svg")
    import matplotlib.pyplot as plt
    plt.close(res.figure)
    with open_output(base + ".csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(res.columns)
        for r in res.rows:
            w.writerow(["" if v is None else v for v in r])
    with open_output(base + ".json") as f:
        json.dump(jsonable({"study": res.name, "title": res.title,
                            "description": res.description, "params": res.params,
                            "seconds": res.seconds, "findings": res.findings,
                            "numbers": res.numbers, "columns": res.columns, "rows": res.rows,
                            "meta": meta}), f, indent=1)


def write_numbers(results, outdir: str, meta: dict):
    """``numbers.json``: every study's headline numbers, flat (``study.key``), with the run."""
    numbers = {f"{r.name}.{k}": v for r in results for k, v in r.numbers.items()}
    seconds = {r.name: r.seconds for r in results}
    with open_output(os.path.join(outdir, "numbers.json")) as f:
        json.dump(jsonable({"meta": meta, "seconds": seconds, "numbers": numbers}), f,
                  indent=1, sort_keys=True)


def write_index(results, outdir, meta):
    md = ["# swanref accuracy studies", "",
          f"Generated {meta['date']} by", "", "    " + meta["command"], "",
          f"Total time {meta['seconds']:.1f} s on {meta['machine']}; BLAS threads "
          f"{meta['blas_threads']}; accuracy backend `{meta['backend']}`"
          + (f", timing backends {', '.join(meta['backends'])}" if any(
              r.name == "timing" for r in results) else "") + ".", "",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
          DEFINITIONS, "",
          "Contents: " + ", ".join(f"[{r.title}](#{r.name})" for r in results), ""]
    body = []
    for r in results:
        md += [f'<a id="{r.name}"></a>', "", f"## {r.title}", "", r.description, "",
               f"![{r.title}]({r.name}.png)", "",
               f"Files: [{r.name}.png]({r.name}.png), [{r.name}.svg]({r.name}.svg), "
               f"[{r.name}.csv]({r.name}.csv), [{r.name}.json]({r.name}.json). "
               f"Study time {r.seconds:.1f} s.", "",
               "Made with: `" + meta["command"] + f"` (study `{r.name}`); parameters:", "",
               "```json", json.dumps(jsonable(r.params)), "```", "", "What it shows:", ""]
        md += [f"- {x}" for x in r.findings] + [""]
        body.append(
            f'<h2 id="{r.name}">{html.escape(r.title)}</h2>\n<p>{html.escape(r.description)}</p>\n'
            f'<p><img src="{r.name}.png" alt="{html.escape(r.title)}" style="max-width:100%"></p>\n'
            f'<p>Files: <a href="{r.name}.png">png</a>, <a href="{r.name}.svg">svg</a>, '
            f'<a href="{r.name}.csv">csv</a>, <a href="{r.name}.json">json</a>. '
            f'Study time {r.seconds:.1f} s.</p>\n'
            f'<p>Made with <code>{html.escape(meta["command"])}</code>; parameters:</p>\n'
            f'<pre>{html.escape(json.dumps(jsonable(r.params)))}</pre>\n<ul>\n'
            + "".join(f"<li>{html.escape(x)}</li>\n" for x in r.findings) + "</ul>\n")
    with open_output(os.path.join(outdir, "index.md")) as f:
        f.write("\n".join(md))
    head = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>swanref studies</title>"
            f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}"
            f"pre{{white-space:pre-wrap;background:#f4f4f4}}</style></head><body>\n"
            f"<h1>swanref accuracy studies</h1>\n<p>Generated {html.escape(meta['date'])} by "
            f"<code>{html.escape(meta['command'])}</code>; total {meta['seconds']:.1f} s on "
            f"{html.escape(meta['machine'])}, BLAS threads {meta['blas_threads']}.</p>\n<p>"
            + html.escape("Versions: " + ", ".join(f"{k} {v}" for k, v in
                                                    meta["versions"].items()))
            + f"</p>\n<p>{html.escape(DEFINITIONS)}</p>\n<ul>"
            + "".join(f'<li><a href="#{r.name}">{html.escape(r.title)}</a></li>'
                      for r in results) + "</ul>\n")
    with open_output(os.path.join(outdir, "index.html")) as f:
        f.write(head + "".join(body) + "</body></html>\n")
