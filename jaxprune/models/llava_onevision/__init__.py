"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`): family 3 — SigLIP tower over AnyRes crops, a 2-layer
projector, unpadded crop grids with image-newline tokens, and the Qwen2 decoder (1-D RoPE).

Pruning semantics:
- Visual slots are every token the processor expands `<image>` into, in prompt order: per image the base view
  ((S/p)^2 tokens, raster order), then the crops view (the unpadded, possibly shrunk crop grid with one
  image-newline token after each row). A multi-image prompt gives each image its base view plus one newline.
- The image-newline tokens are visual slots and are prunable like any other: they sit at `<image>` positions, the
  processor counts them in the image's tokens (so `keep` >= that count is the identity and budgets count the
  same tokens as transformers' sequence), and keeping or dropping a row marker is a choice each method's signal
  should make, not the family. Their vision-side importance is 0 (no tower attention reaches them; every patch
  receives some), so `clsattn`/`visionzip` keep them last; text-side methods (`latesim`, `fastv`) score them from
  their hidden states like any token.
- The layout has one entry per *view*: the base view is its (S/p) x (S/p) grid; the crops view is an
  h' x (w' + 1) grid whose last column is the newline tokens (raster order = token order); a multi-image
  prompt's newline is a 1 x 1 view. So a kept-token map of a multi-crop image is one map per view (base, crops
  with the newline column), and `uniform` strides each view's own grid; `pool` (one fixed grid) is refused.
- Vision-side signals (`clsattn`, `visionzip`): SigLIP has no [CLS], so importance is the attention each patch
  receives in the deepest tower layer run (as Qwen2.5-VL), keys that layer's head-mean keys; a shrunk crop-grid
  token mixes its source patches' signals with its bilinear weights.
- Positions are 1-D; at K >= 1 kept tokens keep their ids, at K = 0 (`reindex`) they are renumbered.
"""

from jaxprune.models.base import Family
from jaxprune.models.llava_onevision import weights
from jaxprune.models.llava_onevision.config import HUB_CONFIGS, SHAPES, OnevisionConfig
from jaxprune.models.llava_onevision.host import OnevisionHost
from jaxprune.models.llava_onevision.modeling import LlavaOnevision

__all__ = ["FAMILY", "HUB_CONFIGS", "PRESETS", "SHAPES", "LlavaOnevision", "OnevisionConfig", "OnevisionHost"]

# registry names -> hub ids (downloaded only when online)
PRESETS = {"llava-onevision-0.5b": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
           "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf"}

FAMILY = Family("llava_onevision", ("LlavaOnevisionForConditionalGeneration", "llava_onevision"),
                OnevisionConfig.from_hf, LlavaOnevision, weights.ONEVISION, optional_targets=weights.OPTIONAL_TARGETS,
                host=OnevisionHost, presets=PRESETS, shapes=SHAPES)
