"""The parity check: rows spread over the plan, predicted again alone through the plain path, and the
agreement in the log, metrics.json and report.md."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pandas as pd
import pytest

from ddp_eval.config import load_config
from ddp_eval.core.parity import parity_rows, summarize
from ddp_eval.core.plan import PlannedBatch
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.parity import ParityCheck, alongside_planned, parity_count
from ddp_eval.run.runner import Options, run
from ddp_eval.store.shards import done_indices, read_shards


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


# With workers they prepare the parity rows after the batches, or after the first batch when a second thread
# predicts them alongside the batches (the default with CUDA; forced here on the CPU).
@pytest.mark.parametrize(("workers", "alongside"), [(0, "false"), (2, "false"), (0, "true"), (2, "true")])
def test_run_reports_full_parity_of_the_fast_path_in_float32(make_config, single_process, tmp_path, workers,
                                                             alongside, monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("ddp_eval"), "propagate", True)
    caplog.set_level(logging.INFO, logger="ddp_eval")
    cfg = make_config("run.parity_rows=6", "model.reuse_prefix=true", "model.decode_graphs=true", "run.batch_size=8",
                      f"run.num_workers={workers}", f"run.parity_alongside={alongside}")
    metrics = run(cfg, single_process, Options(show_progress=False))
    out = tmp_path / "out"
    parity = json.loads((out / "metrics.json").read_text())["parity"]
    assert metrics["parity"] == parity
    assert parity["rows"] == 6 and parity["same"] == 6 and parity["ok"] and parity["differing"] == []
    assert "parity: 6/6 rows predicted alone" in (out / "report.md").read_text()
    assert ("alongside the batches" in caplog.text) == (alongside == "true")
    assert metrics["rows"] == len(pd.read_csv(out / "predictions.tsv", sep="\t"))  # every row once, none extra


def test_an_error_in_the_parity_thread_fails_the_run_after_every_row_is_written(make_config, single_process, tmp_path,
                                                                              monkeypatch):
    def broken(self, key, prepared):
        raise RuntimeError("parity thread broke")

    monkeypatch.setattr(ParityCheck, "_predict", broken)
    cfg = make_config("run.parity_rows=3", "run.batch_size=8", "run.parity_alongside=true")
    with pytest.raises(RuntimeError, match="parity thread broke"):
        run(cfg, single_process, Options(show_progress=False))
    assert len(done_indices(read_shards(tmp_path / "out"))) == 78  # every prediction kept for the re-run
    monkeypatch.undo()
    assert run(cfg, single_process, Options(show_progress=False))["rows"] == 78  # resumes: nothing left to predict


def test_parity_alongside_needs_a_family_that_names_its_per_call_state():
    known = SimpleNamespace(name="qwen2_vl", thread_state=("rope_deltas",))
    unknown = SimpleNamespace(name="generic", thread_state=None)
    assert alongside_planned(None, "cuda", known, compile_vision=False)
    assert not alongside_planned(None, "cpu", known, False) and not alongside_planned(None, "cuda", known, True)
    assert alongside_planned(True, "cpu", known, False) and not alongside_planned(False, "cuda", known, False)
    assert not alongside_planned(None, "cuda", unknown, False)
    with pytest.raises(DdpEvalError, match="run.parity_alongside=true: the generic family"):
        alongside_planned(True, "cuda", unknown, False)
    with pytest.raises(DdpEvalError, match="model.compile_vision=true"):
        load_config(None, ["model.path=m", "data.path=d", "run.parity_alongside=true", "model.compile_vision=true"])


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


def test_a_row_that_fails_alone_is_not_counted_as_a_disagreement(make_config, single_process, tmp_path, monkeypatch,
                                                                caplog):
    monkeypatch.setattr(logging.getLogger("ddp_eval"), "propagate", True)
    predict = ParityCheck._predict

    def first_fails(self, key, prepared):  # as if the row ran out of memory alone
        if key == self.order[0]:
            self.alone[key] = None
            return
        predict(self, key, prepared)

    monkeypatch.setattr(ParityCheck, "_predict", first_fails)
    metrics = run(make_config("run.parity_rows=4", "run.parity_alongside=true"), single_process,
                  Options(show_progress=False))
    assert metrics["parity"]["rows"] == 3 and metrics["parity"]["same"] == 3 and metrics["parity"]["ok"]
    assert "1 row(s) failed when predicted alone and are not compared" in caplog.text
