"""Attention for short queries on the model's key/value heads, without copying them per query head.

Qwen2-VL's language model has 12 query heads and 2 key/value heads. When a padding mask is present
(every batch of rows of different lengths), transformers' sdpa path copies each key/value head to its
6 query heads before attention (the fused GQA kernels take no mask), so every decode step rewrites
the whole KV cache six times over. For a short query the same attention can run on the 2 heads as
they are: a head's 6 query heads become 6 x query-length query rows of its key/value head, each with
its own position's mask row. Same arithmetic, no copy. Long queries (a prompt's prefill) keep sdpa's
own path, where the copy is small next to the attention itself.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

NAME = "ddp_eval_sdpa_kv_heads"
MAX_QUERY = 256  # longer queries (prefill) take transformers' sdpa path unchanged


def kv_head_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs):
    """transformers' attention-function interface: query (batch, heads, q, dim), key/value (batch,
    kv_heads, kv, dim) in; (batch, q, heads, dim) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = query.shape[1] // key.shape[1]
    if (groups == 1 or attention_mask is None or attention_mask.dim() != 4 or attention_mask.shape[1] != 1
            or query.shape[2] > MAX_QUERY or dropout or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    # Query head h reads key/value head h // groups: its rows follow its group's other heads' rows.
    folded = query.reshape(batch, kv_heads, groups * length, dim)
    mask = attention_mask[:, :, None].expand(-1, -1, groups, -1, -1)
    mask = mask.reshape(mask.shape[0], 1, groups * length, mask.shape[-1])
    out = nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, length, value.shape[-1]).transpose(1, 2).contiguous(), None


def use_kv_head_attention(model: nn.Module) -> bool:
    """Route the language model's sdpa attention through `kv_head_attention`; False where it does not
    apply (another attention implementation, or no grouped key/value heads)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    configs = {id(m.config): m.config for m in model.modules()
               if getattr(m, "num_key_value_groups", 1) > 1 and hasattr(m, "config")}
    configs = [c for c in configs.values() if c._attn_implementation == "sdpa"]
    if not configs:
        return False
    AttentionInterface.register(NAME, kv_head_attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # the same masks as sdpa
    for config in configs:
        config._attn_implementation = NAME
    log.info("language model: short queries attend on the key/value heads without copies")
    return True
