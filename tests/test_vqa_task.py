"""The short-answer task (TextVQA_VAL, DocVQA_VAL, ChartQA_TEST, OCRBench): rows, prompts, `extracted`,
metrics under VLMEvalKit's names, OCRBench's pixels, and end to end on the tiny checkpoint."""

from __future__ import annotations

import pandas as pd
import pytest
from tiny_benchmarks import ocrbench_rows, textvqa_rows, write

from ddp_eval.config import DataConfig, load_config
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.qwen2_vl import FAMILY, QWEN2_5_VL
from ddp_eval.run.runner import Options, run
from ddp_eval.tasks.base import TaskSettings
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.registry import get_task

VQA = get_task("vqa")
QUIET = Options(show_progress=False)


def meta(rows):
    return pd.DataFrame([{k: v for k, v in r.items() if k != "image"} for r in rows])


def test_dataset_prompt_per_benchmark(tmp_path):
    bench = load_benchmark(DataConfig(path=str(write(textvqa_rows(), tmp_path / "TextVQA_VAL.tsv")), task="vqa"))
    assert VQA.content(bench.samples[0], "TextVQA_VAL")[-1]["text"] == (
        "What is written on sign 0?\nAnswer the question using a single word or phrase.")
    assert VQA.content(bench.samples[0], "OCRBench")[-1]["text"] == "What is written on sign 0?"
    assert VQA.choices(bench.samples[0]) == ()


def test_ocrbench_without_category_is_named(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "category"} for r in ocrbench_rows()]
    with pytest.raises(DdpEvalError, match=r"missing required column\(s\) category \(OCRBench \(task vqa\)"):
        load_benchmark(DataConfig(path=str(write(rows, tmp_path / "OCRBench.tsv")), task="vqa"))


def test_textvqa_scores_the_normalised_reply_against_the_ten_answers():
    table = meta(textvqa_rows()).assign(prediction=["Stop.", "the EXIT", "stop sign", "no"])
    scored, metrics = VQA.score(table, "TextVQA_VAL")
    assert list(scored["extracted"]) == ["stop", "exit", "stop sign", "no"]
    # rows 0, 2: 6 of 10 say "stop", 4 "stop sign": each annotator's min(1, matches among the others / 3) is 1
    assert list(scored["hit"]) == [1.0, 1.0, 1.0, 0.0]
    assert metrics["scores"] == {"Overall": 75.0}
    assert VQA.primary(metrics, "TextVQA_VAL") == ("Overall", 75.0)
    assert VQA.tables(metrics, "TextVQA_VAL") == []


def test_chartqa_reports_each_split_then_overall_as_fractions_in_the_table():
    table = pd.DataFrame({"index": [0, 1, 2], "question": ["q"] * 3, "answer": ["12", "Yes", "0.5"],
                          "split": ["test_human", "test_augmented", "test_human"],
                          "prediction": [" 12.4 ", "yes", "50%"]})
    scored, metrics = VQA.score(table, "ChartQA_TEST")
    assert list(scored["extracted"]) == ["12.4", "yes", "50%"]
    assert list(scored["hit"]) == [1.0, 1.0, 1.0]
    assert list(metrics["scores"]) == ["test_human", "test_augmented", "Overall"]
    (by_split,) = VQA.tables(metrics, "ChartQA_TEST")
    assert by_split.key == "split" and by_split.rows[-1] == ("Overall", (1.0,))


def test_docvqa_extracted_is_the_text_anls_compares():
    table = pd.DataFrame({"index": [0], "question": ["q"], "answer": [str(["Total  Sales"])],
                          "prediction": ["Total sale "]})
    scored, metrics = VQA.score(table, "DocVQA_VAL")
    assert scored["extracted"][0] == "total sale"
    # one edit on the collapsed lower-case text, divided by the longer raw string (12 characters)
    assert metrics["scores"]["Overall"] == pytest.approx(100 * (1 - 1 / 12))


def test_ocrbench_counts_right_answers_per_group_out_of_1000():
    table = meta(ocrbench_rows()).assign(prediction=["It says hello", "HELLO!", "bye"])
    scored, metrics = VQA.score(table, "OCRBench")
    assert list(scored["hit"]) == [1.0, 1.0, 0.0]
    assert metrics["scores"]["Final Score"] == 2 and metrics["scores"]["Scene Text-centric VQA"] == 1
    (counts,) = VQA.tables(metrics, "OCRBench")
    assert not counts.columns[0].percent and counts.rows[-1] == ("Final Score", (2,))
    assert VQA.primary(metrics, "OCRBench") == ("Final Score", 2)


def test_scoring_a_multiple_choice_file_as_short_answers_says_so():
    table = pd.DataFrame({"index": [0], "question": ["q"], "A": ["x"], "B": ["y"], "answer": ["A"],
                          "prediction": ["A"]})
    with pytest.raises(DdpEvalError, match="its answers are option letters"):
        VQA.score(VQA.normalize_columns(table), "TextVQA_VAL")


@pytest.mark.parametrize("family", [FAMILY, QWEN2_5_VL])
def test_ocrbench_lowers_min_pixels_unless_the_user_set_them(family):
    cfg = load_config(None, ["model.path=m", "data.path=OCRBench"])
    assert family.pixels(cfg, TaskSettings(), "OCRBench").min_pixels == 10 * 10 * 28 * 28
    assert family.pixels(cfg, TaskSettings(), "OCRBench").max_pixels == 16384 * 28 * 28
    assert family.pixels(cfg, TaskSettings(), "TextVQA_VAL").min_pixels == 1280 * 28 * 28
    mine = load_config(None, ["model.path=m", "data.path=OCRBench", "model.min_pixels=3136"])
    assert family.pixels(mine, TaskSettings(), "OCRBench").min_pixels == 3136


def test_textvqa_and_ocrbench_end_to_end_batched_equal_batch_one(make_config, single_process, tmp_path):
    for name, rows in (("TextVQA_VAL", textvqa_rows()), ("OCRBench", ocrbench_rows())):
        tsv = write(rows, tmp_path / f"tiny_{name}.tsv")
        replies = {}
        for size in (4, 1):
            out = tmp_path / f"{name}_{size}"
            metrics = run(make_config("data.task=vqa", f"run.batch_size={size}", "generation.max_new_tokens=3",
                                      f"run.output_dir={out}", data=tsv), single_process, QUIET)
            assert metrics["rows"] == len(rows) and metrics["failed"] == 0
            table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
            assert {"extracted", "hit"} <= set(table.columns)
            replies[size] = list(table["prediction"])
        assert replies[4] == replies[1]
