"""``python -m swanref COMMAND``: the same as the ``swanref`` command."""
import sys

from swanref.cli import main

sys.exit(main())
