"""Every other transformers image-text-to-text checkpoint (LLaVA-OneVision, InternVL, Gemma 3, ...): the
processor's own chat template and image handling, batched `generate` with left padding, no speed features.

Chosen when config.json's model_type has no family of its own but transformers maps it to an
`AutoModelForImageTextToText` model, or by `model.family=generic`; `checkpoint.py` first checks,
without weights, that the directory has what this family needs.
"""

from ddp_eval.models.generic.family import PLAIN_PATH, GenericFamily, family_for_checkpoint

__all__ = ["PLAIN_PATH", "GenericFamily", "family_for_checkpoint"]
