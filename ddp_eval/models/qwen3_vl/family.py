"""The Qwen3-VL family object: Qwen2-VL's family with Qwen3-VL's image geometry and VLMEvalKit's settings.

What differs from Qwen2-VL, and where it is handled:
- 16-pixel vision patches (merge 2): images resize to multiples of 32 (qwen_vl_utils' `image_patch_size=16`,
  as VLMEvalKit's Qwen3-VL wrapper calls it) and token costs count one token per 32 x 32 pixels;
- VLMEvalKit's pixel bounds: none set by its configs, so qwen_vl_utils' defaults for factor 32 (4 to 16384
  image tokens); OCRBench's minimum 10 x 10 x 32 x 32; the processor gets `do_resize=False`, as the
  wrapper calls it (qwen_vl_utils' rounding may leave an image a little outside the bounds: it stays so);
- prompts: its configs set use_custom_prompt=False, so every benchmark's own prompt;
- DeepStack: the vision tower also returns features of a few inner layers, added to the language model's
  first layers at the image positions; vision reuse repeats them with the image embeddings
  (qwen2_vl/vision_reuse.py). Prefix reuse needs nothing more: the shared prefix holds every image token,
  so the rows' own tokens and the decode steps never meet an image position.
Multimodal RoPE places an image's tokens as Qwen2-VL's does (text after it advances by max(h, w) / merge),
so the shared-prefix positions (qwen2_vl/positions.py) hold as they are.
"""

from __future__ import annotations

from dataclasses import replace

from ddp_eval.models.qwen2_vl.family import Qwen2VLFamily

# transformers versions every patch was tested on with Qwen3-VL (5.17 on the GPU, 5.24 on the CPU).
TESTED = ("5.17", "5.24")
FACTOR = 32  # patch 16 x spatial merge 2: one image token per 32 x 32 pixels


class Qwen3VLFamily(Qwen2VLFamily):
    # VLMEvalKit's Qwen3-VL configs leave min/max pixels unset: qwen_vl_utils' defaults for factor 32.
    default_pixels = (4 * FACTOR * FACTOR, 16384 * FACTOR * FACTOR)
    patch_size = 16
    ocrbench_min_pixels = 10 * 10 * FACTOR * FACTOR  # VLMEvalKit's Qwen3-VL wrapper, OCRBench alone
    processor_resizes = False  # VLMEvalKit's wrapper: do_resize=False, qwen_vl_utils' image as it is
    # Qwen2-VL's features, each tested with Qwen3-VL on its own transformers range; vision reuse repeats
    # the DeepStack features too.
    # Its vision MLP uses tanh GELU, not QuickGELU: no fused_activation.
    features = tuple(replace(f, tested=TESTED if f.tested else None) for f in Qwen2VLFamily.features
                     if f.key != "fused_activation")
