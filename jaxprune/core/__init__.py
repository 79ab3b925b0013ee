"""Model-independent types and the prune-group prefill/decode loop every decoder shares.

Nothing here imports from `jaxprune.models`: families build these types, pruning and generation consume them.
"""

from jaxprune.core.tokens import KVCache, LayerTrace, PrunePoint, Tokens, VisualLayout, make_tokens

__all__ = ["KVCache", "LayerTrace", "PrunePoint", "Tokens", "VisualLayout", "make_tokens"]
