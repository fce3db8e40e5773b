"""Facts about a checkpoint read from its config.json alone (no transformers import)."""

from __future__ import annotations

import json
from pathlib import Path


def context_length(model_dir: Path) -> int | None:
    """The language model's context (max_position_embeddings), or None where config.json does not say."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    for section in (config.get("text_config"), config):
        value = section.get("max_position_embeddings") if isinstance(section, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def _sections(config: dict) -> tuple[dict, dict]:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else {}
    return text, vision


def bytes_per_prompt_token(model_dir: Path, dtype_bytes: int = 2) -> int | None:
    """An estimate of the device memory one prompt token of a batch needs: its keys and values in every
    layer, the largest per-layer activations of the prefill, and the vision tower's activations for the
    patches behind an image token (as if every row had its own image: no reuse counted). None where
    config.json lacks the sizes."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    text, vision = _sections(config)
    try:
        hidden, layers = int(text["hidden_size"]), int(text["num_hidden_layers"])
        heads = int(text.get("num_attention_heads") or 1)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or hidden // heads)
        intermediate = int(text.get("intermediate_size") or 4 * hidden)
    except (KeyError, TypeError, ValueError):
        return None
    kv = 2 * layers * kv_heads * head_dim
    prefill = 6 * hidden + 3 * intermediate
    width = int(vision.get("embed_dim") or vision.get("hidden_size") or 0)  # Qwen2-VL: hidden_size is the merger's
    wide = int(vision.get("intermediate_size") or float(vision.get("mlp_ratio") or 4) * width)
    merge = int(vision.get("spatial_merge_size") or 1) ** 2
    tower = merge * (6 * width + 3 * wide) if width else 0
    return dtype_bytes * (kv + prefill + tower)


def weights_bytes(model_dir: Path) -> int:
    """The checkpoint's weight files on disk: what the replica takes on the device, about."""
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) or \
        sum(p.stat().st_size for p in model_dir.glob("*.bin"))
