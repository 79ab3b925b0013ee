"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`, llava-hf/llava-v1.6-*): family 5 — LLaVA-1.5's CLIP ViT-L/14-336
tower and 2-layer projector over AnyRes crops, unpadded crop grids with image-newline tokens, and a Vicuna (Llama)
or Mistral decoder (1-D RoPE). The crop model is the `llava` family's (tower, projector, weight map); the AnyRes
host logic is LLaVA-OneVision's, with no anyres_max shrink and every image of a prompt tiled.

Pruning semantics:
- Visual slots are every token the processor expands `<image>` into, in prompt order: per image the base view
  ((S/p)^2 tokens, raster order, [CLS] dropped), then the crops view (the unpadded crop grid with one image-newline
  token after each row). A multi-image prompt tiles every image the same way (unlike OneVision's base-only rule).
- The image-newline tokens are visual slots and are prunable like any other (as in LLaVA-OneVision): they sit at
  `<image>` positions and transformers' processor counts them, so `keep` >= that count is the identity and budgets
  count the same tokens as transformers' sequence. Their vision-side importance is 0 (no [CLS] attention reaches
  them), so `clsattn`/`visionzip` keep them last; text-side methods (`latesim`, `fastv`) score them like any token.
- The layout has one entry per *view*: the base view is its (S/p) x (S/p) grid; the crops view is an h' x (w' + 1)
  grid whose last column is the newline tokens (raster order = token order). Kept-token maps are one map per view,
  `uniform` strides each view's own grid; `pool` (one fixed grid) is refused.
- Vision-side signals: "importance" is CLIP's [CLS]->patch attention in the deepest feature layer (layer -2 on the
  released checkpoints), summed over heads, of the crop token behind each slot (FasterVLM's signal, as LLaVA-1.5);
  "keys" that layer's head-mean keys; "grid" as above.
- Positions are 1-D; at K >= 1 kept tokens keep their ids, at K = 0 (`reindex`) they are renumbered.
"""

from jaxprune.models.base import Family
from jaxprune.models.llava_next import weights
from jaxprune.models.llava_next.config import HUB_CONFIGS, PRESETS, SHAPES, LlavaNextConfig
from jaxprune.models.llava_next.host import NextHost
from jaxprune.models.llava_next.modeling import LlavaNext

__all__ = ["FAMILY", "HUB_CONFIGS", "PRESETS", "SHAPES", "LlavaNext", "LlavaNextConfig", "NextHost"]

FAMILY = Family("llava_next", ("LlavaNextForConditionalGeneration", "llava_next"), LlavaNextConfig.from_hf, LlavaNext,
                weights.NEXT, optional_targets=weights.OPTIONAL_TARGETS, host=NextHost, presets=PRESETS,
                shapes=SHAPES)
