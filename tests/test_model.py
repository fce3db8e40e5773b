"""The real loading path (`from_pretrained` on a local directory) on tiny offline checkpoints."""

import json

import pandas as pd
import pytest
import torch

from ddp_eval.config import ModelConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.model import check_inputs_device, check_model_device, load_model, load_processor
from ddp_eval.runner import Options, run

QUIET = Options(show_progress=False)


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
    shard.write_text("\n".join(lines[:8]) + "\n")  # header + 7 rows: as if killed after 7 rows
    run(cfg, single_process, QUIET)
    indices = [json.loads(x)["index"] for x in shard.read_text().splitlines()[1:]]
    assert len(indices) == 20 and len(set(indices)) == 20
