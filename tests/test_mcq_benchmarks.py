"""Multiple-choice benchmarks beyond MMBench: MMMU's several images per row (a printed list of base64
images; its prompt places them where the text names them), its scoring (`MMMU_preproc`, accuracy per
split, "Overall Acc (val)"), VLMEvalKit's `report_acc` and primary metric, and multi-image rows through
the Qwen2-VL preprocessing and the tiny checkpoint (batched = batch 1, reuse on = off)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from tiny_benchmarks import mmmu_rows, write

from ddp_eval.config import DataConfig, ModelConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import Pixels, Speed
from ddp_eval.models.qwen2_vl import FAMILY, QWEN2_5_VL
from ddp_eval.run.runner import Options, run
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.mcq.metrics import ScoredRow, primary_metric, report_acc
from ddp_eval.tasks.registry import get_task

MCQ = get_task("mcq")
QUIET = Options(show_progress=False)
SMALL = Pixels(3136, 50176)
INSTRUCTION = "Please select the correct answer from the options above. \n"


@pytest.fixture
def mmmu(tmp_path):
    return load_benchmark(DataConfig(path=str(write(mmmu_rows(), tmp_path / "MMMU_DEV_VAL.tsv"))))


def text(t):
    return {"type": "text", "text": t}


def image(k):
    return {"type": "image", "image": k}


def test_a_printed_list_of_images_gives_each_image_its_own_key(mmmu):
    first, second, open_question, _, copy = mmmu.samples
    assert first.image_keys == ((1, 0), (1, 1)) and second.image_keys == (2,)
    assert copy.image_keys == first.image_keys  # "1": row 1's images, both
    assert mmmu.images.open((1, 1)).size == (72, 56) and mmmu.images.open((1, 0)).size == (64, 64)
    assert mmmu.images.describe((1, 1)).endswith("MMMU_DEV_VAL.tsv, image 2 of row index 1")
    assert open_question.options == {} and open_question.answer == "2"  # MMMU's open questions load


def test_mmmu_dataset_prompt_puts_each_image_where_the_text_names_it(mmmu):
    first, _, open_question, _, _ = mmmu.samples
    assert MCQ.content(first, "MMMU_DEV_VAL") == [
        text("Question: Compare "), image((1, 1)), text(" with "), image((1, 0)),
        text(". Which is larger?\nOptions:\nA. "), image((1, 0)),
        text("\nB. the second\n" + INSTRUCTION),
    ]
    # no <image N> in the text: images first, as every other benchmark
    assert MCQ.content(open_question, "MMMU_DEV_VAL") == [
        image((3, 0)), image((3, 1)), text("Question: How many squares are there in total?\n")]


@pytest.mark.parametrize("question, message", [
    ("Look at <image 3>.", r"names <image 3> but the row has 2 image\(s\)"),
    ("Look at <image x>.", "not <image N> with one digit N"),
])
def test_an_image_tag_the_row_cannot_fill_is_named(tmp_path, question, message):
    rows = mmmu_rows()
    rows[0]["question"] = question
    bench = load_benchmark(DataConfig(path=str(write(rows, tmp_path / "MMMU_DEV_VAL.tsv"))))
    with pytest.raises(DdpEvalError, match=f"MMMU_DEV_VAL, row index 1: .*{message}"):
        MCQ.content(bench.samples[0], "MMMU_DEV_VAL")


def mmmu_table(replies):
    return pd.DataFrame([{k: v for k, v in r.items() if k != "image"} | {"prediction": p}
                         for r, p in zip(mmmu_rows(), replies)])


def test_mmmu_scoring_asks_open_questions_as_two_options_and_reports_per_split():
    scored, metrics = MCQ.score(mmmu_table(["A", "C", "2", "I think it is B", "no"]), "MMMU_DEV_VAL")
    # open question: A = its answer "2", B = "Other Answers"; a non-letter truth counts as A
    assert list(scored["extracted"]) == ["A", "C", "A", "B", "B"]
    assert list(scored["hit"]) == [1, 1, 1, 1, 0]
    assert metrics["splits"]["dev"]["overall"] == 1.0 and metrics["splits"]["validation"]["overall"] == 0.75
    report = metrics["report_acc"]
    assert report["validation"] == {"Overall": 0.75, "Art": 0.5, "Math": 1.0}
    assert math.isnan(report["dev"]["Math"])  # no Math row in dev: VLMEvalKit's mean of nothing
    assert MCQ.primary(metrics, "MMMU_DEV_VAL") == ("Overall Acc (val)", 75.0)
    lines = MCQ.headline(metrics, "MMMU_DEV_VAL")
    assert lines[0] == "Overall Acc (val): **75.00%**" and lines[-1] == "Overall accuracy: **80.00%** over 5 rows"
    assert [t.name for t in MCQ.tables(metrics, "MMMU_DEV_VAL")][0] == "accuracy_by_split"


def test_outside_mmmu_an_open_question_cannot_be_answered():
    scored, _ = MCQ.score(mmmu_table(["A", "C", "2", "B", "no"]), "mine")
    assert scored["extracted"][2] == "Z" and scored["hit"][2] == 0


def test_report_acc_abbreviates_mmbench_abilities_and_primary_follows_vlmevalkit():
    rows = [ScoredRow(0, "ocr", "coarse_perception", True), ScoredRow(1, "ocr", "logic_reasoning", False)]
    report = report_acc(rows)
    assert report == {"none": {"Overall": 0.5, "CP": 1.0, "LR": 0.0, "ocr": 0.5}}
    assert primary_metric(report, "MMStar") == ("Overall Acc", 50.0)
    # a split column outside MMMU: ImageBaseDataset's generic pick, test before validation
    split = {"validation": {"Overall": 0.25}, "test": {"Overall": 0.5}}
    assert primary_metric(split, "ScienceQA_TEST") == ("split=test|Overall", 50.0)
    assert primary_metric(split, "MMMU_DEV_VAL") == ("Overall Acc (test)", 50.0)


def prepared(processor, bench, family, rows, reuse_vision=False, reuse_prefix=False):
    speed = Speed(reuse_vision=reuse_vision, reuse_prefix=reuse_prefix)
    return family.preprocessor(processor, bench, MCQ, speed, SMALL)(0, tuple(rows))


@pytest.mark.parametrize("family", [FAMILY, QWEN2_5_VL])
def test_multi_image_rows_share_each_distinct_image_once_in_prompt_order(family, tiny_model, mmmu):
    processor = family.load_processor(ModelConfig(path=str(tiny_model)), SMALL)
    rows = (1, 5, 4)
    plain = prepared(processor, mmmu, family, rows)
    shared = prepared(processor, mmmu, family, rows, reuse_vision=True)
    if family.custom_prompts:  # Qwen2-VL: all images first, as stored
        assert shared.extras.image_map == [0, 1, 0, 1, 2, 3]
    else:  # the dataset's prompt: row 1 shows its second image, then its first twice; row 5 row 1's first, second
        assert shared.extras.image_map == [0, 1, 1, 1, 0, 2, 3]
    for key in plain.inputs:
        if key != "pixel_values":
            assert torch.equal(plain.inputs[key], shared.inputs[key]), key
    assert shared.inputs["pixel_values"].shape[0] < plain.inputs["pixel_values"].shape[0]


def test_rows_of_the_same_images_share_a_prefix_holding_all_their_image_tokens(tiny_model, mmmu):
    processor = FAMILY.load_processor(ModelConfig(path=str(tiny_model)), SMALL)
    batch = prepared(processor, mmmu, FAMILY, (1, 5, 4), reuse_vision=True, reuse_prefix=True)
    assert batch.inputs["input_ids"].shape[0] == 2  # rows 1 and 5 (same two images) share one prefix
    assert batch.extras.suffix.owner.tolist() == [0, 0, 1]
    assert not (batch.extras.suffix.input_ids == processor.image_token_id).any()


def predictions(out):
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"], table["prediction"]))


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_model_25"])
def test_multi_image_predictions_batched_equal_batch_one_and_reuse_on_equals_off(model_fixture, request, make_config,
                                                                                single_process, tmp_path):
    model = request.getfixturevalue(model_fixture)
    tsv = write(mmmu_rows(), tmp_path / "MMMU_DEV_VAL.tsv")
    runs = {"batched": ["run.batch_size=5", "model.reuse_vision=false"],
            "one": ["run.batch_size=1", "model.reuse_vision=false"],
            "reuse": ["run.batch_size=5", "model.reuse_vision=true", "model.reuse_prefix=true"]}
    got = {}
    for name, overrides in runs.items():
        out = tmp_path / name
        metrics = run(make_config(*overrides, "generation.max_new_tokens=4", f"run.output_dir={out}", model=model,
                                  data=tsv), single_process, QUIET)
        assert metrics["failed"] == 0 and metrics["rows"] == 5
        got[name] = predictions(out)
    assert got["batched"] == got["one"] == got["reuse"]
    assert len(set(got["one"].values())) > 1


def test_scoring_a_yes_no_file_as_multiple_choice_says_so():
    table = pd.DataFrame({"index": [0, 1], "question": ["q", "q"], "answer": ["Yes", "No"],
                          "prediction": ["Yes", "No"]})
    with pytest.raises(DdpEvalError, match=r"cannot score with the mcq task: it has no option columns A, B, \.\.\.; "
                                           r"the file holds yes/no answers \(task yorn"):
        MCQ.score(table, "predictions")
