"""Tiny offline checkpoints of the families the generic model family serves: LLaVA-OneVision and InternVL.

Each one as `demo.py` builds Qwen2-VL's: random weights, a few-layer Qwen2 text model, a small byte-level
BPE tokenizer carrying the family's special image tokens and a chat template shaped like the family's,
and the family's real image processor (small tiles, so CPU tests stay fast); saved with save_pretrained
so `AutoProcessor` / `AutoModelForImageTextToText.from_pretrained` load them as they load a real one.

    python -m ddp_eval.demo --family llava_onevision --out .cache/demo
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddp_eval.demo import _CORPUS, INIT_STD, favour_option_letters

_QWEN2_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# LLaVA-OneVision's (Qwen2) chat template: a user turn's images first, then its text.
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# InternVL's (HF-native, Qwen2) chat template: images and text in the prompt's order.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TILE = 56  # image tiles of 56 x 56 pixels, 14-pixel patches: 16 patches a tile
PATCH = 14


def _text_config(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    return dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0,
                tie_word_embeddings=True, initializer_range=INIT_STD, bos_token_id=ids["bos"],
                eos_token_id=ids["eos"], pad_token_id=ids["pad"])


def _tokenizer(special: list[str], template: str, extra: dict[str, str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=special[1:], extra_special_tokens=extra or {})
    fast.chat_template = template
    return fast


def _ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {"bos": ids("<|endoftext|>"), "eos": ids("<|im_end|>"), "pad": ids("<|endoftext|>")}


@dataclass
class Parts:
    processor: Any
    config: Any
    ids: dict[str, int]  # bos / eos / pad


def llava_onevision_parts() -> Parts:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.image_processing_llava_onevision import LlavaOnevisionImageProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tokenizer = _tokenizer([*_QWEN2_TOKENS, "<image>", "<video>"], LLAVA_ONEVISION_TEMPLATE)
    pinpoints = [[TILE, TILE], [TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]
    size = {"height": TILE, "width": TILE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(TILE // PATCH) ** 2, vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_TEMPLATE)
    ids = _ids(tokenizer)
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=TILE, patch_size=PATCH)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config={"model_type": "qwen2", **_text_config(len(tokenizer), ids)},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=pinpoints, tie_word_embeddings=True)
    return Parts(processor, config, ids)


def internvl_parts() -> Parts:
    from transformers import InternVLConfig, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    image_tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                    "video_token": "<video>"}
    tokenizer = _tokenizer([*_QWEN2_TOKENS, *image_tokens.values()], INTERNVL_TEMPLATE, image_tokens)
    size = {"height": TILE, "width": TILE}
    seq = (TILE // PATCH) ** 2 // 4  # downsample_ratio 0.5 merges 2 x 2 patches into one token
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=4),
        tokenizer=tokenizer, video_processor=InternVLVideoProcessor(size=size), image_seq_length=seq,
        chat_template=INTERNVL_TEMPLATE)
    ids = _ids(tokenizer)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=[TILE, TILE], patch_size=[PATCH, PATCH], initializer_range=INIT_STD)
    config = InternVLConfig(
        vision_config=vision, text_config={"model_type": "qwen2", **_text_config(len(tokenizer), ids)},
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=seq,
        downsample_ratio=0.5, tie_word_embeddings=True)
    return Parts(processor, config, ids)


BUILDERS: dict[str, Callable[[], Parts]] = {
    "llava_onevision": llava_onevision_parts,
    "internvl": internvl_parts,
}


def build_family_checkpoint(out: Path, family: str, seed: int = 0) -> Path:
    """Save a random-weight model of `family` (a key of BUILDERS) + its processor to `out`."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    parts = BUILDERS[family]()
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(parts.config, dtype=torch.float32)
    favour_option_letters(model, parts.processor.tokenizer)
    ids = parts.ids
    model.generation_config = GenerationConfig(eos_token_id=[ids["eos"], ids["pad"]], pad_token_id=ids["pad"],
                                               bos_token_id=ids["bos"])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    parts.processor.save_pretrained(out)
    (out / "ddp_eval_demo.json").write_text(json.dumps({"family": family, "seed": seed}) + "\n")
    return out
