"""The generic family on tiny offline LLaVA-OneVision and InternVL checkpoints: batched predictions equal
transformers' own batch-1 `generate`, torchrun shares, checkpoints it cannot run, `demo --family`, doctor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import env, predictions, shard_records

from ddp_eval import demo
from ddp_eval.config import load_config
from ddp_eval.distributed.group import DistInfo
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.generic.preprocess import conversation, open_image
from ddp_eval.models.registry import family_for
from ddp_eval.run.doctor import report
from ddp_eval.run.job import plan_job
from ddp_eval.run.runner import Options, run
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.registry import get_task

FAMILIES = ("llava_onevision", "internvl")
QUIET = Options(show_progress=False)
MAX_NEW_TOKENS = 6
REPO = Path(__file__).resolve().parent.parent


def settings(model: Path, data: Path, out: Path) -> list[str]:
    return [f"model.path={model}", f"data.path={data}", "model.dtype=float32", f"run.output_dir={out}",
            f"generation.max_new_tokens={MAX_NEW_TOKENS}", "run.num_workers=0", "run.batch_size=8"]


def single() -> DistInfo:
    return DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), initialized=False)


@pytest.fixture(scope="session")
def generic_models(tmp_path_factory) -> dict[str, Path]:
    return {f: demo.build_checkpoint(tmp_path_factory.mktemp(f) / "model", family=f) for f in FAMILIES}


@pytest.fixture(scope="session")
def one_rank(generic_models, demo_tsv, tmp_path_factory) -> dict[str, dict[int, str]]:
    """Per family, the predictions of a single-process run in batches of 8."""
    found = {}
    for family, model in generic_models.items():
        out = tmp_path_factory.mktemp(f"{family}-one-rank")
        run(load_config(None, settings(model, demo_tsv, out)), single(), QUIET)
        found[family] = predictions(out)
    return found


def batch_one_generate(model_dir: Path, data: Path) -> dict[int, str]:
    """transformers alone: its processor's chat template and `generate`, one row at a time."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    bench = load_benchmark(load_config(None, [f"model.path={model_dir}", f"data.path={data}"]).data)
    task = get_task(bench.task)
    replies = {}
    for sample in bench.samples:
        content = task.content(sample, bench.name)
        images = {item["image"]: open_image(bench, item["image"]) for item in content if item["type"] == "image"}
        inputs = processor.apply_chat_template(conversation(content, images), add_generation_prompt=True,
                                               tokenize=True, return_dict=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        replies[sample.index] = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True,
                                                 clean_up_tokenization_spaces=False)
    return replies


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_predictions_equal_transformers_batch_one_generate(family, generic_models, demo_tsv, one_rank,
                                                                   tmp_path):
    model = generic_models[family]
    cfg = load_config(None, settings(model, demo_tsv, tmp_path))
    bench = load_benchmark(cfg.data)
    job = plan_job(cfg, bench)
    assert job.family.name == "generic" and job.family.model_types == (family,)
    prepare = job.family.preprocessor(job.family.load_processor(cfg.model, job.pixels), bench, job.task, job.speed,
                                      job.pixels)
    padded = [b for b in job.plan if not prepare(b.batch_id, b.indices).inputs["attention_mask"].all()]
    assert padded  # rows of different prompt lengths share batches, so left padding matters
    assert one_rank[family] == batch_one_generate(model, demo_tsv)
    assert len(set(one_rank[family].values())) > 10  # random weights, yet replies differ from row to row


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_of_a_batch_are_left_padded_and_rendered_with_the_processors_template(family, generic_models,
                                                                                    demo_tsv, tmp_path):
    model = generic_models[family]
    cfg = load_config(None, settings(model, demo_tsv, tmp_path))
    bench = load_benchmark(cfg.data)
    job = plan_job(cfg, bench)
    processor = job.family.load_processor(cfg.model, job.pixels)
    rows = (0, 1, 2, 3)  # four images of different sizes
    prepared = job.family.preprocessor(processor, bench, job.task, job.speed, job.pixels)(0, rows)
    mask = prepared.inputs["attention_mask"]
    assert prepared.indices == rows and not prepared.failed
    assert mask[:, -1].all() and not mask[:, 0].all()  # padding on the left only
    rendered = job.family.render(processor, job.task.content(bench.by_index[0], bench.name))
    assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_start|>assistant\n")
    assert ("<image>" if family == "llava_onevision" else "<IMG_CONTEXT>") in rendered
    image_tokens = processor._get_num_multimodal_tokens(image_sizes=[bench.images.size(0)[::-1]])
    assert job.costs[0] >= image_tokens["num_image_tokens"][0]
    assert len(set(job.costs.values())) > 1  # rows sort by cost


# One family in the default run: the launch, plan and shards are the same code for both; the other runs
# with `make test-all` (each family's predictions are checked against transformers alone on one rank above).
@pytest.mark.parametrize("family", [FAMILIES[0], *(pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES[1:])])
def test_each_family_predicts_every_row_once_under_torchrun_as_on_one_rank(family, generic_models, demo_tsv,
                                                                          one_rank, tmp_path):
    model = generic_models[family]
    out = tmp_path / family
    sets = [x for s in settings(model, demo_tsv, out) for x in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "ddp_eval", "--quiet", *sets]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = shard_records(out)
    assert sorted(r["index"] for r in records) == sorted(one_rank[family])  # every row exactly once
    assert {r["rank"] for r in records} == {0, 1}
    assert predictions(out) == one_rank[family]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == "generic" and "transformers' own batched generate" in manifest["plain_path"]


def write_config(folder: Path, model_type: str, **files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name, content in files.items():
        (folder / f"{name}.json").write_text(json.dumps(content))
    return folder


@pytest.mark.parametrize("kind", ["llama", "whisper"])
def test_checkpoint_that_is_not_image_text_to_text_is_named(kind, tmp_path):
    with pytest.raises(DdpEvalError, match=rf"is a '{kind}' checkpoint, which no model family serves: transformers "
                                           rf"has no image-text-to-text model for '{kind}'"):
        family_for(write_config(tmp_path, kind))


def test_video_only_checkpoint_is_named(tmp_path):
    model = write_config(tmp_path, "instructblipvideo",
                         processor_config={"processor_class": "InstructBlipVideoProcessor"})
    with pytest.raises(DdpEvalError, match=r"'instructblipvideo' checkpoint whose processor "
                                           r"\(InstructBlipVideoProcessor\) takes videos but no images"):
        family_for(model)


def test_checkpoint_without_processor_or_chat_template_stops_before_weights_load(generic_models, demo_tsv,
                                                                                 tmp_path, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr("ddp_eval.models.loading.load_pretrained", no_weights)
    source = generic_models["llava_onevision"]
    bare = tmp_path / "no_processor"
    shutil.copytree(source, bare)
    (bare / "processor_config.json").unlink()
    with pytest.raises(DdpEvalError, match=r"'llava_onevision' checkpoint without its processor: no "
                                           r"preprocessor_config.json"):
        run(load_config(None, settings(bare, demo_tsv, tmp_path / "a")), single(), QUIET)

    untemplated = tmp_path / "no_template"
    shutil.copytree(source, untemplated)
    (untemplated / "chat_template.jinja").unlink()
    for name in ("processor_config.json", "tokenizer_config.json"):
        data = json.loads((untemplated / name).read_text())
        data.pop("chat_template", None)
        (untemplated / name).write_text(json.dumps(data))
    with pytest.raises(DdpEvalError, match="'llava_onevision' checkpoint without a chat template"):
        run(load_config(None, settings(untemplated, demo_tsv, tmp_path / "b")), single(), QUIET)


def test_model_family_generic_is_asked_for_by_name_and_listed(generic_models, tmp_path):
    assert family_for(generic_models["internvl"], "generic").name == "generic"
    with pytest.raises(DdpEvalError, match=r"'qwen2_vl' checkpoint without its processor"):
        family_for(write_config(tmp_path, "qwen2_vl"), "generic")  # a family of its own, asked for generic
    with pytest.raises(DdpEvalError, match=r"unknown family 'nope' \(known: generic, "):
        family_for(tmp_path, "nope")


def test_demo_family_builds_each_checkpoint_and_the_demo_config_runs_on_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    for family in FAMILIES:  # the second replaces the first in the same folder
        monkeypatch.setattr(sys, "argv", ["ddp_eval.demo", "--family", family, "--out", str(out)])
        demo.main()
        assert f"demo model ({family})" in capsys.readouterr().out
        assert json.loads((out / "model" / "config.json").read_text())["model_type"] == family
        cfg = load_config(REPO / "configs" / "demo.yaml", [f"model.path={out / 'model'}",
                                                            f"data.path={out / 'mmbench_demo.tsv'}",
                                                            f"run.output_dir={tmp_path / family}"])
        metrics = run(cfg, single(), QUIET)
        assert metrics["rows"] == 78 and metrics["failed"] == 0
    monkeypatch.setattr(sys, "argv", ["ddp_eval.demo", "--family", "llava", "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        demo.main()
    assert stop.value.code == 2
    assert "no tiny demo checkpoint for family 'llava' (known: internvl, llava_onevision, qwen2_5_vl, qwen2_vl" \
        in capsys.readouterr().err


def test_doctor_names_the_family_its_features_and_why_generic_runs_the_plain_path(generic_models, demo_tsv,
                                                                                 tiny_model, tmp_path):
    for model in (generic_models["internvl"], tiny_model):
        config = tmp_path / f"{model.parent.name}.yaml"
        config.write_text(f"model:\n  path: {model}\n  dtype: float32\ndata:\n  path: {demo_tsv}\n")
        lines, errors = report(config, [])
        text = "\n".join(lines)
        assert errors == 0, text
        if model == tiny_model:
            assert "model family qwen2_vl" in text
            assert "speed features of the qwen2_vl family: reuse_vision, reuse_prefix, decode_graphs" in text
            assert "model.reuse_vision: the vision tower encodes each distinct image of a batch once (tested on " \
                   "transformers 5.17-5.24" in text
        else:
            assert "internvl config and processor load; model family generic" in text
            assert "speed features of the generic family: none; it runs the plain path (transformers' generate): " \
                   "the speed features patch one family's modelling code" in text
