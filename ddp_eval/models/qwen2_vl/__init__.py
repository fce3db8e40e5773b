"""Qwen2-VL and Qwen2.5-VL: VLMEvalKit's prompts and pixels for them, qwen_vl_utils resizing, and
every speed feature (vision reuse, prefix reuse, packed vision attention, decode graphs)."""

from ddp_eval.models.qwen2_vl.family import Qwen2VLFamily

FAMILY = Qwen2VLFamily("qwen2_vl", ("qwen2_vl",), custom_prompts=True)  # VLMEvalKit: use_custom_prompt=True
QWEN2_5_VL = Qwen2VLFamily("qwen2_5_vl", ("qwen2_5_vl",), custom_prompts=False)  # its configs set it False
