"""Model families by name, and config.json's `model_type` -> family; each family imported when chosen.

To add a family: write its folder under models/ (a module-level FAMILY, a ModelFamily) and add a line
to FAMILIES with the model types it serves. A folder serving several families (Qwen2-VL and Qwen2.5-VL
differ only in their prompts) names the object after a colon: "ddp_eval.models.qwen2_vl:QWEN2_5_VL".

A model_type no family serves runs on the generic family (models/generic/: the processor's own chat
template, plain `generate`) when transformers maps it to an image-text-to-text model; `model.family=generic`
asks for it on any checkpoint. Either way its files are checked before any rank loads weights.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import ModelFamily

# family name -> (module holding FAMILY, or module:OBJECT; config.json model_type values it serves)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "qwen2_vl": ("ddp_eval.models.qwen2_vl", ("qwen2_vl",)),
    "qwen2_5_vl": ("ddp_eval.models.qwen2_vl:QWEN2_5_VL", ("qwen2_5_vl",)),
    "qwen3_vl": ("ddp_eval.models.qwen3_vl", ("qwen3_vl", "qwen3_vl_moe")),
}


# Every other image-text-to-text checkpoint; built per checkpoint (it reads the checkpoint's files).
GENERIC = "generic"


def known_families() -> list[str]:
    return sorted([*FAMILIES, GENERIC])


def check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise DdpEvalError(f"model.path: no model directory at {path}")
    if not (path / "config.json").is_file():
        raise DdpEvalError(f"model.path: {path} has no config.json; is it a saved transformers model?")


def model_type(model_dir: Path) -> str:
    """config.json's model_type, read without transformers."""
    check_model_dir(model_dir)
    config = model_dir / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DdpEvalError(f"model.path: cannot read {config} ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise DdpEvalError(f"model.path: {config} names no model_type")
    return data["model_type"]


def family_named(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise DdpEvalError(f"model.family: unknown family {name!r} (known: {', '.join(known_families())})")
    module, _, attribute = FAMILIES[name][0].partition(":")
    return getattr(importlib.import_module(module), attribute or "FAMILY")


def family_for(model_dir: Path, family: str | None = None) -> ModelFamily:
    """The family `model.family` names, else the one serving the checkpoint's model_type, else the generic
    family for an image-text-to-text model_type; no weights are read."""
    if family is not None and family != GENERIC:
        return family_named(family)
    kind = model_type(model_dir)
    own = next((name for name, (_, kinds) in FAMILIES.items() if kind in kinds), None)
    if own is not None and family is None:
        return family_named(own)
    if not is_image_text_to_text(kind):
        served = ", ".join(k for _, kinds in FAMILIES.values() for k in kinds)
        raise DdpEvalError(f"model.path: {model_dir} is a {kind!r} checkpoint, which no model family serves: "
                           f"transformers has no image-text-to-text model for {kind!r} (a text-only, speech or "
                           f"other model?); ddp_eval runs image-text-to-text checkpoints ({served} on families of "
                           "their own, any other on the generic family)")
    from ddp_eval.models.generic import family_for_checkpoint

    return family_for_checkpoint(model_dir, kind)


def is_image_text_to_text(kind: str) -> bool:
    """Whether transformers' AutoModelForImageTextToText has a model for this model_type (no weights read)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return kind in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
