"""The Qwen2-VL family on tiny offline checkpoints: the real loading path (`from_pretrained` on a local
directory), its inputs, and every speed feature against the plain path."""

import json
import threading

import pandas as pd
import pytest
import torch

from ddp_eval.config import DataConfig, ModelConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import Pixels, Speed
from ddp_eval.models.loading import check_inputs_device, check_model_device
from ddp_eval.models.qwen2_vl import FAMILY
from ddp_eval.run.runner import Options, run
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.registry import get_task

QUIET = Options(show_progress=False)
SMALL = Pixels(3136, 50176)


def load_processor(cfg: ModelConfig, family=FAMILY):
    return family.load_processor(cfg, Pixels(cfg.min_pixels or SMALL.min_pixels, cfg.max_pixels or SMALL.max_pixels))


def load_model(cfg: ModelConfig, device: torch.device, family=FAMILY):
    """The replica with the model-side switches of `cfg` (vision attention, key/value heads, compile)."""
    speed = Speed(vision_attention=cfg.vision_attention, kv_head_attention=cfg.kv_head_attention,
                  compile_vision=cfg.compile_vision)
    return family.load_model(cfg, device, speed)


def prepare_batch(processor, bench, rows, reuse_vision=False, reuse_prefix=False, family=FAMILY):
    """The family's preprocessing of `rows` into one batch, with the given reuse switches."""
    speed = Speed(reuse_vision=reuse_vision, reuse_prefix=reuse_prefix)
    return family.preprocessor(processor, bench, get_task("mcq"), speed, SMALL)(0, tuple(rows))


def predictions(out_dir):
    table = pd.read_csv(out_dir / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"], table["prediction"]))


def test_replica_loads_whole_on_the_requested_device(tiny_model):
    model = load_model(ModelConfig(path=str(tiny_model), dtype="float32"), torch.device("cpu"))
    check_model_device(model, torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_stray_tensor_is_named_with_both_devices(tiny_model):
    model = load_model(ModelConfig(path=str(tiny_model), dtype="float32"), torch.device("cpu"))
    with pytest.raises(DdpEvalError) as err:
        check_model_device(model, torch.device("meta"))
    assert "is on cpu, expected meta" in str(err.value)
    with pytest.raises(DdpEvalError, match="input tensor pixel_values is on cpu, expected meta"):
        check_inputs_device({"pixel_values": torch.zeros(1)}, torch.device("meta"))


def test_processor_keeps_the_configured_pixel_bounds(tiny_model):
    processor = load_processor(ModelConfig(path=str(tiny_model), min_pixels=3136, max_pixels=50176))
    assert processor.image_processor.size["shortest_edge"] == 3136
    assert processor.image_processor.size["longest_edge"] == 50176
    assert processor.tokenizer.padding_side == "left"


def test_missing_model_dir_and_dir_without_config_are_named(tmp_path):
    with pytest.raises(DdpEvalError, match="no model directory"):
        load_processor(ModelConfig(path=str(tmp_path / "absent")))
    with pytest.raises(DdpEvalError, match="no config.json"):
        load_processor(ModelConfig(path=str(tmp_path)))


def test_batched_predictions_equal_batch_one_in_float32(make_config, single_process, tmp_path):
    run(make_config("run.batch_size=8", f"run.output_dir={tmp_path / 'b8'}"), single_process, QUIET)
    run(make_config("run.batch_size=1", f"run.output_dir={tmp_path / 'b1'}"), single_process, QUIET)
    assert predictions(tmp_path / "b8") == predictions(tmp_path / "b1")


def test_qwen2_5_vl_checkpoint_runs_with_no_code_change(make_config, single_process, tiny_model_25, tmp_path):
    metrics = run(make_config("data.limit=12", model=tiny_model_25), single_process, QUIET)
    assert metrics["rows"] == 12
    assert len(predictions(tmp_path / "out")) == 12


def test_rerun_resumes_and_predicts_nothing_twice(make_config, single_process, tmp_path):
    cfg = make_config("data.limit=20")
    run(cfg, single_process, QUIET)
    shard = next((tmp_path / "out" / "shards").glob("*.jsonl"))
    lines = shard.read_text().splitlines()
    # header + 7 whole rows + the 8th cut mid-line: as if killed while writing
    shard.write_text("\n".join(lines[:8]) + "\n" + lines[8][:15])
    run(cfg, single_process, QUIET)
    indices = [json.loads(x)["index"] for x in shard.read_text().splitlines()[1:]]
    assert len(indices) == 20 and len(set(indices)) == 20


def test_shared_image_inputs_match_the_processors_own(tiny_model, demo_tsv):

    processor = load_processor(ModelConfig(path=str(tiny_model), min_pixels=3136, max_pixels=50176))
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    rows = (0, 1_000_000, 2_000_000, 1, 1_000_001)  # two images, five rows
    plain = prepare_batch(processor, bench, rows, reuse_vision=False)
    shared = prepare_batch(processor, bench, rows, reuse_vision=True)
    assert shared.extras.image_map == [0, 0, 0, 1, 1]
    for key in plain.inputs:
        if key == "pixel_values":
            continue
        assert torch.equal(plain.inputs[key], shared.inputs[key]), key
    per_image = int(plain.inputs["image_grid_thw"][0].prod())
    assert shared.inputs["pixel_values"].shape[0] < plain.inputs["pixel_values"].shape[0]
    assert torch.equal(shared.inputs["pixel_values"][:per_image], plain.inputs["pixel_values"][:per_image])


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_model_25"])
def test_predictions_with_vision_reuse_equal_without_in_float32(model_fixture, request, make_config,
                                                                 single_process, tmp_path):
    model = request.getfixturevalue(model_fixture)
    run(make_config("model.reuse_vision=true", f"run.output_dir={tmp_path / 'on'}", model=model), single_process,
        QUIET)
    run(make_config("model.reuse_vision=false", f"run.output_dir={tmp_path / 'off'}", model=model), single_process,
        QUIET)
    on, off = predictions(tmp_path / "on"), predictions(tmp_path / "off")
    assert len(on) == 78 and on == off


def test_vision_tower_encodes_each_distinct_image_once(tiny_model, demo_tsv):
    from ddp_eval.backends.hf.backend import HFBackend, generation_kwargs

    cfg = ModelConfig(path=str(tiny_model), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor = load_processor(cfg)
    model = load_model(cfg, torch.device("cpu"))
    from ddp_eval.config import Config

    fast = FAMILY.fast_path(model, Speed(reuse_vision=True))
    backend = HFBackend(model, processor, torch.device("cpu"), generation_kwargs(Config()) | {"max_new_tokens": 2},
                        fast=fast)
    seen = []
    inner = fast.vision_reuse.tower_forward
    fast.vision_reuse.tower_forward = lambda x, **kw: seen.append(x.shape[0]) or inner(x, **kw)
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    batch = prepare_batch(processor, bench, (0, 1_000_000, 2_000_000, 3_000_000), reuse_vision=True)
    assert len(backend.replies(batch)) == 4
    assert seen == [int(batch.extras.unique_grid_thw.prod(-1).sum())]  # one image's patches, not four


def test_choice_logits_picks_the_letter_greedy_generation_would_start_with(make_config, single_process, tmp_path):
    run(make_config("generation.max_new_tokens=1", f"run.output_dir={tmp_path / 'gen'}"), single_process, QUIET)
    run(make_config("generation.mode=choice_logits", f"run.output_dir={tmp_path / 'cl'}"), single_process, QUIET)
    generated, chosen = predictions(tmp_path / "gen"), predictions(tmp_path / "cl")
    assert set(chosen.values()) <= set("ABCD")
    # Where greedy decoding's first token is an option letter it is the argmax over the whole
    # vocabulary, so it must also be the argmax over the options.
    letter_rows = [i for i, reply in generated.items() if reply in ("A", "B", "C", "D")]
    assert len(letter_rows) > 20
    assert all(chosen[i] == generated[i] for i in letter_rows)


def test_shared_prefix_gives_the_logits_of_the_full_rows(tiny_model, demo_tsv):
    from ddp_eval.models.qwen2_vl.prefix_decode import PrefixDecoder
    from ddp_eval.models.qwen2_vl.vision_reuse import VisionReuse

    cfg = ModelConfig(path=str(tiny_model), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor, model = load_processor(cfg), load_model(cfg, torch.device("cpu"))
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    rows = (0, 1_000_000, 2_000_000, 1, 1_000_001, 5)  # three images, two shared by circular copies
    plain = prepare_batch(processor, bench, rows)
    shared = prepare_batch(processor, bench, rows, reuse_vision=True, reuse_prefix=True)
    assert shared.inputs["input_ids"].shape[0] == 3  # one prefix per image
    assert shared.extras.suffix.input_ids.shape[1] < plain.inputs["input_ids"].shape[1] // 2  # options and after
    with torch.inference_mode():
        expected = model(**plain.inputs, logits_to_keep=1).logits[:, -1]
        reuse = VisionReuse(model)
        reuse.share(shared.extras.image_map, shared.extras.unique_grid_thw)
        got, _ = PrefixDecoder(model).first_logits(shared.inputs, shared.extras.suffix)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_second_thread_predicts_as_alone_while_the_first_holds_a_batch_mid_call(tiny_model, demo_tsv):
    """The parity rows' thread (run/parity.py) beside the loop's: the loop's batch stays shared with the vision
    tower while the other thread encodes its own image, and the loop's prefill sets rope_deltas between the
    other thread's prefill and its decode steps (transformers 5.x reads it only at a prefill; earlier
    versions read it at every step). The other thread's replies are those of its row alone."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from ddp_eval.models.common.thread_state import share_with_threads
    from ddp_eval.models.qwen2_vl.vision_reuse import VisionReuse

    cfg = ModelConfig(path=str(tiny_model), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor, model = load_processor(cfg), load_model(cfg, torch.device("cpu"))
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    row = prepare_batch(processor, bench, (7,))
    batch = prepare_batch(processor, bench, (0, 1_000_000, 1, 5), reuse_vision=True)  # 3 images for 4 rows
    settings = {"max_new_tokens": 4, "do_sample": False}
    with torch.inference_mode():
        alone = model.generate(**row.inputs, **settings)
    assert share_with_threads(model, FAMILY.thread_state)
    reuse = VisionReuse(model)
    reuse.share(batch.extras.image_map, batch.extras.unique_grid_thw)  # this thread's batch, held throughout
    prefilled, resumed = threading.Event(), threading.Event()

    class PauseAfterPrefill(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if not prefilled.is_set():
                prefilled.set()
                assert resumed.wait(60)
            return scores

    got: dict = {}

    def other_thread():
        try:
            with torch.inference_mode():
                got["ids"] = model.generate(**row.inputs, **settings,
                                            logits_processor=LogitsProcessorList([PauseAfterPrefill()]))
        except Exception as err:  # e.g. the loop's image map applied to this row's one image
            got["error"] = err

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert prefilled.wait(60)
    with torch.inference_mode():
        model(**batch.inputs, logits_to_keep=1)  # this thread's prefill, while the other is between steps
    resumed.set()
    thread.join(60)
    assert "ids" in got, got.get("error")
    assert torch.equal(got["ids"], alone)
    assert model.model.rope_deltas.shape[0] == 4  # this thread's own, from its batch of 4 rows


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_model_25"])
def test_predictions_with_prefix_reuse_equal_without_in_float32(model_fixture, request, make_config,
                                                                 single_process, tmp_path):
    model = request.getfixturevalue(model_fixture)
    for name, reuse in (("on", "true"), ("off", "false")):
        run(make_config(f"model.reuse_prefix={reuse}", "run.batch_size=6", f"run.output_dir={tmp_path / name}",
                        model=model), single_process, QUIET)
    on, off = predictions(tmp_path / "on"), predictions(tmp_path / "off")
    assert len(on) == 78 and on == off
    assert len(set(on.values())) > 3  # real, varied replies, not one constant


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_model_25"])
def test_predictions_with_static_decode_steps_equal_the_growing_cache_in_float32(model_fixture, request, make_config,
                                                                                 single_process, tmp_path):
    model = request.getfixturevalue(model_fixture)
    for name, graphs in (("on", "true"), ("off", "false")):
        run(make_config("model.reuse_prefix=true", f"model.decode_graphs={graphs}", "run.batch_size=6",
                        f"run.output_dir={tmp_path / name}", model=model), single_process, QUIET)
    on, off = predictions(tmp_path / "on"), predictions(tmp_path / "off")
    assert len(on) == 78 and on == off
    assert len(set(on.values())) > 3


def _decode_both_ways(model, processor, bench, batches, max_new_tokens, room_step=None, family=FAMILY):
    """Token ids per batch from the plain prefix decoder and from the static-step one."""
    from ddp_eval.models.qwen2_vl.prefix_decode import PrefixDecoder
    from ddp_eval.models.qwen2_vl.vision_reuse import VisionReuse

    device = next(model.parameters()).device
    plain, static = PrefixDecoder(model), PrefixDecoder(model, decode_graphs=True)
    static.graphed.room_step = room_step or static.graphed.room_step
    reuse = VisionReuse(model)
    results = []
    for rows in batches:
        batch = prepare_batch(processor, bench, rows, reuse_vision=True, reuse_prefix=True, family=family)
        inputs, suffix = batch.inputs.to(device), batch.extras.suffix.to(device)
        with torch.inference_mode():
            reuse.share(batch.extras.image_map, batch.extras.unique_grid_thw)
            expected = plain.generate(inputs, suffix, max_new_tokens)
            reuse.share(batch.extras.image_map, batch.extras.unique_grid_thw)
            got = static.generate(inputs, suffix, max_new_tokens)
        results.append((got.cpu(), expected.cpu()))
    return static.graphed, results


def test_static_decode_steps_are_shared_by_batches_of_one_shape(tiny_model, demo_tsv):

    cfg = ModelConfig(path=str(tiny_model), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor, model = load_processor(cfg), load_model(cfg, torch.device("cpu"))
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    # two batches of 3 rows with prompts of similar length, then one of 2 rows: two shapes
    graphed, results = _decode_both_ways(model, processor, bench, [(0, 1_000_000, 1), (2, 3, 1_000_002), (4, 5)], 6)
    for got, expected in results:
        assert torch.equal(got, expected)
    assert sorted(rows for rows, _ in graphed.steps) == [2, 3]
    assert all(room % 256 == 0 for _, room in graphed.steps)


def test_static_decode_moves_to_more_room_when_replies_outgrow_it(tiny_model, demo_tsv, monkeypatch):
    from ddp_eval.models.qwen2_vl.decode_graphs import DecodeStep

    cfg = ModelConfig(path=str(tiny_model), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor, model = load_processor(cfg), load_model(cfg, torch.device("cpu"))
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    moves = []
    take_over = DecodeStep.take_over
    monkeypatch.setattr(DecodeStep, "take_over",
                        lambda self, smaller: (moves.append(smaller.room), take_over(self, smaller)))
    # room for 4 new tokens at a time: 20 new tokens need several moves
    _, results = _decode_both_ways(model, processor, bench, [(0, 1_000_000, 1)], 20, room_step=4)
    got, expected = results[0]
    assert expected.shape[1] > 12  # the rows kept decoding past three moves
    assert torch.equal(got, expected)
    assert len(moves) >= 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_decode_steps_replayed_from_cuda_graphs_give_the_plain_tokens(tiny_model, demo_tsv):

    cfg = ModelConfig(path=str(tiny_model), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor, model = load_processor(cfg), load_model(cfg, torch.device("cuda", 0))
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    batches = [(0, 1_000_000, 1), (2, 3, 1_000_002), (4, 5), (0, 1_000_000, 1)]
    graphed, results = _decode_both_ways(model, processor, bench, batches, 8, room_step=4)  # with moves
    for got, expected in results:
        assert torch.equal(got, expected)
    assert all(step.graph is not None for step in graphed.steps.values())


def test_choice_logits_with_prefix_reuse_choose_as_without(make_config, single_process, tmp_path):
    for name, reuse in (("on", "true"), ("off", "false")):
        run(make_config("generation.mode=choice_logits", f"model.reuse_prefix={reuse}",
                        f"run.output_dir={tmp_path / name}"), single_process, QUIET)
    assert predictions(tmp_path / "on") == predictions(tmp_path / "off")


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_model_25"])
def test_packed_vision_attention_gives_the_per_image_results(model_fixture, request, tiny_model, demo_tsv):
    from ddp_eval.models.qwen2_vl.vision_reuse import find_vision_tower

    path = request.getfixturevalue(model_fixture)
    cfg = ModelConfig(path=str(path), dtype="float32", min_pixels=3136, max_pixels=50176)
    processor = load_processor(cfg)
    per_image = load_model(cfg, torch.device("cpu"))
    packed = load_model(ModelConfig(**{**cfg.__dict__, "vision_attention": "varlen"}), torch.device("cpu"))
    assert find_vision_tower(packed).config._attn_implementation == "ddp_eval_flash_varlen"
    # The default (auto) packs only where PyTorch has the kernel: CUDA in bf16/fp16, not this CPU.
    assert find_vision_tower(per_image).config._attn_implementation == "sdpa"
    assert per_image.config.text_config._attn_implementation == packed.config.text_config._attn_implementation
    bench = load_benchmark(DataConfig(path=str(demo_tsv)))
    batch = prepare_batch(processor, bench, (0, 1, 2, 7))  # four images of different sizes
    with torch.inference_mode():
        expected, got = (m(**batch.inputs, logits_to_keep=1).logits for m in (per_image, packed))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_packed_attention_matches_sdpa_per_sequence_and_for_one_sequence_callers():
    from ddp_eval.models.common.vision_attention import packed_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 10, 8) for _ in range(3))
    bounds = torch.tensor([0, 3, 10])
    got, _ = packed_attention(None, q, k, v, cu_seq_lens_q=bounds, cu_seq_lens_k=bounds, max_length_q=7,
                              max_length_k=7)
    parts = [torch.nn.functional.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b])
             for a, b in ((0, 3), (3, 10))]
    torch.testing.assert_close(got, torch.cat(parts, dim=2).transpose(1, 2))
    whole, _ = packed_attention(None, q, k, v)  # a caller that loops over images itself
    torch.testing.assert_close(whole, torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2))


def test_a_model_that_fails_to_load_stops_the_started_loader_workers(make_config, single_process, tiny_model,
                                                                     tmp_path):
    import multiprocessing
    import shutil

    broken = tmp_path / "no_weights"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()  # the processor loads, the model does not
    kept = None
    try:
        run(make_config(f"model.path={broken}", "run.num_workers=2"), single_process, QUIET)
    except DdpEvalError as err:
        kept = err  # a caller that keeps the error keeps its traceback's frames alive
    left = multiprocessing.active_children()
    message, kept = str(kept), None  # dropped before asserting, so that a failure does not leave workers behind
    assert f"cannot load the model from {broken}" in message
    assert left == []


@pytest.mark.parametrize("kernel", ["fa4", "cudnn", "triton"])
def test_a_cuda_only_vision_attention_on_cpu_is_refused_with_the_key_to_change(tiny_model, kernel):
    cfg = ModelConfig(path=str(tiny_model), dtype="float32", vision_attention=kernel)
    with pytest.raises(DdpEvalError, match=f"model.vision_attention={kernel} runs CUDA kernels.*cpu"):
        load_model(cfg, torch.device("cpu"))


def test_fa4_where_it_cannot_run_names_what_is_missing(monkeypatch):
    import sys

    from ddp_eval.models.common.vision_attention import fa4_call

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # as if flash-attn-4 were not installed
    with pytest.raises(DdpEvalError, match="fa4: the flash-attn-4 package is not installed"):
        fa4_call(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(DdpEvalError, match=r"capability 9.x, 10.x\), not 8.0; use model.vision_attention=varlen"):
        fa4_call(torch.device("cuda", 0))


def test_fa4_op_tells_compiled_code_its_output_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    import ddp_eval.models.common.vision_attention  # noqa: F401  (registers the op)

    with FakeTensorMode():
        q, k = torch.empty(10, 4, 8, dtype=torch.bfloat16), torch.empty(12, 4, 8, dtype=torch.bfloat16)
        v = torch.empty(12, 4, 6, dtype=torch.bfloat16)
        cu = torch.tensor([0, 3, 10], dtype=torch.int32)
        out = torch.ops.ddp_eval.fa4_varlen(q, k, v, cu, cu, 7, 9, 0.5)
    assert out.shape == (10, 4, 6) and out.dtype == torch.bfloat16


def test_the_triton_attention_splits_a_head_dim_into_powers_of_two_or_refuses_it():
    from ddp_eval.models.common.triton_attention import split_head_dim

    assert [split_head_dim(d) for d in (80, 64, 96, 128, 48)] == [(64, 16), (64, 0), (64, 32), (128, 0), (32, 16)]
    assert [split_head_dim(d) for d in (72, 112, 8, 24)] == [(64, 16), (64, 64), (16, 0), (16, 16)]  # padded
    assert split_head_dim(80, least=32) == (64, 32) and split_head_dim(257) is None


def test_the_triton_attention_equals_float32_attention_within_each_sequence_in_tritons_interpreter():
    """Sequences shorter than a tile, of exactly one, and of several with a remainder; head dims split in
    two tiles (80 = 64 + 16 with the V tiles overlapping, or 64 + 32 with the last 16 columns zero), in one
    padded tile (80 in 128; 8 in 16) or not (64); pointer loads, K transposed, and TMA descriptors; v a
    strided view of a qkv tensor, as the tower passes it; values past a sequence or a head do not leak in.
    Triton's CPU interpreter, float16 (its bfloat16 is truncated; bench/attention.py checks the GPU)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    script = """
import torch
import torch.nn.functional as F
from ddp_eval.models.common.triton_attention import attend
torch.manual_seed(0)
for dim in (80, 64, 72, 8):
    counts = [37, 32, 70, 1]
    qkv = (torch.randn(sum(counts), 3, 3, dim) * 2).half()
    q, k, v = qkv[:, 0].contiguous(), qkv[:, 1].contiguous(), qkv[:, 2]
    cu = torch.tensor([0, *counts]).cumsum(0).to(torch.int32)
    for config in ((32, 16, 4, 1, False, False, 16), (32, 16, 4, 1, False, True, 32), (32, 16, 4, 1, True, False, 16),
                   (32, 16, 4, 1, True, False, 32), (32, 32, 4, 1, False, False, 0)):
        got = attend(q, k, v, cu, max(counts), 0.3, config=config)
        b = cu.tolist()
        want = torch.cat([F.scaled_dot_product_attention(*(t[x:y].float().transpose(0, 1) for t in (q, k, v)),
                                                         scale=0.3).transpose(0, 1) for x, y in zip(b[:-1], b[1:])])
        assert got.dtype == torch.float16 and got.shape == want.shape, (got.dtype, got.shape)
        err = (got.float() - want).abs().max().item()
        assert err < 4e-3, (dim, config, err)  # float16 rounding of p and of the output; a wrong mask or tile is O(1)
# what a tile reads past its sequence (the next one's rows) or its head (the next head's columns) adds nothing,
# not even a NaN: sequence 1 is 19 rows (a partial key block), head 0's second tile reaches into head 1
qkv = torch.randn(40, 3, 2, 72).half()
q, k, v = qkv[:, 0].contiguous(), qkv[:, 1].contiguous(), qkv[:, 2].clone()
k[:, 1, :8], v[19:] = float("inf"), float("nan")
cu = torch.tensor([0, 19, 40], dtype=torch.int32)
for config in ((16, 16, 4, 1, True, False, 16), (16, 16, 4, 1, False, False, 16)):
    out = attend(q, k, v, cu, 21, 0.3, config=config)
    assert not out[:19, 0].isnan().any(), config  # sequence 1's head 0 sees neither the NaNs nor the infs
from ddp_eval.models.common.triton_attention import build_ahead  # CONFIG's tiling, as the thread builds it
build_ahead(torch.device("cpu"), torch.float16, 1, 80, fallback=False)
print("equal")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "equal" in done.stdout, done.stderr[-2000:]


def test_the_triton_attention_leaves_windows_and_cross_attention_to_varlen_attn(monkeypatch):
    from ddp_eval.models.common import triton_attention, vision_attention

    calls = []
    monkeypatch.setattr(vision_attention, "varlen_call", lambda: (lambda *a: calls.append(a[5:]) or a[0].clone(), True))
    monkeypatch.setattr(triton_attention, "attend", lambda *a: pytest.fail("the Triton kernel was called"))
    q = torch.zeros(300, 2, 80, dtype=torch.float16)
    cu, other = torch.tensor([0, 64, 300], dtype=torch.int32), torch.tensor([0, 64, 300], dtype=torch.int32)
    triton_attention.triton_varlen(q, q, q, cu, cu, 64, 64, None)  # short sequences: windowed layers
    triton_attention.triton_varlen(q, q, q, cu, other, 236, 236, None)  # separate boundaries
    assert calls == [(64, 64, None), (236, 236, None)]


def test_auto_runs_the_triton_attention_on_hopper_only(monkeypatch):
    from ddp_eval.models.common import vision_attention

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(vision_attention, "triton_problem", lambda: None)
    for capability, kernel in (((9, 0), "triton"), ((8, 0), "varlen"), ((10, 0), "varlen"), ((12, 0), "varlen")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert vision_attention.auto_kernel(cuda, 80) == (kernel, None), capability
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert vision_attention.auto_kernel(cuda, 64) == ("triton", None)  # Qwen3-VL-2B's
    kernel, why = vision_attention.auto_kernel(cuda, 72)  # a head dim not measured on a GPU: said why
    assert kernel == "varlen" and "measured at head dims 64, 80, not this tower's 72" in why
    assert vision_attention.auto_kernel(torch.device("cpu"), 80) == ("varlen", None)
    monkeypatch.setattr(vision_attention, "triton_problem", lambda: "the triton package is not installed")
    assert vision_attention.auto_kernel(cuda, 80) == ("varlen", "the triton package is not installed")
    monkeypatch.setattr(torch.version, "hip", "6.2")  # an AMD GPU of capability 9.x is no Hopper
    assert vision_attention.auto_kernel(cuda, 80) == ("varlen", None)


def test_auto_takes_the_triton_op_that_falls_back_and_a_name_the_one_that_does_not(monkeypatch):
    from torch import nn

    from ddp_eval.models.common import triton_attention, vision_attention

    pytest.importorskip("torch.nn.attention.varlen")
    attn = nn.Linear(4, 4, dtype=torch.bfloat16)
    attn.head_dim, attn.scaling = 80, 80 ** -0.5
    block = nn.Module()
    block.attn = attn
    visual = nn.Module()
    visual.blocks = nn.ModuleList([block])
    monkeypatch.setattr(vision_attention, "triton_problem", lambda: None)
    assert vision_attention.triton_call(visual, fallback=True) is triton_attention.triton_varlen_auto
    assert vision_attention.triton_call(visual) is triton_attention.triton_varlen


def test_auto_falls_back_to_varlen_attn_where_triton_cannot_build_its_kernel(monkeypatch, caplog):
    from ddp_eval.models.common import triton_attention, vision_attention

    class CompilationError(Exception):  # as triton.compiler.errors raises it
        __module__ = "triton.compiler.errors"

    calls, tried = [], []

    def broken(*args):
        tried.append(args[4])
        raise CompilationError("at 12:4: out of shared memory")

    monkeypatch.setattr(vision_attention, "varlen_call", lambda: (lambda *a: calls.append(a[5]) or a[0].clone(), True))
    monkeypatch.setattr(triton_attention, "attend", broken)
    monkeypatch.setattr(triton_attention, "FAILED", [])
    q = torch.ones(600, 2, 80, dtype=torch.float16)
    cu = torch.tensor([0, 300, 600], dtype=torch.int32)
    with pytest.raises(CompilationError):  # asked for by name: the error, not another kernel
        triton_attention.triton_varlen(q, q, q, cu, cu, 300, 300, None)
    with caplog.at_level("WARNING", logger="ddp_eval"):
        first = triton_attention.triton_varlen_auto(q, q, q, cu, cu, 300, 300, None)
        second = triton_attention.triton_varlen_auto(q, q, q, cu, cu, 290, 290, None)
    assert torch.equal(first, q) and torch.equal(second, q)
    assert tried == [300, 300] and calls == [300, 290]  # built once more for auto, then never tried again
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "CompilationError: at 12:4: out of shared memory" in warned[0]
    assert "varlen_attn serves the rest of the run" in warned[0]

    def faulted(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(triton_attention, "attend", faulted)
    monkeypatch.setattr(triton_attention, "FAILED", [])
    with pytest.raises(RuntimeError, match="illegal memory access"):  # not Triton's: nothing to fall back on
        triton_attention.triton_varlen_auto(q, q, q, cu, cu, 300, 300, None)


def test_kernels_ahead_are_those_load_model_switches_on_at_the_towers_shapes(tiny_model, tiny_model_25, monkeypatch,
                                                                             tmp_path):
    import shutil

    from ddp_eval.models.common import fused_quick_gelu, fused_rotary, triton_attention, vision_attention
    from ddp_eval.models.registry import family_for

    def shown(calls):
        return [(c.func, c.args, c.keywords) for c in calls]

    cuda, bf16 = torch.device("cuda", 1), torch.bfloat16
    cfg = ModelConfig(path=str(tiny_model), dtype="bfloat16")  # vision tower: 2 heads of 16, MLP 64 wide
    on = Speed(vision_attention="auto", fused_rotary=True, fused_activation=True)
    monkeypatch.setattr(vision_attention, "auto_kernel", lambda device, head_dim: ("triton", None))
    assert shown(FAMILY.kernels_ahead(cfg, cuda, on)) == [(fused_rotary.build_ahead, (cuda, bf16, 2, 16), {}),
                                                          (fused_quick_gelu.build_ahead, (cuda, bf16, 64), {}),
                                                          (triton_attention.build_ahead, (cuda, bf16, 2, 16),
                                                           {"fallback": True})]
    assert shown(FAMILY.kernels_ahead(cfg, cuda, Speed(vision_attention="triton"))) == [
        (triton_attention.build_ahead, (cuda, bf16, 2, 16), {"fallback": False})]
    # Qwen2-VL's own config.json leaves the tower's activation out (transformers' default: QuickGELU)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    config = json.loads((bare / "config.json").read_text())
    del config["vision_config"]["hidden_act"]
    (bare / "config.json").write_text(json.dumps(config))
    assert fused_quick_gelu.build_ahead in [c.func for c in FAMILY.kernels_ahead(
        ModelConfig(path=str(bare), dtype="bfloat16"), cuda, on)]
    monkeypatch.setattr(vision_attention, "auto_kernel", lambda device, head_dim: ("varlen", None))
    assert [c.func for c in FAMILY.kernels_ahead(cfg, cuda, on)] == [fused_rotary.build_ahead,
                                                                     fused_quick_gelu.build_ahead]
    qwen25 = ModelConfig(path=str(tiny_model_25), dtype="bfloat16")  # its MLP is SiLU: no QuickGELU kernel
    assert [c.func for c in family_for(tiny_model_25, None).kernels_ahead(qwen25, cuda, on)] == [
        fused_rotary.build_ahead]
    assert FAMILY.kernels_ahead(cfg, torch.device("cpu"), on) == []
    assert FAMILY.kernels_ahead(ModelConfig(path=str(tiny_model), dtype="float32"), cuda, on) == []


def test_kernels_compiled_ahead_run_in_a_thread_and_leave_a_failure_to_the_batch(caplog):
    from ddp_eval.models.loading import build_ahead

    ran = []

    def broken():
        raise RuntimeError("ptxas not found")

    def unreadable():
        raise OSError("config.json: permission denied")

    with caplog.at_level("DEBUG", logger="ddp_eval"):
        calls = [lambda: ran.append(threading.current_thread().name), broken, lambda: ran.append(2)]
        thread = build_ahead(lambda: calls, torch.device("cpu"))
        thread.join(30)
        build_ahead(unreadable, torch.device("cpu")).join(30)
    assert ran == ["ddp_eval-kernels-ahead"] and thread.daemon
    debug = [r.getMessage() for r in caplog.records]
    assert any("stopped on RuntimeError: ptxas not found" in m for m in debug)
    assert any("stopped on OSError: config.json: permission denied" in m for m in debug)


def test_kv_head_attention_equals_sdpa_with_copied_heads():
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ddp_eval.models.common.kv_head_attention import kv_head_attention

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    key, value = torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    for length in (1, 4):  # a decode step, and a row's own tokens after a shared prefix
        query = torch.randn(2, 6, length, 8)
        mask = torch.ones(2, 1, length, 9, dtype=torch.bool).tril(diagonal=9 - length)
        mask[1, :, :, :3] = False  # the second row is left-padded
        got, _ = kv_head_attention(module, query, key, value, mask, scaling=0.3)
        expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
        assert got.shape == expected.shape == (2, length, 6, 8)
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("reuse_prefix", ["true", "false"])
def test_predictions_with_kv_head_attention_equal_without(reuse_prefix, make_config, single_process, tmp_path):
    from ddp_eval.models.common.kv_head_attention import NAME

    cfg = ModelConfig(path=str(make_config().model.path), dtype="float32")
    assert load_model(cfg, torch.device("cpu")).config.text_config._attn_implementation == NAME
    for name, on in (("on", "true"), ("off", "false")):
        run(make_config(f"model.kv_head_attention={on}", f"model.reuse_prefix={reuse_prefix}", "run.batch_size=6",
                        "data.limit=36", f"run.output_dir={tmp_path / name}"), single_process, QUIET)
    on, off = predictions(tmp_path / "on"), predictions(tmp_path / "off")
    assert len(on) == 36 and on == off


def test_lagged_stop_check_stops_one_step_after_all_rows_finish():
    from ddp_eval.models.qwen2_vl.prefix_decode import AllDone

    steps = [torch.tensor([False, False]), torch.tensor([True, False]), torch.tensor([True, True]),
             torch.tensor([True, True])]
    assert [AllDone(lagged=False).after(d) for d in steps[:3]] == [False, False, True]
    lagged = AllDone(lagged=True)
    assert [lagged.after(d) for d in steps] == [False, False, False, True]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"])
def test_the_fused_rotary_kernel_reproduces_this_transformers_function_and_leaves_the_cpu_to_it(family):
    import importlib
    import inspect

    from ddp_eval.models.common.fused_rotary import EXPECTED, fused_version, takes

    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    original = module.apply_rotary_pos_emb_vision
    source = inspect.getsource(getattr(original, "original", original))
    assert all(line in source for line in EXPECTED)  # else use_fused_rotary keeps transformers' own
    q, k = torch.randn(2, 7, 3, 8, dtype=torch.bfloat16).unbind(0)
    cos, sin = torch.randn(2, 7, 8).unbind(0)
    assert not takes(q, k, cos, sin)  # CPU tensors: transformers' function, unchanged
    for got, want in zip(fused_version(original)(q, k, cos, sin), original(q, k, cos, sin)):
        assert torch.equal(got, want)


def test_the_fused_rotary_is_not_installed_on_a_cpu_replica(tiny_model):
    import sys

    from ddp_eval.models.common.fused_rotary import use_fused_rotary
    from ddp_eval.models.qwen2_vl.vision_reuse import find_vision_tower

    model = load_model(ModelConfig(path=str(tiny_model), dtype="float32"), torch.device("cpu"))
    visual = find_vision_tower(model)
    module = sys.modules[type(visual).__module__]
    before = module.apply_rotary_pos_emb_vision
    assert use_fused_rotary(visual) == "the replica is not on a CUDA device"
    assert module.apply_rotary_pos_emb_vision is before


def test_the_fused_quick_gelu_reproduces_this_transformers_activation_and_leaves_the_cpu_to_it():
    import inspect

    from transformers.activations import QuickGELUActivation

    from ddp_eval.models.common.fused_quick_gelu import EXPECTED, FusedQuickGELU, takes

    assert EXPECTED in inspect.getsource(QuickGELUActivation.forward)  # else use_fused_quick_gelu keeps it
    x = torch.randn(7, 16, dtype=torch.bfloat16)
    assert not takes(x)  # a CPU tensor: transformers' formula, unchanged
    assert torch.equal(FusedQuickGELU(QuickGELUActivation())(x), QuickGELUActivation()(x))


def test_the_fused_quick_gelu_is_installed_only_on_a_cuda_tower_that_uses_it(tiny_model, tiny_model_25):
    from ddp_eval.models.common.fused_quick_gelu import use_fused_quick_gelu
    from ddp_eval.models.qwen2_vl.vision_reuse import find_vision_tower

    visual = find_vision_tower(load_model(ModelConfig(path=str(tiny_model), dtype="float32"), torch.device("cpu")))
    acts = [type(block.mlp.act) for block in visual.blocks]
    assert use_fused_quick_gelu(visual) == "the replica is not on a CUDA device"
    assert [type(block.mlp.act) for block in visual.blocks] == acts
    qwen25 = find_vision_tower(load_model(ModelConfig(path=str(tiny_model_25), dtype="float32"), torch.device("cpu")))
    assert use_fused_quick_gelu(qwen25) == f"{type(qwen25).__name__}'s MLPs do not use QuickGELU"  # SiLU, gated


def test_the_fused_kernels_compute_transformers_values_in_tritons_interpreter():
    """The rotary and QuickGELU kernels' indexing, masking and roundings, run by Triton's CPU interpreter in
    float16, in one process (its numpy emulation rounds bfloat16 by truncation, so bfloat16's equality and
    CUDA's exp are checked on the GPU: bench/rotary.py, bench/quick_gelu.py)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    script = """
import torch
from ddp_eval.models.common.fused_rotary import _rotate
from ddp_eval.models.common.fused_quick_gelu import quick_gelu
from transformers.activations import QuickGELUActivation
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision
torch.manual_seed(0)
q, k, _ = (torch.randn(37, 3, 5, 80, dtype=torch.float16) * 4).permute(1, 0, 2, 3).unbind(0)
angles = torch.rand(37, 40) * 37
emb = torch.cat([angles, angles], -1)
for table in (torch.float32, torch.bfloat16):
    cos, sin = emb.cos().to(table), emb.sin().to(table)
    want = apply_rotary_pos_emb_vision(q, k, cos, sin)
    assert all(torch.equal(a, b) for a, b in zip((_rotate(q, cos, sin), _rotate(k, cos, sin)), want)), table
for spread in (3.0, 40.0):
    x = (torch.randn(37, 301) * spread).half()  # not a multiple of the block: the tail is masked
    assert torch.equal(quick_gelu(x), QuickGELUActivation()(x)), spread
# what compiles them before the model loads runs them at a tower's shapes (models/loading.py build_ahead)
from ddp_eval.models.common import fused_quick_gelu, fused_rotary
fused_rotary.build_ahead(torch.device("cpu"), torch.float16, 5, 80)
fused_quick_gelu.build_ahead(torch.device("cpu"), torch.float16, 301)
print("equal")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "equal" in done.stdout, done.stderr[-2000:]
