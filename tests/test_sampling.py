"""Generation presets and per-row seeded sampling: a preset fills only what the user left unset, and a sampled
reply depends on (run.seed, row index) alone, not on the batch a row is in, the world size or a resume."""

from __future__ import annotations

import subprocess

import pytest
import torch
from helpers import env, predictions
from test_torchrun import torchrun_cmd

from ddp_eval.backends.hf.sampling import RowSampler
from ddp_eval.config import GenerationConfig, load_config
from ddp_eval.core.presets import PRESETS, row_seed
from ddp_eval.errors import DdpEvalError
from ddp_eval.run.runner import Options, run

BASE = ["model.path=/m", "data.path=x.tsv"]
# Hot enough that the tiny random model's replies vary from seed to seed.
HOT = ("generation.greedy=false", "generation.temperature=8.0", "generation.top_k=50")


def test_a_preset_fills_only_the_generation_keys_left_unset():
    cfg = load_config(None, [*BASE, "generation.preset=qwen3_vl_instruct", "generation.max_new_tokens=64"])
    gen = cfg.generation
    assert (gen.greedy, gen.temperature, gen.top_p, gen.top_k, gen.repetition_penalty, gen.presence_penalty) == \
        (False, 0.7, 0.8, 20, 1.0, 0.0)
    assert gen.max_new_tokens == 64  # set by the user: kept
    vllm = load_config(None, [*BASE, "generation.preset=qwen3_vl_instruct_vllm"]).generation
    assert (vllm.presence_penalty, vllm.max_new_tokens) == (1.5, 16384)
    assert load_config(None, BASE).generation.greedy is True  # greedy stays every family's default


def test_an_unknown_preset_and_bad_sampling_values_name_the_key():
    with pytest.raises(DdpEvalError, match=r"generation\.preset.*qwen3_vl_instruct"):
        load_config(None, [*BASE, "generation.preset=qwen3_vl_fast"])
    with pytest.raises(DdpEvalError, match=r"generation\.top_k"):
        load_config(None, [*BASE, "generation.greedy=false", "generation.top_k=0"])
    with pytest.raises(DdpEvalError, match=r"generation\.presence_penalty"):
        load_config(None, [*BASE, "generation.presence_penalty=3"])
    with pytest.raises(DdpEvalError, match=r"generation\.presence_penalty=0"):
        load_config(None, [*BASE, "generation.preset=qwen3_vl_instruct_vllm", "generation.greedy=true",
                           "model.reuse_prefix=true"])


def test_row_seeds_are_stable_and_distinct():
    assert row_seed(0, 7) == row_seed(0, 7)
    seeds = {row_seed(s, i) for s in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)


def draws(sampler_rows: list[int], scores: torch.Tensor, steps: int = 5, **gen) -> list[list[int]]:
    """Tokens each row draws over `steps` steps from fixed scores (the prompt is one token long)."""
    sampler = RowSampler(GenerationConfig(greedy=False, **gen), [row_seed(0, i) for i in sampler_rows], 1)
    ids = torch.zeros(len(sampler_rows), 1, dtype=torch.long)
    for _ in range(steps):
        out = sampler(ids, scores[:len(sampler_rows)].clone())
        assert torch.isfinite(out).sum(-1).eq(1).all()  # exactly one token left for the greedy step
        ids = torch.cat([ids, out.argmax(-1, keepdim=True)], dim=1)
    return ids[:, 1:].tolist()


def test_a_row_draws_the_same_tokens_alone_and_in_any_batch():
    torch.manual_seed(0)
    scores = torch.randn(1, 64).repeat(3, 1)
    together = draws([5, 9, 2], scores, temperature=2.0)
    assert [draws([i], scores, temperature=2.0)[0] for i in (5, 9, 2)] == together
    assert draws([2, 5], scores, temperature=2.0) == [together[2], together[0]]
    assert len({tuple(t) for t in together}) > 1  # rows of one batch do not share a stream


def test_top_k_and_the_presence_penalty_act_before_the_draw():
    scores = torch.tensor([[0.0, 5.0, 4.9, -9.0]])
    assert draws([0], scores, steps=3, top_k=1) == [[1, 1, 1]]
    # top-k 1 after a penalty of 1 (once per token, however often it was drawn): 5 -> 4 puts token 1 below
    # token 2 (4.9); once both are penalised, token 1 (4.0) is above token 2 (3.9) again.
    assert draws([0], scores, steps=3, top_k=1, presence_penalty=1.0) == [[1, 2, 1]]


def test_sampled_predictions_do_not_depend_on_the_batch_or_the_world_size(make_config, single_process,
                                                                         config_file, tmp_path):
    by_size = {}
    for size in (1, 8):
        cfg = make_config(*HOT, f"run.batch_size={size}", f"run.output_dir={tmp_path / str(size)}")
        run(cfg, single_process, Options(show_progress=False))
        by_size[size] = predictions(tmp_path / str(size))
    assert by_size[1] == by_size[8]
    other = make_config(*HOT, "run.batch_size=8", "run.seed=1", f"run.output_dir={tmp_path / 'seed1'}")
    run(other, single_process, Options(show_progress=False))
    assert predictions(tmp_path / "seed1") != by_size[8]  # the seed matters
    # 2 gloo ranks, batches of 4 (config_file): the same replies again.
    done = subprocess.run(torchrun_cmd(2, config_file, *HOT, f"run.output_dir={tmp_path / 'w2'}"), env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert predictions(tmp_path / "w2") == by_size[1]


def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        load_config(None, [*BASE, f"generation.preset={name}"])
