"""Which parameters SWAN updates and which go to Adam (spec section 4.2).

Following the paper's setup (and Gong et al. 2025 App. F.2 for the same benchmark): every
2-D weight matrix of the attention and MLP blocks goes through SWAN; embeddings, the LM head
(last layer) and every parameter with ndim != 2 (biases, norm gains) go through Adam.
"""
from __future__ import annotations

ADAM_NAME_PATTERNS = ("embed", "wte", "wpe", "tok_emb", "pos_emb", "lm_head", "output_head")


def swan_route(name: str, shape, *, adam_patterns=ADAM_NAME_PATTERNS) -> str:
    """Return ``"swan"`` or ``"adam"`` for the parameter ``name`` of the given shape."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        return "adam"
    lowered = name.lower()
    if any(p in lowered for p in adam_patterns):
        return "adam"
    return "swan"
