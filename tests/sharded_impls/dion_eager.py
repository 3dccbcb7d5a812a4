"""microsoft/dion's distributed Muon (vendored in ./dion) with torch.compile switched off for
its step: its compiled kernels take a minute or more to build on a CPU, per rank and shape,
which the test suite cannot afford; eager PyTorch runs the same operations.  Everything else is
dion's own code."""
import os
import sys

import torch

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
from dion import Muon  # noqa: E402


class EagerMuon(Muon):
    def step(self, *args, **kwargs):
        with torch.compiler.set_stance("force_eager"):
            return super().step(*args, **kwargs)
