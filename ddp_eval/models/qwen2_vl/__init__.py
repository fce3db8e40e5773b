"""Qwen2-VL and Qwen2.5-VL: VLMEvalKit's prompts and pixels for them, qwen_vl_utils resizing, and
every speed feature (vision reuse, prefix reuse, packed vision attention, decode graphs)."""

from ddp_eval.models.qwen2_vl.family import Qwen2VLFamily

FAMILY = Qwen2VLFamily()
