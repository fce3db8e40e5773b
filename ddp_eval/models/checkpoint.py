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
