"""`python -m ddp_eval score`: re-score a predictions file without a model; errors at the CLI edge."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from ddp_eval.errors import DdpEvalError
from ddp_eval.report.finish import finish
from ddp_eval.tasks.registry import get_task

MCQ = get_task("mcq")


def table(predictions, answers=("A", "B", "A", "A")):
    return pd.DataFrame({
        "index": [0, 1, 1_000_000, 1_000_001][: len(predictions)],
        "question": ["q0", "q1", "q0", "q1"][: len(predictions)],
        "hint": [None] * len(predictions),
        "A": ["cat", "red", "dog", "blue"][: len(predictions)],
        "B": ["dog", "blue", "cat", "red"][: len(predictions)],
        "answer": list(answers)[: len(predictions)],
        "category": ["animals", "colors", "animals", "colors"][: len(predictions)],
        "L2-category": ["p", "p", "p", "p"][: len(predictions)],
        "prediction": predictions,
    })


def run_score(*args):
    return subprocess.run([sys.executable, "-m", "ddp_eval", "score", *map(str, args)],
                          capture_output=True, text=True)


def test_score_vlmevalkit_xlsx_writes_the_same_outputs_as_a_run(tmp_path):
    path = tmp_path / "Qwen2-VL-2B-Instruct_MMBench_DEV_EN.xlsx"
    table(["A", "The answer is B", "cat", "blue"]).to_excel(path, index=False)
    done = run_score(path, "--output-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t")
    assert list(scored["extracted"]) == ["A", "B", "B", "A"]
    assert list(scored["hit"]) == [1, 1, 0, 1]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"]["overall"] == 0.75
    assert metrics["accuracy"]["l2-category"] == {"p": 0.75}  # column names lower-cased, as VLMEvalKit
    assert metrics["circular"]["groups"] == 2 and metrics["circular"]["overall"] == 0.5
    assert (tmp_path / "out" / "accuracy_by_category.csv").read_text().startswith("category,accuracy,circular")
    assert "Overall accuracy: 75.00% over 4 rows" in done.stdout
    assert "Overall CircularEval: 50.00% over 2 questions" in done.stdout


def test_rescoring_our_own_predictions_round_trips_awkward_replies(tmp_path):
    replies = ["A\r", "tab\there B", "line\nbreak \"A\"", "B"]
    finish(MCQ, table(replies), tmp_path / "run")
    again = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    assert list(again["prediction"]) == replies
    finish(MCQ, again.drop(columns=["extracted", "hit"]), tmp_path / "rescored")
    a = json.loads((tmp_path / "run" / "metrics.json").read_text())
    b = json.loads((tmp_path / "rescored" / "metrics.json").read_text())
    assert a == b


def test_replies_pandas_reads_as_missing_score_as_vlmevalkit_reads_them_back(tmp_path):
    """VLMEvalKit scores its predictions file as `load` reads it: "NA" is NaN, the text "nan", in which the
    option "an" is found. A run scores them so, re-scoring its predictions.tsv agrees, and the file keeps
    the replies as given."""
    from pandas._libs.parsers import STR_NA_VALUES

    from ddp_eval.report.finish import READ_AS_MISSING

    assert READ_AS_MISSING == STR_NA_VALUES
    rows = table(["NA", "None", "", "A"]).assign(A=["an", "red", "dog", "blue"])
    metrics = finish(MCQ, rows, tmp_path / "run")
    kept = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t", keep_default_na=False)
    assert list(kept["prediction"]) == ["NA", "None", "", "A"]
    assert list(kept["extracted"]) == ["A", "Z", "Z", "A"] and list(kept["hit"]) == [1, 0, 0, 1]
    again = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    assert finish(MCQ, again.drop(columns=["extracted", "hit"]), tmp_path / "rescored") == metrics


def test_answers_are_compared_as_given_and_circular_eval_follows_vlmevalkits_names():
    from ddp_eval.tasks.mcq.score import score_table

    scored, _ = score_table(table(["A", "B"], answers=("A", "B ")))
    assert list(scored["hit"]) == [1, 0]  # VLMEvalKit's answer_map keeps "B ": no letter equals it
    rows = table(["A", "B", "B", "A"])
    for name, circular in (("MMBench_DEV_EN", True), ("my_ccbench_copy", True), ("SEEDBench_IMG", False), ("", True)):
        _, metrics = score_table(rows, name)
        assert ("circular" in metrics) == circular, name


def test_score_reads_csv_with_commas_as_vlmevalkit_loads_it_and_refuses_a_shard(tmp_path):
    table(["A", "The answer is B", "cat", "blue"]).to_csv(tmp_path / "MMBench_DEV_EN.csv", index=False)
    done = run_score(tmp_path / "MMBench_DEV_EN.csv", "--output-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["accuracy"]["overall"] == 0.75
    (tmp_path / "rank000-of-001.jsonl").write_text('{"ddp_eval_shard": 1, "identity": {}}\n')
    done = run_score(tmp_path / "rank000-of-001.jsonl")
    assert done.returncode == 2 and "a JSON file, not a table (a run's shard?)" in done.stderr


def test_a_table_of_empty_replies_is_scored_with_a_warning(tmp_path, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("ddp_eval"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="ddp_eval"):
        metrics = finish(MCQ, table(["", " ", "", ""]), tmp_path / "run")
    assert metrics["accuracy"]["overall"] == 0.0 and "every reply is empty (4 rows)" in caplog.text


def test_test_split_without_answers_skips_scoring_and_writes_submission(tmp_path):
    metrics = finish(MCQ, table(["A", "B"], answers=(None, None)), tmp_path)
    assert metrics is None
    assert (tmp_path / "submission.xlsx").exists() and not (tmp_path / "metrics.json").exists()
    assert list(pd.read_excel(tmp_path / "submission.xlsx")["prediction"]) == ["A", "B"]


def test_mixed_answers_are_an_error_naming_rows(tmp_path):
    with pytest.raises(DdpEvalError, match=r"1 of 2 rows have no answer \(index 1\)"):
        finish(MCQ, table(["A", "B"], answers=("A", None)), tmp_path)


def test_cli_prints_user_errors_in_one_line_with_status_2(tmp_path):
    done = run_score(tmp_path / "absent.tsv")
    assert done.returncode == 2
    assert done.stderr.strip() == f"ddp_eval: error: predictions file not found: {tmp_path / 'absent.tsv'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: m\n  colour: red\ndata:\n  path: d\n")
    done = subprocess.run([sys.executable, "-m", "ddp_eval", "--config", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown config key model.colour" in done.stderr
    assert "Traceback" not in done.stderr


def test_console_script_is_installed():
    from pathlib import Path

    script = Path(sys.executable).parent / "ddp-eval"
    done = subprocess.run([str(script), "score", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "predictions" in done.stdout
