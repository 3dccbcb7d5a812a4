"""``python -m swanref.verify.vectors OUTDIR``: the same as ``swanref vectors OUTDIR``."""
import sys

from swanref.verify.vectors.cli import main_write

sys.exit(main_write())
