"""The yes/no task (MME, POPE, HallusionBench): rows, prompts, extraction and metrics on hand-made rows,
and end to end on the tiny checkpoint. Expected values are worked out by hand from VLMEvalKit's
`ImageYORNDataset` and `vlmeval/dataset/utils/yorn.py`."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from tiny_benchmarks import hallusion_rows, pope_rows, write

from ddp_eval.config import DataConfig
from ddp_eval.errors import DdpEvalError
from ddp_eval.report.finish import finish
from ddp_eval.run.runner import Options, run
from ddp_eval.tasks.load import load_benchmark
from ddp_eval.tasks.registry import get_task
from ddp_eval.tasks.yorn.scoring import MME_PERCEPTION, MME_REASONING

YORN = get_task("yorn")
QUIET = Options(show_progress=False)


def predictions(out):
    table = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    return dict(zip(table["index"], table["prediction"]))


def test_pope_rows_share_the_first_rows_image_and_get_the_question_unchanged(tmp_path):
    bench = load_benchmark(DataConfig(path=str(write(pope_rows(), tmp_path / "POPE.tsv")), task="yorn"))
    assert [s.index for s in bench.samples][:3] == [0, 1, 2]
    assert {s.image_keys for s in bench.samples[:3]} == {(0,)}
    content = YORN.content(bench.samples[1], bench.name)
    assert content == [{"type": "image", "image": 0}, {"type": "text", "text": "Is there a car in the image?"}]
    assert YORN.choices(bench.samples[0]) == ("Yes", "No")


def test_hallusion_string_indices_key_rows_by_position_and_stay_in_the_table(tmp_path):
    bench = load_benchmark(DataConfig(path=str(write(hallusion_rows(), tmp_path / "HallusionBench.tsv")),
                                      task="yorn"))
    assert [s.index for s in bench.samples] == [0, 1, 2, 3, 4]
    assert list(bench.table["index"])[:2] == ["VD_chart_1_0_0_0", "VD_chart_1_0_0_1"]
    # a short image cell names another row's string index
    assert bench.samples[1].image_keys == bench.samples[0].image_keys == ("VD_chart_1_0_0_0",)
    assert bench.images.open("VD_chart_1_0_1_0").size == (64, 64)
    assert bench.images.describe("VD_chart_1_0_1_0").endswith("image of row index VD_chart_1_0_1_0")


@pytest.mark.parametrize("change, message", [
    (lambda r: [{k: v for k, v in x.items() if k != "category"} for x in r],
     r"POPE.tsv: missing required column\(s\) category \(POPE \(task yorn\) needs index, question, answer, "
     r"category\); found index, question, answer$"),
    (lambda r: [{**r[0], "answer": "B"}] + r[1:], "row index 0 has answer 'B'; a yes/no benchmark's answers are Yes"),
])
def test_bad_pope_files_are_named(tmp_path, change, message):
    with pytest.raises(DdpEvalError, match=message):
        load_benchmark(DataConfig(path=str(write(change(pope_rows()), tmp_path / "POPE.tsv")), task="yorn"))


def test_hallusion_index_that_is_not_six_fields_is_named_at_load(tmp_path):
    rows = hallusion_rows()
    rows[4]["index"] = "VS_map_7"
    with pytest.raises(DdpEvalError, match="row index 'VS_map_7' is not HallusionBench's"):
        load_benchmark(DataConfig(path=str(write(rows, tmp_path / "HallusionBench.tsv")), task="yorn"))


def test_a_name_the_yes_no_rules_do_not_know_is_an_error_naming_the_known_ones(tmp_path):
    with pytest.raises(DdpEvalError, match="known for MME, POPE, HallusionBench"):
        load_benchmark(DataConfig(path=str(write(pope_rows(), tmp_path / "mine.tsv")), task="yorn"))


def pope_table(replies):
    rows = pope_rows()[:len(replies)]
    return pd.DataFrame([{k: v for k, v in r.items() if k != "image"} | {"prediction": p}
                         for r, p in zip(rows, replies)])


def test_pope_scoring_extracts_yes_no_unknown_and_reports_f1_per_split(tmp_path):
    table = pope_table(["Yes, there is.", "no", "I am not sure", "Yes", "Yes", "No."])
    scored, metrics = YORN.score(YORN.normalize_columns(table), "POPE")
    assert list(scored["extracted"]) == ["Yes", "No", "Unknown", "Yes", "Yes", "No"]
    assert list(scored["hit"]) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    overall = metrics["scores"]["Overall"]
    # 8 exploded rows (rows 1 and 4 count in popular and random): TP 2, FP 2, FN 0, 5 hits
    assert overall["precision"] == 50.0 and overall["recall"] == 100.0
    assert overall["Overall"] == pytest.approx(200 / 3)
    assert list(metrics["scores"]) == ["Overall", "adversarial", "popular", "random"]
    assert YORN.primary(metrics, "POPE") == ("Overall F1", pytest.approx(200 / 3))
    tables = YORN.tables(metrics, "POPE")
    assert tables[0].rows[0] == ("Overall", (pytest.approx(2 / 3), 0.625, 0.5, 1.0))


def test_mme_scores_are_points_not_percentages_and_headline_is_the_sum(tmp_path):
    rows = []
    for n, category in enumerate(MME_PERCEPTION + MME_REASONING):
        for q, answer in enumerate(("Yes", "No")):
            rows.append({"index": 2 * n + q, "question": "Is it? Please answer yes or no.", "answer": answer,
                         "category": category, "image_path": f"{category}/{n}.jpg",
                         "prediction": "Yes" if category != "OCR" or q == 0 else "Yes"})
    scored, metrics = YORN.score(pd.DataFrame(rows), "MME")
    scores = metrics["scores"]
    assert scores["category"]["OCR"] == {"acc": 50.0, "acc+": 0.0, "score": 50.0}
    assert scores["perception"] == 10 * 50.0 and scores["reasoning"] == 4 * 50.0
    assert YORN.primary(metrics, "MME") == ("perception+reasoning", 700.0)
    by_category, by_group = YORN.tables(metrics, "MME")
    assert not any(c.percent for c in by_category.columns) and by_group.rows[0] == ("perception", (500.0,))


def test_hallusion_groups_by_the_string_index(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "image"} for r in hallusion_rows()]
    table = pd.DataFrame(rows).assign(prediction=["Yes", "No", "No", "No", "no"])
    _, metrics = YORN.score(table, "HallusionBench")
    overall = metrics["scores"]["Overall"]
    # rows: hit, hit, miss, hit, hit -> figures (chart,0,0) right, (chart,0,1) wrong, (map,2,0) right;
    # questions (chart,0,0) wrong, (chart,0,1) right, (map,2,0) right
    assert overall == {"aAcc": 80.0, "fAcc": pytest.approx(200 / 3), "qAcc": pytest.approx(200 / 3)}
    assert YORN.primary(metrics, "HallusionBench")[1] == pytest.approx((80 + 400 / 3) / 3)


def test_scoring_a_multiple_choice_file_as_yes_no_says_so(tmp_path):
    table = pd.DataFrame({"index": [0, 1], "question": ["q", "q"], "A": ["x", "y"], "B": ["y", "x"],
                          "answer": ["A", "B"], "category": ["c", "c"], "prediction": ["A", "B"]})
    with pytest.raises(DdpEvalError, match="cannot score with the yorn task: its answers are not all Yes or No "
                                           r"\(A, B\); the file holds option letters"):
        finish(YORN, table, tmp_path, benchmark="POPE")


def test_pope_and_hallusion_end_to_end_with_reuse_equal_to_without(make_config, single_process, tmp_path):
    for name, rows in (("POPE", pope_rows()), ("HallusionBench", hallusion_rows())):
        tsv = write(rows, tmp_path / f"tiny_{name}.tsv")
        outs = {}
        for reuse in ("true", "false"):
            out = tmp_path / f"{name}_{reuse}"
            metrics = run(make_config("data.task=yorn", f"model.reuse_prefix={reuse}", f"model.reuse_vision={reuse}",
                                      "generation.max_new_tokens=3", f"run.output_dir={out}", data=tsv),
                          single_process, QUIET)
            assert metrics["rows"] == len(rows) and metrics["failed"] == 0
            outs[reuse] = predictions(out)
        assert outs["true"] == outs["false"]
        assert list(outs["true"]) == [r["index"] for r in rows]  # the file's own indices, strings included
        saved = json.loads((tmp_path / f"{name}_true" / "metrics.json").read_text())
        assert "Overall" in saved["scores"]
    # a run's own predictions.tsv re-scores by the benchmark and task its run.json names
    done = subprocess.run([sys.executable, "-m", "ddp_eval", "score", str(tmp_path / "HallusionBench_true" /
                           "predictions.tsv"), "--output-dir", str(tmp_path / "again")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == saved
