"""The ``swanref`` command: one subcommand per job, each a ``main(argv) -> int`` in its module."""
from __future__ import annotations

import importlib
import os
import sys

from swanref import SPEC_VERSION, __version__

#: subcommand -> (module, function, one-line help)
COMMANDS = {
    "report": ("swanref.tools.report", "main",
               "run every backend over the embedded gradients; error vs spec tolerance"),
    "bench": ("swanref.tools.bench", "main", "CPU benchmark (C++ core vs NumPy/SciPy); --gpu for GPU"),
    "check": ("swanref.verify.checker", "main",
              "check an implementation OP module:function against the spec"),
    "check-optimizer": ("swanref.verify.optimizer", "main",
                        "drive a real optimizer (torch.optim / optax) and compare with the spec"),
    "check-sharded": ("swanref.verify.distributed", "main",
                      "check a sharded implementation across torch.distributed ranks"),
    "identify": ("swanref.verify.identification", "main",
                 "which claim does a black-box orthogonaliser or update match? prints the claim"),
    "conformance": ("swanref.verify.conformance", "main",
                    "check the installed third-party orthogonalizers; markdown table"),
    "vectors": ("swanref.verify.vectors", "main_write", "write the golden test vectors"),
    "check-vectors": ("swanref.verify.vectors", "main_check",
                      "verify outputs written next to golden vectors"),
    "schedule": ("swanref.presets.schedules", "main", "analyse a Newton-Schulz coefficient schedule"),
    "study": ("swanref.tools.study", "main", "numerical accuracy studies with plots"),
    "train-demo": ("swanref.tools.demo", "main", "train a small model with SWAN, Adam and SGD"),
}


def _usage() -> str:
    lines = ["usage: swanref [-h] [--version] COMMAND [options]", "",
             "options:", "  -h, --help     show this help and exit",
             "  --version      print the swanref and spec versions and exit", "",
             "commands:"]
    for name, (_, _, text) in COMMANDS.items():
        lines.append(f"  {name:<14} {text}")
    lines.append("")
    lines.append("swanref COMMAND --help for the options of one command "
                 "(also: python -m swanref COMMAND)")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run one subcommand; output cut short by a closed pipe (``swanref -h | head``) is fine."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away: stop quietly, and keep Python from failing again at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"swanref {__version__} (spec {SPEC_VERSION})")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"swanref: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"swanref {name}: not available in this installation ({exc})", file=sys.stderr)
        return 2
    return int(getattr(module, func)(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
