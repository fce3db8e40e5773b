"""Model families by name, and config.json's `model_type` -> family; each family imported when chosen.

To add a family: write its folder under models/ (a module-level FAMILY, a ModelFamily) and add a line
to FAMILIES with the model types it serves. A folder serving several families (Qwen2-VL and Qwen2.5-VL
differ only in their prompts) names the object after a colon: "ddp_eval.models.qwen2_vl:QWEN2_5_VL".
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
}


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
        raise DdpEvalError(f"model.family: unknown family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    module, _, attribute = FAMILIES[name][0].partition(":")
    return getattr(importlib.import_module(module), attribute or "FAMILY")


def family_for(model_dir: Path, family: str | None = None) -> ModelFamily:
    """The family `model.family` names, else the one serving the checkpoint's model_type."""
    if family is not None:
        return family_named(family)
    kind = model_type(model_dir)
    for name, (_, kinds) in FAMILIES.items():
        if kind in kinds:
            return family_named(name)
    served = ", ".join(k for _, kinds in FAMILIES.values() for k in kinds)
    raise DdpEvalError(f"model.path: {model_dir} is a {kind!r} checkpoint, which no model family serves "
                       f"(served: {served}); set model.family to use one anyway")
