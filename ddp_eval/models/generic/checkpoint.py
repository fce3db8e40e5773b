"""Whether the generic family can run a checkpoint, decided from its files before any weights load.

It needs a processor that takes images (not a video-only one), the processor's files in the directory
and a chat template. Each error names the model_type and what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddp_eval.errors import DdpEvalError

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def processor_class(model_dir: Path, kind: str) -> str | None:
    """The processor class the checkpoint names, else the one transformers maps its model_type to."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        value = _json(model_dir / name).get("processor_class")
        if isinstance(value, str):
            return value
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return PROCESSOR_MAPPING_NAMES.get(kind)


def processor_parts(name: str | None) -> list[str] | None:
    """What the processor class is made of (image_processor, tokenizer, video_processor, ...); None where
    transformers does not define the class (remote code)."""
    import transformers

    cls = getattr(transformers, name, None) if name else None
    return list(cls.get_attributes()) if cls is not None and hasattr(cls, "get_attributes") else None


def has_image_processor_files(model_dir: Path) -> bool:
    return (model_dir / "preprocessor_config.json").is_file() or \
        "image_processor" in _json(model_dir / "processor_config.json")


def has_chat_template(model_dir: Path) -> bool:
    if any((model_dir / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    if (model_dir / "additional_chat_templates").is_dir():
        return True
    return any(_json(model_dir / name).get("chat_template") for name in ("processor_config.json",
                                                                          "tokenizer_config.json"))


def check_checkpoint(model_dir: Path, kind: str) -> None:
    """Stop unless the generic family can run the image-text-to-text checkpoint at `model_dir`."""
    where = f"model.path: {model_dir} is a {kind!r} checkpoint"
    name = processor_class(model_dir, kind)
    parts = processor_parts(name)
    if parts is not None and "image_processor" not in parts:
        takes = "videos but no images" if "video_processor" in parts else "no images"
        raise DdpEvalError(f"{where} whose processor ({name}) takes {takes}: ddp_eval's benchmarks show images, "
                           "so a video-only model cannot run them; use an image-text-to-text checkpoint")
    if not has_image_processor_files(model_dir):
        raise DdpEvalError(f"{where} without its processor: no preprocessor_config.json, and no processor_config.json "
                           "with an image_processor; save the processor into it (processor.save_pretrained) or "
                           "copy those files from the original checkpoint")
    if not has_chat_template(model_dir):
        raise DdpEvalError(f"{where} without a chat template (no {' / '.join(CHAT_TEMPLATE_FILES)}, none in "
                           "processor_config.json or tokenizer_config.json); the generic family prompts through the "
                           "processor's own chat template: copy the checkpoint's chat template into it")
