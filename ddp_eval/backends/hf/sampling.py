"""Sampling per row for `generate`: each row of a batch draws its tokens from its own generator, seeded by
(run.seed, row index) (core/presets.py: row_seed), so a sampled reply is the same whatever batch the row is
in, on any number of ranks, and after a resume.

transformers' `generate` samples the whole batch from one global generator. Instead, `generate` runs greedy
(do_sample=False) with one extra logits processor, `RowSampler`, that applies the presence penalty and
transformers' own temperature, top-k and top-p warpers, draws one token per row from that row's generator and
leaves only the drawn token finite: the greedy step then picks exactly the drawn token.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ddp_eval.config import GenerationConfig
from ddp_eval.core.presets import row_seed


class RowSampler(LogitsProcessor):
    """Presence penalty -> temperature -> top-k -> top-p -> one draw per row from the row's own generator."""

    def __init__(self, gen: GenerationConfig, seeds: list[int], prompt_length: int) -> None:
        self.presence_penalty = gen.presence_penalty
        self.prompt_length = prompt_length  # left-padded prompts: generated tokens start here in every row
        self.warpers = [TemperatureLogitsWarper(gen.temperature)]
        if gen.top_k is not None:
            self.warpers.append(TopKLogitsWarper(gen.top_k))
        if gen.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(gen.top_p))
        self.seeds = seeds
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        scores = scores.float()
        generated = input_ids[:, self.prompt_length:]
        if self.presence_penalty and generated.numel():
            seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
            scores = scores - self.presence_penalty * seen
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        drawn = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        picked = torch.full_like(scores, -float("inf"))
        return picked.scatter_(1, drawn[:, None], 0.0)


def row_sampler(gen: GenerationConfig, seed: int, indices: tuple[int, ...], prompt_length: int) -> LogitsProcessorList:
    """The `logits_processor` argument of `generate` for a batch of rows `indices` (in batch order)."""
    return LogitsProcessorList([RowSampler(gen, [row_seed(seed, i) for i in indices], prompt_length)])
