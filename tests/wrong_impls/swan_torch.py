"""SWAN (spec 4) as a small ``torch.optim.Optimizer``, faithful and with one mistake per variant.

2-D weights that :func:`swanref.swan_route` sends to ``"swan"`` take ``swan_update`` (GradNorm,
the coupled Newton-Schulz whitening, RMS-1 rescaling; no state) with decoupled weight decay;
every other parameter (embeddings, the head, biases, norm gains, N-D weights) takes AdamW.
The matrix core calls swanref's operators on a float64 copy of the gradient; the routing, the
Adam branch and the parameter bookkeeping are the torch code under test.

Variants (each one mistake the model-level check must name):

* ``vectors_whitened``: 1-D parameters sent through SWAN as a ``(1, n)`` row;
* ``embedding_whitened``: routing by shape only (no name patterns), so the embedding and the
  head are whitened;
* ``conv_flattened``: conv weights flattened to ``(out, in kh kw)`` and sent through SWAN
  (spec 4.2 routes ``ndim != 2`` to Adam);
* ``whiten_first``: GradWhitening before GradNorm;
* ``no_rescale``: the bare whitening, without ``sqrt(m n) / ||D||_F``.
"""
import math

import numpy as np
import torch

import swanref

VARIANTS = ("faithful", "vectors_whitened", "embedding_whitened", "conv_flattened",
            "whiten_first", "no_rescale")


class SWAN(torch.optim.Optimizer):
    def __init__(self, named_params, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8,
                 variant="faithful"):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        named = list(named_params)
        self.names = {id(p): n for n, p in named}
        self.variant = variant
        super().__init__([p for _, p in named], dict(lr=lr, weight_decay=weight_decay,
                                                     betas=betas, eps=eps))

    def route(self, name, p):
        if self.variant == "vectors_whitened" and p.ndim == 1:
            return "swan"
        if self.variant == "conv_flattened" and p.ndim > 2:
            return "swan"
        patterns = () if self.variant == "embedding_whitened" else \
            swanref.spec.routing.ADAM_NAME_PATTERNS
        return swanref.swan_route(name, tuple(p.shape), adam_patterns=patterns)

    def swan(self, g, lr):
        M = g.reshape(1, -1) if g.ndim == 1 else g.reshape(g.shape[0], -1)
        if self.variant == "whiten_first":
            D = swanref.grad_norm(swanref.whiten(M, method="newton_schulz"))
            D = D * (math.sqrt(M.size) / np.linalg.norm(D))
            U = lr * D
        else:
            U = swanref.swan_update(M, lr=lr, rescale=self.variant != "no_rescale")
        return U.reshape(g.shape)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, (b1, b2), eps = (group["lr"], group["weight_decay"], group["betas"],
                                     group["eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - lr * wd)
                if self.route(self.names[id(p)], p) == "swan":
                    g = p.grad.detach().cpu().numpy().astype(np.float64)
                    p.sub_(torch.from_numpy(self.swan(g, lr)).to(p.dtype))
                    continue
                st = self.state[p]
                if not st:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                st["m"].lerp_(p.grad, 1 - b1)
                st["v"].lerp_(p.grad * p.grad, 1 - b2)
                mh = st["m"] / (1 - b1 ** st["step"])
                vh = st["v"] / (1 - b2 ** st["step"])
                p.sub_(lr * mh / (vh.sqrt() + eps))


class TinyModel(torch.nn.Module):
    """Every parameter kind SWAN routes: an embedding, tall/wide/square linears with biases, a
    conv, a LayerNorm and an LM head."""

    def __init__(self, vocab=50, d=8, hidden=16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.up = torch.nn.Linear(d, hidden)                 # weight (16, 8): tall
        self.down = torch.nn.Linear(hidden, d)               # weight (8, 16): wide
        self.mix = torch.nn.Linear(d, d, bias=False)         # square
        self.conv = torch.nn.Conv2d(4, d, 3)                 # (8, 4, 3, 3)
        self.norm = torch.nn.LayerNorm(d)
        self.lm_head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, tokens, image):
        x = self.embed(tokens) + self.conv(image).mean(dim=(-2, -1)).unsqueeze(1)
        x = x + self.down(torch.relu(self.up(self.norm(x))))
        return self.lm_head(self.mix(x))
