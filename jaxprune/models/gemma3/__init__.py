"""Gemma 3 (`Gemma3ForConditionalGeneration`): family 4 — SigLIP tower, 4x4 average pool to 256 tokens per image,
the Gemma 3 decoder (sliding/global layers, QK-norm, (1 + w) RMSNorm), bidirectional attention inside an image.

Pruning semantics for this family:
- Prunable tokens: the `mm_tokens_per_image` (256) `<image_soft_token>`s of each image, one per cell of the
  image's 16x16 token grid (slots in raster order, image-major). `<start_of_image>`, `<end_of_image>` and the
  "\\n\\n" around them are text: never pruned, always causal, so an image whose soft tokens are all pruned
  (keep < images) still leaves its delimiters in place.
- Mask after pruning: transformers lets soft tokens of the same image attend to each other both ways
  (`token_type_ids`). jaxprune rebuilds that mask per prune group from the tokens the group keeps
  (`Gemma3Decoder.prefill_mask`): kept tokens of one image still see each other both ways, a dropped token is
  simply absent, tokens of different images and all text stay causal. A merged token (visionzip, pool) takes
  the image id of the position it is placed at, so it joins that image's block. Decode steps are text: causal.
- Sliding window after pruning: it counts kept tokens (sequence slots), not original RoPE positions. A prune
  group runs as if its kept sequence were the prompt: at K = 0 the logits equal transformers run on the kept
  sequence itself, and a sliding layer attends to the last `sliding_window` kept tokens, which is what
  transformers' sliding cache would hold for that sequence. Prefill measures the index distance within the
  group's sequence, decode the distance from the cache slot being written, so cached decode equals recompute.
  Consequence: pruning lets a sliding layer reach further back in the original prompt than the unpruned model;
  with the released 1024-token window this matters only for prompts longer than about 1024 - 256 text tokens.
  (The cache stores every slot for sliding layers too, no ring buffer; `cost.py`'s KV bytes count exactly that.)
- Positions are 1-D (no M-RoPE): at K >= 1 kept tokens keep their ids, at K = 0 they are renumbered contiguously
  (`reindex` flips either), as for LLaVA.
- FastV reads the queries of layer K-1 pre-scaled so that q.k / sqrt(Dh) is Gemma's q.k / sqrt(
  query_pre_attn_scalar); at a *sliding* layer K-1 its softmax is over the same window of earlier slots the
  layer attends to (`Gemma3Decoder.attention_window`), as transformers' eager attention is.
- Signals: `importance` = attention received in SigLIP's last layer (no [CLS]), summed over each token's 4x4
  patch block; `keys` averaged over the block; `grid` (16x16 per image), so all methods run, `pool` included.
- Pan-and-scan crops are not supported: the host turns the processor's `do_pan_and_scan` off.
"""

from jaxprune.models.base import Family
from jaxprune.models.gemma3 import weights
from jaxprune.models.gemma3.config import HUB_CONFIGS, PRESETS, SHAPES, Gemma3Config, Gemma3TextConfig
from jaxprune.models.gemma3.decoder import Gemma3Decoder
from jaxprune.models.gemma3.host import Gemma3Host
from jaxprune.models.gemma3.modeling import Gemma3

__all__ = ["FAMILY", "HUB_CONFIGS", "PRESETS", "SHAPES", "Gemma3", "Gemma3Config", "Gemma3Decoder", "Gemma3Host",
           "Gemma3TextConfig"]

FAMILY = Family("gemma3", ("Gemma3ForConditionalGeneration", "gemma3"), Gemma3Config.from_hf, Gemma3,
                weights.GEMMA3, optional_targets=weights.OPTIONAL_TARGETS, host=Gemma3Host, presets=PRESETS,
                shapes=SHAPES)
