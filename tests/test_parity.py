"""The parity check: rows spread over the plan, predicted again alone through the plain path, and the
agreement in the log, metrics.json and report.md."""

from __future__ import annotations

import json
import logging

import pytest

from ddp_eval.core.parity import parity_rows, summarize
from ddp_eval.core.plan import PlannedBatch
from ddp_eval.run.parity import ParityCheck, parity_count
from ddp_eval.run.runner import Options, run


def test_parity_rows_are_spread_over_the_plan_and_capped_by_its_size():
    plan = [PlannedBatch(b, tuple(range(10 * b, 10 * b + 10))) for b in range(4)]
    chosen = parity_rows(plan, 4)
    assert chosen == {0, 10, 20, 30}
    assert parity_rows(plan, 100) == set(range(40)) and parity_rows(plan, 0) == set()


def test_parity_summary_counts_each_row_once_and_flags_low_agreement():
    checks = [{"index": 1, "same": True}, {"index": 2, "same": False}, {"index": 1, "same": True}]
    summary = summarize(checks, min_agreement=0.9)
    assert summary["rows"] == 2 and summary["agreement"] == 0.5 and not summary["ok"] and summary["differing"] == [2]
    assert summarize([], 0.9) is None


def test_parity_defaults_to_cuda_only_and_never_when_sampling():
    assert parity_count(None, "cuda", greedy=True) > 0 and parity_count(None, "cpu", greedy=True) == 0
    assert parity_count(5, "cpu", greedy=True) == 5 and parity_count(5, "cuda", greedy=False) == 0


@pytest.mark.parametrize("workers", [0, 2])  # with workers, they prepare the parity rows after the batches
def test_run_reports_full_parity_of_the_fast_path_in_float32(make_config, single_process, tmp_path, workers):
    cfg = make_config("run.parity_rows=6", "model.reuse_prefix=true", "model.decode_graphs=true", "run.batch_size=8",
                      f"run.num_workers={workers}")
    metrics = run(cfg, single_process, Options(show_progress=False))
    out = tmp_path / "out"
    parity = json.loads((out / "metrics.json").read_text())["parity"]
    assert metrics["parity"] == parity
    assert parity["rows"] == 6 and parity["same"] == 6 and parity["ok"] and parity["differing"] == []
    assert "parity: 6/6 rows predicted alone" in (out / "report.md").read_text()


def test_parity_below_the_threshold_warns_and_names_the_rows(make_config, single_process, tmp_path, monkeypatch,
                                                            caplog):
    monkeypatch.setattr(logging.getLogger("ddp_eval"), "propagate", True)
    keep = ParityCheck.keep

    def keep_a_wrong_reply(self, part, batch_id, records):  # as if the batched path had changed the rows' replies
        keep(self, part, batch_id, [{**r, "prediction": r["prediction"] + " (batched)"} for r in records])

    monkeypatch.setattr(ParityCheck, "keep", keep_a_wrong_reply)
    run(make_config("run.parity_rows=3"), single_process, Options(show_progress=False))
    parity = json.loads((tmp_path / "out" / "metrics.json").read_text())["parity"]
    assert parity["same"] == 0 and not parity["ok"] and len(parity["differing"]) == 3
    assert "below run.parity_min_agreement=0.9" in caplog.text
    assert "check the batched path" in (tmp_path / "out" / "report.md").read_text()


def test_token_cost_estimate_reads_the_checkpoints_sizes(tiny_model, tmp_path):
    from ddp_eval.models.checkpoint import bytes_per_prompt_token

    assert bytes_per_prompt_token(tiny_model) > 0
    (tmp_path / "config.json").write_text('{"model_type": "x"}')
    assert bytes_per_prompt_token(tmp_path) is None
    qwen2_vl_2b = {"text_config": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                                   "num_key_value_heads": 2, "intermediate_size": 8960},
                   "vision_config": {"embed_dim": 1280, "hidden_size": 1536, "mlp_ratio": 4, "spatial_merge_size": 2}}
    (tmp_path / "config.json").write_text(json.dumps(qwen2_vl_2b))
    per_token = bytes_per_prompt_token(tmp_path, 2)
    assert 100_000 < per_token < 300_000  # ~1/7 of 1 GiB per 1,000 tokens: 64 MMBench rows fit twice in 40 GiB
