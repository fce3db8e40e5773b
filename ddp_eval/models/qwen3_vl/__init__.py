"""Qwen3-VL (dense and MoE): the datasets' prompts, VLMEvalKit's pixels for it, qwen_vl_utils resizing to
multiples of 32, and every speed feature the Qwen2-VL family has (its code, shared)."""

from ddp_eval.models.qwen3_vl.family import Qwen3VLFamily

FAMILY = Qwen3VLFamily("qwen3_vl", ("qwen3_vl", "qwen3_vl_moe"), custom_prompts=False)  # VLMEvalKit's configs
