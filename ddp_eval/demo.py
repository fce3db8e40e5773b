"""The embedded default: a tiny Qwen2-VL checkpoint and an MMBench-format TSV, built offline.

Random weights, a small byte-level BPE tokenizer carrying Qwen2-VL's special tokens and chat
template, the real image processor; saved with save_pretrained so the runner loads it through
`from_pretrained` exactly like a real checkpoint. Accuracy on it is chance-level by design.

    python -m ddp_eval.demo --out .cache/demo      # builds once, then reuses
    python -m ddp_eval.demo --family internvl --out .cache/demo   # another family's (demo_families.py)
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import shutil
from pathlib import Path

from ddp_eval.errors import DdpEvalError

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# One user message's content parts in Qwen2-VL's template (Qwen3-VL's has the same): images and videos as
# their pad tokens between vision start and end, text as it is.
_CONTENT_PARTS = (
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
)

# Qwen2-VL's chat template: a default system turn, images/videos as vision_start/pad/end.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    + _CONTENT_PARTS +
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL's tokenizer: Qwen2-VL's special tokens, then Qwen3's tool-call, fill-in-the-middle and thinking ones.
QWEN3_VL_SPECIAL_TOKENS = SPECIAL_TOKENS + [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]

# Qwen3-VL's chat template without its tool branches: no default system turn; images as in Qwen2-VL's.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}<|im_start|>system\n"
    "{% if messages[0]['content'] is string %}{{ messages[0]['content'] }}{% else %}"
    "{% for content in messages[0]['content'] %}{% if 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endif %}"
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|im_start|>user\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    + _CONTENT_PARTS +
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% elif message['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Question: Which option describes the image? Options: A. B. C. D. Hint: The answer is",
    "Please select the correct answer from the options above.",
    "What color is the shape in the picture? red green blue yellow circle square triangle",
    "The image shows a large object on the left and a small one on the right.",
    "请直接回答选项字母。 问题 选项 提示 图片 颜色 形状",
    "You are a helpful assistant. 0 1 2 3 4 5 6 7 8 9",
]

# Large enough that random weights answer differently for different rows (0.02 gives one token).
INIT_STD = 0.4

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "cross"]
CATEGORIES = [
    ("color_recognition", "finegrained_perception (instance-level)"),
    ("shape_recognition", "coarse_perception"),
    ("spatial_relationship", "relation_reasoning"),
    ("counting", "finegrained_perception (cross-instance)"),
]


def build_tokenizer(family: str = "qwen2_vl"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special, template = ((QWEN3_VL_SPECIAL_TOKENS, QWEN3_VL_CHAT_TEMPLATE) if family == "qwen3_vl"
                         else (SPECIAL_TOKENS, CHAT_TEMPLATE))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=special[1:],
    )
    fast.chat_template = template
    return fast


def build_processor(tokenizer, family: str = "qwen2_vl"):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    if family == "qwen3_vl":  # Qwen3-VL's preprocessor_config: 16-pixel patches, mean and std 0.5
        from transformers import Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2,
                                                image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                                size={"shortest_edge": 65536, "longest_edge": 16777216})
        return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=Qwen3VLVideoProcessor(), chat_template=QWEN3_VL_CHAT_TEMPLATE)
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE,
    )


def token_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>"),
        "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }


def tiny_config(tokenizer, family: str = "qwen2_vl"):
    """A few-layer config of the given family whose token ids match the tokenizer."""
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, tie_word_embeddings=True,
        initializer_range=INIT_STD,
    )
    ids = token_ids(tokenizer)
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(initializer_range=INIT_STD, depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=64,
                      patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        return Qwen2VLConfig(text_config={**text, **ids}, vision_config=vision,
                            initializer_range=INIT_STD, **ids)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(initializer_range=INIT_STD, depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1], in_channels=3)
        return Qwen2_5_VLConfig(text_config={**text, **ids}, vision_config=vision,
                                initializer_range=INIT_STD, **ids)
    if family == "qwen3_vl":
        return _tiny_qwen3_vl_config(text, ids)
    raise ValueError(f"unknown family {family!r}")


def _tiny_qwen3_vl_config(text: dict, ids: dict[str, int]):
    """Qwen3-VL's shape in miniature: 16-pixel patches, interleaved multimodal RoPE, and DeepStack taps at
    vision layers 0 and 1 of 3 (their features join the first two of the language model's 3 layers)."""
    from transformers import Qwen3VLConfig

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    text = {k: v for k, v in text.items() if k not in ("rope_scaling", "rope_theta", "tie_word_embeddings")}
    text = {**text, "num_hidden_layers": 3, "head_dim": 16, "rope_parameters": rope, **ids}
    vision = dict(initializer_range=INIT_STD, depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                  out_hidden_size=64, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=64, deepstack_visual_indexes=[0, 1], in_channels=3)
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                         initializer_range=INIT_STD, **ids)


LETTER_SCALE = 3.0


def favour_option_letters(model, tokenizer) -> None:
    """Scale up the (tied) embedding rows of A-D so that the random model's first reply token is an
    option letter, as a real model's is: the demo's accuracy is then chance-level, not near zero."""
    import torch

    ids = [tokenizer.convert_tokens_to_ids(letter) for letter in "ABCD"]
    with torch.no_grad():
        model.get_output_embeddings().weight[ids] *= LETTER_SCALE


def build_checkpoint(out: Path, family: str = "qwen2_vl", seed: int = 0) -> Path:
    """Save a random-weight model of `family` + processor to `out` (skipped if already there)."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from ddp_eval.demo_families import BUILDERS, build_family_checkpoint

    if family not in demo_families():
        raise DdpEvalError(f"--family: no tiny demo checkpoint for family {family!r} "
                           f"(known: {', '.join(demo_families())})")
    stamp = out / "ddp_eval_demo.json"
    if stamp.exists() and stamped_family(out) == family:
        return out
    if stamp.exists():  # our own demo checkpoint of another family: this one takes its place
        shutil.rmtree(out)
    if family in BUILDERS:
        return build_family_checkpoint(out, family, seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family)
    processor = build_processor(tokenizer, family)
    config = tiny_config(tokenizer, family)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    favour_option_letters(model, tokenizer)
    ids = token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]], pad_token_id=ids["pad_token_id"],
        bos_token_id=ids["bos_token_id"],
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    stamp.write_text(json.dumps({"family": family, "seed": seed}) + "\n")
    return out


def demo_families() -> list[str]:
    """The families a tiny checkpoint can be built for: those of models/registry.py, and demo_families.py's."""
    from ddp_eval.demo_families import BUILDERS
    from ddp_eval.models.registry import FAMILIES

    return sorted({*FAMILIES, *BUILDERS})


def stamped_family(out: Path) -> str | None:
    """The family of the demo checkpoint already at `out` (None: none there)."""
    try:
        return json.loads((out / "ddp_eval_demo.json").read_text(encoding="utf-8")).get("family", "qwen2_vl")
    except (OSError, ValueError, AttributeError):
        return None


def _image_b64(rng: random.Random, color: str, shape: str, size: tuple[int, int]) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(w // 2, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)], fill=color)
    else:
        draw.line((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=color, width=max(2, w // 16))
        draw.line((3 * w // 4, h // 4, w // 4, 3 * h // 4), fill=color, width=max(2, w // 16))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build_benchmark_rows(n_questions: int = 24, seed: int = 0, rotations: int = 3) -> list[dict]:
    """MMBench-format rows: each question plus circular copies (options rotated, image by reference)."""
    rng = random.Random(seed)
    sizes = [(64, 64), (96, 72), (80, 120), (128, 96)]
    rows = []
    for q in range(n_questions):
        color, shape = COLORS[q % 4], SHAPES[(q // 4) % 4]
        category, l2 = CATEGORIES[q % len(CATEGORIES)]
        options = list(COLORS) if q % 2 == 0 else list(SHAPES)
        truth = color if q % 2 == 0 else shape
        question = "What color is the shape?" if q % 2 == 0 else "Which shape is drawn?"
        hint = "Look at the centre of the picture." if q % 3 == 0 else None
        image = _image_b64(rng, color, shape, sizes[q % len(sizes)])
        n_copies = 1 + (rotations if q % 4 != 3 else 0)  # some questions have no circular copies
        for r in range(n_copies):
            rotated = options[r:] + options[:r]
            rows.append({
                "index": q if r == 0 else r * 1_000_000 + q,
                "question": question, "hint": hint,
                **{letter: text for letter, text in zip("ABCD", rotated)},
                "answer": "ABCD"[rotated.index(truth)],
                "category": category, "l2-category": l2,
                "image": image if r == 0 else str(q),
            })
    return rows


def write_tsv(rows: list[dict], path: Path) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def build_demo(out: Path, family: str | None = None) -> tuple[Path, Path]:
    """The demo checkpoint (of `family`; None: the one already there, else Qwen2-VL) and benchmark under `out`."""
    model_dir = build_checkpoint(out / "model", family=family or stamped_family(out / "model") or "qwen2_vl")
    tsv = out / "mmbench_demo.tsv"
    if not tsv.exists():
        write_tsv(build_benchmark_rows(), tsv)
    return model_dir, tsv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/demo", type=Path)
    parser.add_argument("--family", default=None,
                        help="model family of the tiny checkpoint (default: the one already built, else qwen2_vl; "
                             f"known: {', '.join(demo_families())})")
    args = parser.parse_args()
    try:
        model_dir, tsv = build_demo(args.out, args.family)
    except DdpEvalError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"demo model ({stamped_family(model_dir)}): {model_dir}\ndemo benchmark: {tsv}")


if __name__ == "__main__":
    main()
