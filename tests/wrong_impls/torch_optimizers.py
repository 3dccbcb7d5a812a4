"""Tiny torch optimizers with the parameter conventions real Muon packages use (exact polar
factor, SGD-form momentum with Nesterov), for the zero-glue tests: groups flagged
``use_muon`` (KellerJordan MuonWithAuxAdam, pytorch-optimizer), named parameters, a
``muon_params=`` keyword (Moonlight), and one whose every step raises."""
import torch


def _polar(G):
    U, _, Vh = torch.linalg.svd(G.reshape(G.shape[0], -1).double(), full_matrices=False)
    m, n = G.shape[0], G[0].numel()
    return ((U @ Vh) * max(1.0, m / n) ** 0.5).reshape(G.shape).to(G.dtype)


class _Base(torch.optim.Optimizer):
    def _init(self, groups, lr, weight_decay, momentum, nesterov):
        super().__init__(groups, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            self._check(group)
            for p in group["params"]:
                if p.ndim < 2 or p.is_complex():
                    raise ValueError("only real matrices are supported")
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                u = p.grad + group["momentum"] * buf if group["nesterov"] else buf
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(_polar(u), alpha=-group["lr"])

    def _check(self, group):
        pass


class UseMuonGroups(_Base):
    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True):
        self._init(params, lr, weight_decay, momentum, nesterov)

    def _check(self, group):
        assert "use_muon" in group, "every group needs use_muon"


class NamedParams(_Base):
    def __init__(self, named_params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True):
        named = list(named_params)
        if not all(isinstance(x, tuple) and isinstance(x[0], str) for x in named):
            raise TypeError("expected named parameters: (name, tensor) tuples")
        self.names = [n for n, _ in named]
        self._init([p for _, p in named], lr, weight_decay, momentum, nesterov)


class MuonParamsKwarg(_Base):
    def __init__(self, lr=0.02, weight_decay=0.0, muon_params=None, momentum=0.95,
                 nesterov=True, adamw_params=None):
        self._init(list(muon_params) + list(adamw_params or []), lr, weight_decay, momentum,
                   nesterov)


class AlwaysRaises(_Base):
    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True):
        self._init(params, lr, weight_decay, momentum, nesterov)

    def step(self):
        raise RuntimeError("step is not implemented")


class HangsAtSecondStep(_Base):
    """A step that never returns once momentum is in play (a wait that is never woken):
    ``--timeout`` must stop the check there, naming the property and the step."""

    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True):
        self._init(params, lr, weight_decay, momentum, nesterov)
        self.steps = 0

    def step(self):
        self.steps += 1
        if self.steps == 2:
            import threading
            threading.Event().wait()  # never set; the check's worker is a daemon thread
        return super().step()
