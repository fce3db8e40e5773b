"""The Qwen3-VL family on tiny offline checkpoints (dense and MoE, float32, DeepStack taps in the tiny tower):
the shared loading path, resizing and token costs with factor 32, predictions against transformers' own
batch-1 `generate`, and every speed feature against the plain path on the demo benchmark (circular copies)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import SMALL_PIXELS
from helpers import env, predictions, shard_records
from test_model import QUIET, SMALL, _decode_both_ways, load_model, load_processor, prepare_batch

from ddp_eval import demo
from ddp_eval.config import DataConfig, ModelConfig, load_config
from ddp_eval.models.base import Pixels, Speed, resolve_speed
from ddp_eval.models.loading import check_model_device
from ddp_eval.models.qwen3_vl import FAMILY
from ddp_eval.models.registry import family_for
from ddp_eval.run.runner import run
from ddp_eval.tasks.base import TaskSettings, prompt_text
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.registry import get_task

ALL_ON = ("model.reuse_vision=true", "model.reuse_prefix=true", "model.decode_graphs=true",
          "model.vision_attention=varlen", "model.kv_head_attention=true", "model.fused_rotary=true")
ALL_OFF = ("model.reuse_vision=false", "model.reuse_prefix=false", "model.decode_graphs=false",
           "model.vision_attention=sdpa", "model.kv_head_attention=false", "model.fused_rotary=false")
ROWS_OF_FOUR_SIZES = (0, 1, 2, 3)  # the demo's images: 64x64, 96x72, 80x120, 128x96


@pytest.fixture(scope="session")
def qwen3_vl(tmp_path_factory):
    return demo.build_checkpoint(tmp_path_factory.mktemp("qwen3_vl") / "model", family="qwen3_vl")


@pytest.fixture(scope="session")
def qwen3_vl_moe(tmp_path_factory):
    """The dense tiny checkpoint's shape with a sparse MoE block (4 experts, 2 a token) in every layer."""
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen3VLMoeConfig

    out = tmp_path_factory.mktemp("qwen3_vl_moe") / "model"
    tokenizer = demo.build_tokenizer("qwen3_vl")
    dense = demo.tiny_config(tokenizer, "qwen3_vl").to_dict()
    text = {k: v for k, v in dense["text_config"].items() if k not in ("model_type", "architectures")}
    config = Qwen3VLMoeConfig(text_config={**text, "num_experts": 4, "num_experts_per_tok": 2,
                                           "moe_intermediate_size": 32, "decoder_sparse_step": 1},
                              vision_config={k: v for k, v in dense["vision_config"].items() if k != "model_type"},
                              **{k: dense[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                       "vision_end_token_id", "tie_word_embeddings")})
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    demo.favour_option_letters(model, tokenizer)
    ids = demo.token_ids(tokenizer)
    model.generation_config = GenerationConfig(eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]],
                                               pad_token_id=ids["pad_token_id"], bos_token_id=ids["bos_token_id"])
    model.save_pretrained(out)
    demo.build_processor(tokenizer, "qwen3_vl").save_pretrained(out)
    return out


@pytest.fixture
def bench(demo_tsv):
    return load_benchmark(DataConfig(path=str(demo_tsv)))


def model_config(path, **switches) -> ModelConfig:
    return ModelConfig(path=str(path), dtype="float32", min_pixels=SMALL.min_pixels, max_pixels=SMALL.max_pixels,
                       **switches)


def processor_and_model(path, **switches):
    cfg = model_config(path, **switches)
    return load_processor(cfg, FAMILY), load_model(cfg, torch.device("cpu"), FAMILY)


def test_qwen3_vl_and_its_moe_checkpoints_get_the_family_with_the_datasets_prompts(tmp_path):
    for kind in ("qwen3_vl", "qwen3_vl_moe"):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": kind}))
        assert family_for(tmp_path) is FAMILY
    assert not FAMILY.custom_prompts  # VLMEvalKit's Qwen3-VL configs: use_custom_prompt=False


def test_default_pixels_are_qwen_vl_utils_own_for_factor_32_and_ocrbench_lowers_the_minimum():
    cfg = load_config(None, ["model.path=m", "data.path=d.tsv"])
    assert FAMILY.pixels(cfg, TaskSettings(), "MMBench_DEV_EN") == Pixels(4 * 32 * 32, 16384 * 32 * 32)
    assert FAMILY.pixels(cfg, TaskSettings(), "OCRBench") == Pixels(10 * 10 * 32 * 32, 16384 * 32 * 32)


def test_every_speed_feature_is_offered_within_the_tested_transformers():
    cfg = load_config(None, ["model.path=m", "data.path=d.tsv", *ALL_ON])
    for version in ("5.17.0", "5.24.0"):
        assert resolve_speed(cfg, FAMILY, version) == Speed(reuse_vision=True, reuse_prefix=True, decode_graphs=True,
                                                            vision_attention="varlen", kv_head_attention=True,
                                                            fused_rotary=True)
    assert {f.key for f in FAMILY.features} == {"reuse_vision", "reuse_prefix", "decode_graphs", "vision_attention",
                                                "kv_head_attention", "fused_rotary", "compile_vision"}


def test_replica_loads_whole_on_the_device_and_the_processor_keeps_the_run_pixel_bounds(qwen3_vl):
    processor, model = processor_and_model(qwen3_vl, compile_vision=True)
    check_model_device(model, torch.device("cpu"))
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert processor.image_processor.size == {"shortest_edge": SMALL.min_pixels, "longest_edge": SMALL.max_pixels}
    assert processor.image_processor.patch_size == 16 and processor.tokenizer.padding_side == "left"
    assert all(block._compiled_call_impl is not None for block in model.model.visual.blocks)  # compiled on first use


@pytest.mark.parametrize("pixels", [SMALL, Pixels(3136, 4096)])
def test_images_resize_by_32_as_qwen_vl_utils_does_and_costs_count_their_tokens(qwen3_vl, bench, pixels):
    from qwen_vl_utils import fetch_image

    processor = FAMILY.load_processor(model_config(qwen3_vl), pixels)
    task = get_task("mcq")
    batch = FAMILY.preprocessor(processor, bench, task, Speed(), pixels)(0, ROWS_OF_FOUR_SIZES)
    costs = FAMILY.costs(bench, task, pixels)
    for row, index in enumerate(ROWS_OF_FOUR_SIZES):
        image = bench.images.open(bench.by_index[index].image_keys[0])
        expected = fetch_image({"image": image, "min_pixels": pixels.min_pixels, "max_pixels": pixels.max_pixels},
                               image_patch_size=16)
        _, h, w = batch.inputs["image_grid_thw"][row].tolist()
        assert (w * 16, h * 16) == expected.size and expected.width % 32 == 0 == expected.height % 32
        tokens = int((batch.inputs["input_ids"][row] == processor.image_token_id).sum())
        assert tokens == (expected.width // 32) * (expected.height // 32)
        text = prompt_text(FAMILY.content(task, bench.by_index[index], bench.name))
        assert costs[index] == tokens + len(text) // 4


def test_vision_reuse_repeats_the_deepstack_features_with_the_image_embeddings(qwen3_vl, bench):
    from ddp_eval.models.qwen2_vl.vision_reuse import VisionReuse

    processor, model = processor_and_model(qwen3_vl)
    rows = (0, 1_000_000, 1, 2_000_000)  # images 0, 0, 1, 0
    plain = prepare_batch(processor, bench, rows, family=FAMILY)
    shared = prepare_batch(processor, bench, rows, reuse_vision=True, family=FAMILY)
    with torch.inference_mode():
        expected = model.model.visual(plain.inputs["pixel_values"], grid_thw=plain.inputs["image_grid_thw"])
        reuse = VisionReuse(model)
        reuse.share(shared.extras.image_map, shared.extras.unique_grid_thw)
        got = model.model.visual(shared.inputs["pixel_values"], grid_thw=shared.inputs["image_grid_thw"])
    assert shared.extras.image_map == [0, 0, 1, 0] and len(got.deepstack_features) == 2
    close = {"atol": 1e-4, "rtol": 1e-4}  # the tower's matrix products see fewer rows: float rounding
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, **close)
    for mine, theirs in zip(got.deepstack_features, expected.deepstack_features):
        torch.testing.assert_close(mine, theirs, **close)


def test_shared_prefix_gives_the_logits_of_the_full_rows(qwen3_vl, bench):
    from ddp_eval.models.qwen2_vl.prefix_decode import PrefixDecoder
    from ddp_eval.models.qwen2_vl.vision_reuse import VisionReuse

    processor, model = processor_and_model(qwen3_vl)
    rows = (0, 1_000_000, 2_000_000, 1, 1_000_001, 5)  # three images, two shared by circular copies
    plain = prepare_batch(processor, bench, rows, family=FAMILY)
    shared = prepare_batch(processor, bench, rows, reuse_vision=True, reuse_prefix=True, family=FAMILY)
    assert shared.inputs["input_ids"].shape[0] == 3  # one prefix per image
    with torch.inference_mode():
        expected = model(**plain.inputs, logits_to_keep=1).logits[:, -1]
        reuse = VisionReuse(model)
        reuse.share(shared.extras.image_map, shared.extras.unique_grid_thw)
        got, _ = PrefixDecoder(model).first_logits(shared.inputs, shared.extras.suffix)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_static_decode_steps_give_the_growing_cache_tokens_across_room_moves(qwen3_vl, bench):
    processor, model = processor_and_model(qwen3_vl)
    _, results = _decode_both_ways(model, processor, bench, [(0, 1_000_000, 1), (2, 3)], 12, room_step=4,
                                   family=FAMILY)
    for got, expected in results:
        assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_decode_steps_replayed_from_cuda_graphs_give_the_plain_tokens(qwen3_vl, bench):
    cfg = model_config(qwen3_vl)
    processor, model = load_processor(cfg, FAMILY), load_model(cfg, torch.device("cuda", 0), FAMILY)
    batches = [(0, 1_000_000, 1), (2, 3, 1_000_002), (4, 5), (0, 1_000_000, 1)]
    graphed, results = _decode_both_ways(model, processor, bench, batches, 8, room_step=4, family=FAMILY)
    for got, expected in results:
        assert torch.equal(got, expected)
    assert all(step.graph is not None for step in graphed.steps.values())


def reference_replies(path, bench, indices, max_new_tokens: int) -> dict[int, str]:
    """Replies as VLMEvalKit's Qwen3-VL wrapper gets them: one row at a time, qwen_vl_utils resizing with
    patch size 16, the processor without resizing, transformers' own greedy `generate`."""
    from qwen_vl_utils import process_vision_info
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    task, replies = get_task("mcq"), {}
    for index in indices:
        content = [{"type": "image", "image": bench.images.open(item["image"]), "min_pixels": SMALL.min_pixels,
                    "max_pixels": SMALL.max_pixels} if item["type"] == "image" else dict(item)
                   for item in FAMILY.content(task, bench.by_index[index], bench.name)]
        messages = [{"role": "user", "content": content}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        images, _ = process_vision_info(messages, image_patch_size=16)
        inputs = processor(text=[text], images=images, do_resize=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        replies[index] = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True,
                                                clean_up_tokenization_spaces=False)[0]
    return replies


def test_batched_predictions_equal_transformers_batch_one_generate(qwen3_vl, bench, make_config, single_process,
                                                                  tmp_path):
    run(make_config("run.batch_size=8", "data.limit=24", model=qwen3_vl), single_process, QUIET)
    batched = predictions(tmp_path / "out")
    assert len(batched) == 24 and len(set(batched.values())) > 3  # real, varied replies
    assert batched == reference_replies(qwen3_vl, bench, sorted(batched), max_new_tokens=6)


@pytest.mark.parametrize("checkpoint", ["qwen3_vl", "qwen3_vl_moe"])
def test_every_speed_switch_on_predicts_as_every_switch_off(checkpoint, request, make_config, single_process,
                                                            tmp_path):
    path = request.getfixturevalue(checkpoint)
    limit = [] if checkpoint == "qwen3_vl" else ["data.limit=24"]  # the MoE: one quick look
    # With prefix reuse each image heads one prefix; vision reuse alone repeats images (and DeepStack features).
    vision_alone = ("model.reuse_prefix=false", *ALL_ON[:1], *ALL_ON[3:])
    for name, switches in (("on", ALL_ON), ("vision", vision_alone), ("off", ALL_OFF)):
        run(make_config(*switches, *limit, "run.batch_size=6", f"run.output_dir={tmp_path / name}", model=path),
            single_process, QUIET)
    on, vision, off = (predictions(tmp_path / name) for name in ("on", "vision", "off"))
    assert len(on) == (78 if not limit else 24) and on == off and vision == off
    assert len(set(on.values())) > 3


def test_choice_logits_pick_the_letter_greedy_generation_starts_with_and_prefix_reuse_keeps_it(
        qwen3_vl, make_config, single_process, tmp_path):
    run(make_config("generation.max_new_tokens=1", f"run.output_dir={tmp_path / 'gen'}", model=qwen3_vl),
        single_process, QUIET)
    for name, reuse in (("on", "true"), ("off", "false")):
        run(make_config("generation.mode=choice_logits", f"model.reuse_prefix={reuse}",
                        f"run.output_dir={tmp_path / name}", model=qwen3_vl), single_process, QUIET)
    generated, chosen = predictions(tmp_path / "gen"), predictions(tmp_path / "on")
    assert chosen == predictions(tmp_path / "off") and set(chosen.values()) <= set("ABCD")
    letter_rows = [i for i, reply in generated.items() if reply in ("A", "B", "C", "D")]
    assert len(letter_rows) > 20
    assert all(chosen[i] == generated[i] for i in letter_rows)


def test_render_shows_qwen3_vl_chat_template_without_a_default_system_turn(qwen3_vl, bench):
    processor = load_processor(model_config(qwen3_vl), FAMILY)
    text = FAMILY.render(processor, FAMILY.content(get_task("mcq"), bench.by_index[0], bench.name))
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hint:")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n") and "system" not in text


# Qwen2.5-VL's run under torchrun is slow-only (~20 s): it shares Qwen2-VL's adapter, which test_torchrun.py runs.
@pytest.mark.parametrize("checkpoint", ["qwen3_vl", pytest.param("tiny_model_25", marks=pytest.mark.slow)])
def test_two_gloo_ranks_predict_every_row_once_as_one_process(checkpoint, request, demo_tsv, make_config,
                                                              single_process, tmp_path):
    """Qwen3-VL and Qwen2.5-VL under real torchrun (Qwen2-VL: tests/test_torchrun.py)."""
    path = request.getfixturevalue(checkpoint)
    overrides = ["data.limit=24", "run.batch_size=4"]
    run(make_config(*overrides, f"run.output_dir={tmp_path / 'one'}", model=path), single_process, QUIET)
    sets = [f"model.path={path}", f"data.path={demo_tsv}", "model.dtype=float32", "generation.max_new_tokens=6",
            "run.num_workers=0", f"run.output_dir={tmp_path / 'two'}", *SMALL_PIXELS, *overrides]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddp_eval",
           "--quiet", *[x for s in sets for x in ("--set", s)]]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = shard_records(tmp_path / "two")
    assert sorted(r["index"] for r in records) == sorted(predictions(tmp_path / "one"))  # each row once
    assert {r["rank"] for r in records} == {0, 1}
    assert predictions(tmp_path / "two") == predictions(tmp_path / "one")
