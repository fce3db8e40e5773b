"""The three seams: task and family registries, the speed features decided once, and the task's prompt."""

from __future__ import annotations

import json
import logging

import pytest

from ddp_eval.config import load_config
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import resolve_speed
from ddp_eval.models.qwen2_vl import FAMILY
from ddp_eval.models.registry import family_for
from ddp_eval.tasks.mcq.prompt import default_prompt
from ddp_eval.tasks.mcq.rows import McqSample
from ddp_eval.tasks.registry import get_task, task_for


def config(*overrides: str):
    return load_config(None, ["model.path=m", "data.path=d.tsv", *overrides])


def test_speed_feature_on_by_default_steps_aside_outside_its_tested_transformers(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("ddp_eval"), "propagate", True)
    caplog.set_level(logging.INFO, logger="ddp_eval")
    speed = resolve_speed(config(), FAMILY, "9.1.0")
    assert not speed.reuse_vision and not speed.kv_head_attention and speed.vision_attention == "sdpa"
    assert "model.reuse_vision: not used" in caplog.text and "9.1.0" in caplog.text
    inside = resolve_speed(config(), FAMILY, "5.24.0")
    assert inside.reuse_vision and inside.kv_head_attention and inside.vision_attention == "auto"


def test_proven_features_are_on_by_default_on_cuda_and_off_on_the_cpu_or_when_sampling():
    cuda = resolve_speed(config(), FAMILY, "5.24.0", "cuda")
    assert cuda.reuse_vision and cuda.reuse_prefix and cuda.decode_graphs and cuda.kv_head_attention
    cpu = resolve_speed(config(), FAMILY, "5.24.0", "cpu")
    assert cpu.reuse_vision and not cpu.reuse_prefix and not cpu.decode_graphs
    sampled = resolve_speed(config("generation.greedy=false"), FAMILY, "5.24.0", "cuda")
    assert not sampled.reuse_prefix and not sampled.decode_graphs
    off = resolve_speed(config("model.reuse_prefix=false"), FAMILY, "5.24.0", "cuda")
    assert not off.reuse_prefix and not off.decode_graphs
    assert resolve_speed(config("model.reuse_prefix=true"), FAMILY, "5.24.0", "cpu").reuse_prefix


def test_the_fused_vision_kernels_are_on_by_default_on_cuda_only_and_can_be_turned_off():
    cuda = resolve_speed(config(), FAMILY, "5.24.0", "cuda")
    assert cuda.fused_rotary and cuda.fused_activation and not cuda.compile_vision
    cpu = resolve_speed(config(), FAMILY, "5.24.0", "cpu")
    assert not cpu.fused_rotary and not cpu.fused_activation
    off = resolve_speed(config("model.fused_rotary=false", "model.fused_activation=false"), FAMILY, "5.24.0", "cuda")
    assert not off.fused_rotary and not off.fused_activation
    from ddp_eval.models.qwen3_vl import FAMILY as QWEN3_VL  # tanh GELU: no fused_activation to offer

    assert resolve_speed(config(), QWEN3_VL, "5.24.0", "cuda").fused_activation is False
    with pytest.raises(DdpEvalError, match="model.fused_activation=True: the qwen3_vl family does not offer it"):
        resolve_speed(config("model.fused_activation=true"), QWEN3_VL, "5.24.0", "cuda")


def test_speed_feature_set_by_the_user_outside_its_tested_transformers_names_the_version():
    with pytest.raises(DdpEvalError, match=r"model.reuse_prefix=True: .*tested on transformers 5.17 to 5.24, not 4.0"):
        resolve_speed(config("model.reuse_prefix=true"), FAMILY, "4.0")


def test_checkpoint_of_a_model_type_no_family_serves_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(DdpEvalError, match="is a 'bert' checkpoint, which no model family serves"):
        family_for(tmp_path)
    with pytest.raises(DdpEvalError, match="unknown family 'nope'"):
        family_for(tmp_path, "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    from ddp_eval.models.qwen2_vl import QWEN2_5_VL

    assert family_for(tmp_path) is QWEN2_5_VL and not QWEN2_5_VL.custom_prompts  # VLMEvalKit: use_custom_prompt=False
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    assert family_for(tmp_path) is FAMILY and FAMILY.custom_prompts


def test_task_comes_from_the_benchmark_name_or_data_task():
    assert task_for("MMBench_DEV_EN", None).name == "mcq"
    assert task_for("local.tsv", None).name == "mcq"
    with pytest.raises(DdpEvalError, match="unknown task 'mqc'; did you mean mcq"):
        get_task("mqc")


def test_benchmark_default_mcq_prompt_is_vlmevalkits_image_mcq_prompt():
    sample = McqSample(index=0, image_keys=(0,), question="What is shown?", hint="Look.", options={"A": "cat",
                       "B": "dog"}, answer="A", category=None, l2_category=None)
    assert default_prompt(sample) == ("Hint: Look.\nQuestion: What is shown?\nOptions:\nA. cat\nB. dog\n"
                                      "Please select the correct answer from the options above. \n")
    no_options = McqSample(**{**sample.__dict__, "options": {}, "hint": None})
    assert default_prompt(no_options) == "Question: What is shown?\n"
