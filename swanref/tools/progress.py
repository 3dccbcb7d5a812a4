"""The progress bar of the long-running commands (studies, training demo): tqdm on stderr."""
from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, label: str, stream=None, width: int = 10):
    """A tqdm bar of ``total`` steps named ``label``; use as a context manager, ``.update()``."""
    return tqdm(total=total, desc=f"{label:<{width}}", file=sys.stderr if stream is None else stream,
                mininterval=0.2, leave=True, dynamic_ncols=False, ncols=80,
                bar_format="{desc} {bar} {n_fmt}/{total_fmt} {elapsed}")
