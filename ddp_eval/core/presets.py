"""Named generation presets (`generation.preset`) and the per-row sampling seed. Pure: no torch, no I/O.

Greedy decoding is every family's default: deterministic, and the same on any number of ranks. A preset
reproduces the generation settings VLMEvalKit runs a checkpoint with where those sample
(its `qwen3vl_series` in vlmeval/config.py, and vlmeval/vlm/qwen3_vl/model.py at 0b71523):

- `qwen3_vl_instruct`: Qwen3-VL-2B/4B/8B/30B-A3B-Instruct, which VLMEvalKit runs through transformers
  (use_vllm=False). Its configs list presence_penalty=1.5 too, but that path passes only temperature, top_p,
  top_k, repetition_penalty and max_new_tokens to `generate`: no presence penalty is applied there.
- `qwen3_vl_instruct_vllm`: Qwen3-VL-32B / 235B-A22B-Instruct, which it runs on vLLM, whose
  sampler does apply presence_penalty=1.5 (to the tokens generated so far, before temperature).
- `qwen3_vl_thinking`: the Thinking checkpoints (temperature 1.0, top_p 0.95, top_k 20, presence_penalty 0).

A preset fills only the generation keys the user did not set: `generation.max_new_tokens=64` with a preset
keeps 64. Sampled replies are drawn per row from a generator seeded by (run.seed, row index), so they do not
depend on the batch a row lands in, the world size, or a resume.
"""

from __future__ import annotations

import hashlib
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "qwen3_vl_instruct": {"greedy": False, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                          "repetition_penalty": 1.0, "presence_penalty": 0.0, "max_new_tokens": 4096},
    "qwen3_vl_instruct_vllm": {"greedy": False, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                               "repetition_penalty": 1.0, "presence_penalty": 1.5, "max_new_tokens": 16384},
    "qwen3_vl_thinking": {"greedy": False, "temperature": 1.0, "top_p": 0.95, "top_k": 20,
                          "repetition_penalty": 1.0, "presence_penalty": 0.0, "max_new_tokens": 40960},
}


def preset_values(name: str) -> dict[str, Any]:
    """The generation keys preset `name` sets; KeyError for an unknown name (config.py names the key)."""
    return dict(PRESETS[name])


def row_seed(seed: int, index: int) -> int:
    """The sampling seed of row `index` in a run seeded `seed`: a stable 63-bit mix of the two, so rows
    with neighbouring indices (or runs with neighbouring seeds) do not draw correlated streams."""
    digest = hashlib.sha256(f"ddp_eval-row-seed:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
