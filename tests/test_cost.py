"""Analytic cost model vs hand-computed counts on a tiny config."""

from __future__ import annotations

import pytest

from jaxprune import cost
from jaxprune.models.config import TextConfig
from jaxprune.models.llava import LlavaConfig, VisionConfig

TEXT = TextConfig(vocab_size=100, hidden_size=16, intermediate_size=40, num_layers=4,
                  num_heads=4, num_kv_heads=2, head_dim=4)
VISION = VisionConfig(hidden_size=8, intermediate_size=20, num_layers=3, num_heads=2,
                      image_size=8, patch_size=4)  # 2x2 = 4 patches
CFG = LlavaConfig(text=TEXT, vision=VISION, image_token_id=99)  # layer -2 -> 2 of 3 layers used

# One decoder layer at S=10 (D=16, q_dim=16, kv_dim=8, I=40, H=4, Dh=4):
#   q 2*10*16*16=5120, k 2*10*16*8=2560, v 2560, o 5120        -> 15360
#   QK^T 2*4*10*10*4=3200, PV 3200                             ->  6400
#   SwiGLU 3*2*10*16*40                                        -> 38400
LAYER_S10 = 60160
# At S=7: proj 2*7*16*48=10752, attn 2*2*4*49*4=3136, mlp 6*7*16*40=26880.
LAYER_S7 = 40768
LM_HEAD = 2 * 16 * 100  # last position only
# Vision: patch embed 2*4*(3*4*4)*8=3072; per layer on T=5 tokens (Dv=8, Iv=20):
#   qkvo 4*2*5*8*8=2560, attn 2*2*5*5*8=800, mlp 2*2*5*8*20=3200 -> 6560, x2 used layers;
#   projector 2*4*(8*16 + 16*16)=3072.
VISION_TOTAL = 3072 + 2 * 6560 + 3072


def test_tiny_config_basics():
  assert CFG.vision_layers_used == 2 and CFG.num_image_tokens == 4


def test_prefill_flops_hand_count():
  assert cost.decoder_layer_flops(TEXT, 10) == LAYER_S10
  assert cost.decoder_layer_flops(TEXT, 7) == LAYER_S7
  assert cost.vision_flops(CFG) == VISION_TOTAL
  assert cost.prefill_flops(CFG, 10) == 4 * LAYER_S10 + LM_HEAD + VISION_TOTAL
  assert cost.prefill_flops(CFG, 10, include_vision=False) == 4 * LAYER_S10 + LM_HEAD
  assert cost.prefill_flops(TEXT, 10) == 4 * LAYER_S10 + LM_HEAD
  assert cost.prefill_flops(CFG, 10, batch=3) == 3 * cost.prefill_flops(CFG, 10)


def test_keep_at_least_num_visual_is_unpruned():
  full = cost.prefill_flops(CFG, 10)
  assert cost.prefill_flops(CFG, 10, [(0, 4)]) == full
  assert cost.prefill_flops(CFG, 10, [(1, 9), (3, 4)]) == full
  assert cost.kv_cache_bytes(CFG, 10, [(0, 100)]) == cost.kv_cache_bytes(CFG, 10)


def test_pruning_lowers_flops_by_expected_amount():
  full = cost.prefill_flops(CFG, 10)
  # Keep 1 of 4 visual tokens from layer 2: layers 2, 3 run on 7 tokens.
  assert full - cost.prefill_flops(CFG, 10, [(2, 1)]) == 2 * (LAYER_S10 - LAYER_S7)
  # Two stages: layer 1 keeps 3 (S=9), layer 3 keeps 1 (S=7).
  two = LAYER_S10 + 2 * cost.decoder_layer_flops(TEXT, 9) + LAYER_S7
  assert cost.prefill_flops(CFG, 10, [(1, 3), (3, 1)], include_vision=False) == two + LM_HEAD
  # Vision tower cost is unchanged by the plan.
  assert cost.prefill_flops(CFG, 10, [(0, 1)]) - cost.prefill_flops(CFG, 10, [(0, 1)], include_vision=False) == VISION_TOTAL


def test_sequence_lengths():
  assert cost.sequence_lengths(4, 10, 4, ()) == [10, 10, 10, 10]
  assert cost.sequence_lengths(4, 10, 4, [(0, 2)]) == [8, 8, 8, 8]
  assert cost.sequence_lengths(4, 10, 4, [(1, 3), (3, 1)]) == [10, 9, 9, 7]
  assert cost.sequence_lengths(4, 10, 4, [(2, 9)]) == [10, 10, 10, 10]


def test_kv_cache_bytes_hand_count():
  per_token = 2 * 2 * 4 * 2  # k and v, Hkv=2, Dh=4, 2 bytes
  assert cost.kv_cache_bytes(CFG, 10) == 4 * 10 * per_token
  assert cost.kv_cache_bytes(CFG, 10, max_new_tokens=5, batch=3) == 3 * 4 * 15 * per_token
  assert cost.kv_cache_bytes(CFG, 10, [(2, 1)], max_new_tokens=5) == (15 + 15 + 12 + 12) * per_token
  assert cost.kv_cache_bytes(TEXT, 10, [(0, 1)], num_visual=6, bytes_per_element=4) == 4 * 5 * 2 * 2 * 4 * 4


@pytest.mark.parametrize("plan,msg", [
    ([(4, 1)], "outside"),
    ([(-1, 1)], "outside"),
    ([(0, 0)], "keep=0"),
    ([(1, 3), (1, 2)], "does not increase"),
    ([(2, 3), (1, 2)], "does not increase"),
    ([(0, 2), (1, 3)], "grows"),
])
def test_bad_plans_raise(plan, msg):
  with pytest.raises(ValueError, match=msg):
    cost.prefill_flops(CFG, 10, plan)
  with pytest.raises(ValueError, match=msg):
    cost.kv_cache_bytes(CFG, 10, plan)


def test_bad_num_visual_raises():
  with pytest.raises(ValueError, match="num_visual"):
    cost.sequence_lengths(4, 3, 4, ())
