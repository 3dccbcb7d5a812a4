"""``python -m swanref COMMAND``: the same as the ``swanref`` command -- unless run inside the
source tree, which shadows the installed package and has no compiled core (a warning says so)."""
import sys

from swanref.backends import cpp
from swanref.cli import main

if cpp.source_tree_hint() and not cpp.available():
    print("swanref: warning: " + cpp.source_tree_hint(), file=sys.stderr)
sys.exit(main())
