"""`ddp_eval prompts`: what each model family is given per row, compared with prompts written out by
hand from VLMEvalKit's code (e8e78f05): `Qwen2VLPromptMixin` for Qwen2-VL (use_custom_prompt=True),
the datasets' `build_prompt` for Qwen2.5-VL (its configs set use_custom_prompt=False); and `score` on
predictions files of each family, the benchmark taken from the file name."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from tiny_benchmarks import hallusion_rows, image_b64, mmmu_rows, ocrbench_rows, pope_rows, textvqa_rows, write

from ddp_eval.config import load_config
from ddp_eval.run.prompts import prompt_lines

EN = "Please select the correct answer from the options above."
SHORT_WORDS = "\nPlease try to answer the question with short words or phrases if possible."
SINGLE_WORD = "\nAnswer the question using a single word or phrase."
IMAGE = {"type": "image"}


def mmbench_rows():
    return [{"index": 0, "question": "What is shown?", "hint": "Look closely.", "A": "cat", "B": "dog", "answer": "A",
             "category": "c", "image": image_b64(0)},
            {"index": 1, "question": "图中是什么？", "hint": None, "A": "猫", "B": "狗", "answer": "B", "category": "c",
             "image": "0"}]


def mme_rows():
    return [{**r, "question": "Is this a cat? Please answer yes or no.", "image_path": f"x/{r['index'] // 10}.jpg"}
            for r in pope_rows()]


FILES = {"MMBench_DEV_EN": mmbench_rows, "POPE": pope_rows, "HallusionBench": hallusion_rows, "MME": mme_rows,
         "TextVQA_VAL": textvqa_rows, "OCRBench": ocrbench_rows, "MMMU_DEV_VAL": mmmu_rows, "mine": mmbench_rows}


def texts(model, path, limit=2):
    cfg = load_config(None, [f"model.path={model}", f"data.path={path}"])
    return [(line["index"], line["messages"]) for line in prompt_lines(cfg, limit)]


def text(t):
    return {"type": "text", "text": t}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts")
    return {name: write(rows(), root / f"{name}.tsv") for name, rows in FILES.items()}


def test_qwen2_vl_gets_its_own_prompts_where_vlmevalkit_gives_them(tiny_model, files):
    assert texts(tiny_model, files["MMBench_DEV_EN"]) == [
        (0, [IMAGE, text(f"Hint: Look closely.\nQuestion: What is shown?\nOptions:\nA. cat\nB. dog\n{EN}")]),
        (1, [IMAGE, text("Question: 图中是什么？\nOptions:\nA. 猫\nB. 狗\n请直接回答选项字母。")]),
    ]
    assert texts(tiny_model, files["POPE"], 1) == [
        (0, [IMAGE, text("Is there a dog in the image? Please answer yes or no.")])]
    assert texts(tiny_model, files["HallusionBench"], 1) == [
        ("VD_chart_1_0_0_0", [IMAGE, text("Is the bar red? Please answer yes or no.")])]
    assert texts(tiny_model, files["MME"], 1) == [(0, [IMAGE, text("Is this a cat? Please answer yes or no.")])]
    assert texts(tiny_model, files["TextVQA_VAL"], 1) == [
        (0, [IMAGE, text("What is written on sign 0?" + SHORT_WORDS)])]
    assert texts(tiny_model, files["OCRBench"], 1) == [
        (0, [IMAGE, text("What is the text in the image?" + SHORT_WORDS)])]
    assert texts(tiny_model, files["MMMU_DEV_VAL"], 1) == [(1, [IMAGE, IMAGE, text(
        f"Question: Compare <image 2> with <image 1>. Which is larger?\nOptions:\nA. <image 1>\nB. the second\n{EN}")])]
    # a file VLMEvalKit does not know by name: the dataset's prompt
    assert texts(tiny_model, files["mine"], 1)[0][1][1]["text"].endswith(f"B. dog\n{EN} \n")


def test_qwen2_5_vl_gets_the_datasets_prompts(tiny_model_25, files):
    assert texts(tiny_model_25, files["MMBench_DEV_EN"]) == [
        (0, [IMAGE, text(f"Hint: Look closely.\nQuestion: What is shown?\nOptions:\nA. cat\nB. dog\n{EN} \n")]),
        (1, [IMAGE, text(f"Question: 图中是什么？\nOptions:\nA. 猫\nB. 狗\n{EN} \n")]),
    ]
    assert texts(tiny_model_25, files["POPE"], 1) == [(0, [IMAGE, text("Is there a dog in the image?")])]
    assert texts(tiny_model_25, files["TextVQA_VAL"], 1) == [
        (0, [IMAGE, text("What is written on sign 0?" + SINGLE_WORD)])]
    assert texts(tiny_model_25, files["OCRBench"], 1) == [(0, [IMAGE, text("What is the text in the image?")])]
    assert texts(tiny_model_25, files["MMMU_DEV_VAL"], 1) == [(1, [
        text("Question: Compare "), IMAGE, text(" with "), IMAGE, text(". Which is larger?\nOptions:\nA. "), IMAGE,
        text(f"\nB. the second\n{EN} \n")])]


def test_prompts_command_writes_json_lines_with_the_chat_template_text(tiny_model, files, tmp_path):
    out = tmp_path / "prompts.jsonl"
    done = subprocess.run([sys.executable, "-m", "ddp_eval", "prompts", "--set", f"model.path={tiny_model}", "--set",
                           f"data.path={files['POPE']}", "--limit", "2", "--render", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1] and lines[0]["benchmark"] == "POPE"
    assert lines[0]["messages"] == [IMAGE, text("Is there a dog in the image? Please answer yes or no.")]
    assert lines[0]["rendered"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Is there a dog in the image? Please answer yes or no.<|im_end|>\n"
        "<|im_start|>assistant\n")


def scored(path, *args):
    done = subprocess.run([sys.executable, "-m", "ddp_eval", "score", str(path), "--output-dir",
                           str(path.parent / "out"), *args], capture_output=True, text=True)
    return done, path.parent / "out"


def test_score_takes_the_benchmark_from_a_vlmevalkit_file_name(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "image"} for r in hallusion_rows()]
    path = tmp_path / "Qwen2-VL-2B-Instruct_HallusionBench.xlsx"
    pd.DataFrame(rows).assign(prediction=["Yes", "No", "No", "No", "no"]).to_excel(path, index=False)
    done, out = scored(path)
    assert done.returncode == 0, done.stderr
    assert "Overall mean(aAcc,fAcc,qAcc): 71.11" in done.stdout
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(table["index"])[:1] == ["VD_chart_1_0_0_0"] and list(table["hit"]) == [1, 1, 0, 1, 1]


def test_score_with_an_explicit_benchmark_and_with_the_wrong_one(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "image"} for r in textvqa_rows()]
    path = tmp_path / "preds.tsv"
    pd.DataFrame(rows).assign(prediction=["stop", "exit", "no", "no"]).to_csv(path, sep="\t", index=False)
    done, out = scored(path, "--benchmark", "TextVQA_VAL")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["scores"] == {"Overall": 50.0}
    done, _ = scored(path, "--benchmark", "POPE")
    assert done.returncode == 2 and "cannot score with the yorn task" in done.stderr
    assert "free-text answers (task vqa" in done.stderr
    done, _ = scored(path, "--benchmark", "Pope")
    assert done.returncode == 2 and "did you mean POPE?" in done.stderr
