"""Greedy decoding from shared prefixes: prefill each prefix once, copy its KV cache to every row
that starts with it, run each row's own tokens, then decode.

The math is the one `generate` does on the full rows (same tokens, same rotary positions, same
causal mask); only the prefix's keys and values are computed once instead of once per row. The loop
is plain greedy decoding, so it is only used where `generate` would be plain greedy too: the config
requires greedy decoding and repetition_penalty 1.0, and a checkpoint whose generation_config asks
for other logits processors is refused.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ddp_eval.errors import DdpEvalError
from ddp_eval.models.qwen2_vl.decode_graphs import GraphedDecoder
from ddp_eval.models.qwen2_vl.positions import text_positions
from ddp_eval.models.qwen2_vl.preprocess import SuffixInputs

# generation_config settings that would change greedy choices, and the value that leaves them off.
_NEUTRAL = {"no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "suppress_tokens": (None,),
            "begin_suppress_tokens": (None,), "sequence_bias": (None,), "min_new_tokens": (None, 0),
            "min_length": (None, 0), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,)}


class PrefixDecoder:
    def __init__(self, model: nn.Module, decode_graphs: bool = False) -> None:
        self.model = model
        # Decode steps on static buffers (CUDA graphs on a GPU) instead of transformers' growing cache.
        self.graphed = GraphedDecoder(model) if decode_graphs else None
        config = model.generation_config
        for name, neutral in _NEUTRAL.items():
            if getattr(config, name, None) not in neutral:
                raise DdpEvalError(f"model.reuse_prefix: the checkpoint's generation_config sets {name}="
                                   f"{getattr(config, name)!r}, which plain greedy decoding from a shared prefix "
                                   "does not apply; set model.reuse_prefix=false")
        eos = config.eos_token_id
        self.eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), dtype=torch.long)
        self.pad = config.pad_token_id if config.pad_token_id is not None else int(self.eos[0]) if len(self.eos) else 0
        # transformers renamed forward's `past_key_values` to `cache`; use whichever this version has.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def first_logits(self, prefix_inputs, suffix: SuffixInputs):
        """Next-token logits at each row's last prompt token, and the state to decode on from."""
        out = self.model(**prefix_inputs, use_cache=True, logits_to_keep=1)
        cache = _cache_of(out)
        cache.batch_select_indices(suffix.owner)  # one copy of its prefix's keys and values per row
        mask = torch.cat([prefix_inputs["attention_mask"][suffix.owner], suffix.attention_mask], dim=1)
        offsets = (suffix.attention_mask.cumsum(-1) - 1).clamp(min=0)
        positions = suffix.position_start[:, None] + offsets
        out = self.model(input_ids=suffix.input_ids, attention_mask=_causal(mask, suffix.input_ids.shape[1]),
                         position_ids=text_positions(positions), use_cache=True, logits_to_keep=1,
                         **{self.cache_arg: cache})
        return out.logits[:, -1, :], (cache, mask, positions[:, -1] + 1)

    def generate(self, prefix_inputs, suffix: SuffixInputs, max_new_tokens: int) -> torch.Tensor:
        """Greedy new tokens per row (rows that finished are padded), shape (rows, steps)."""
        logits, (cache, mask, position) = self.first_logits(prefix_inputs, suffix)
        step = None
        if self.graphed is not None and max_new_tokens > 1:
            step = self.graphed.start(cache, mask, position, max_new_tokens)
            cache = mask = position = None  # the static buffers hold the state now
        eos = self.eos.to(logits.device)
        done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        finished = AllDone(lagged=logits.is_cuda)
        tokens = []
        for i in range(max_new_tokens):
            token = torch.where(done, self.pad, logits.argmax(-1))
            tokens.append(token)
            done |= torch.isin(token, eos)
            if i + 1 == max_new_tokens or finished.after(done):
                break
            if step is not None:
                step = self.graphed.with_room(step)
                logits = step(token)
                continue
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = self.model(input_ids=token[:, None], attention_mask=_causal(mask, 1),
                             position_ids=text_positions(position[:, None]), use_cache=True, **{self.cache_arg: cache})
            logits, position = out.logits[:, -1, :], position + 1
        return torch.stack(tokens, dim=1)


class AllDone:
    """Whether every row has finished, without making the host wait for the step just queued.

    Lagged (on CUDA), the answer for step s is copied to the host while the GPU works, and the loop
    stops on the answer of step s-1: the host keeps queueing the next step instead of idling while the
    GPU drains. The price is at most one extra step of padding once all rows are done.
    """

    def __init__(self, lagged: bool) -> None:
        self.lagged = lagged
        self.pending = None

    def after(self, done: torch.Tensor) -> bool:
        if not self.lagged:
            return bool(done.all())
        earlier, self.pending = self.pending, _to_host(done.all())
        if earlier is None:
            return False
        flag, event = earlier
        if event is not None:
            event.synchronize()
        return bool(flag)


def _to_host(value: torch.Tensor):
    """A host copy of `value` that is being made, and the event that marks it made (None: made)."""
    if not value.is_cuda:
        return value.clone(), None
    flag = torch.empty((), dtype=value.dtype, pin_memory=True)
    flag.copy_(value, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return flag, event


def _causal(keys: torch.Tensor, queries: int) -> torch.Tensor:
    """The attention mask of the last `queries` positions, (rows, 1, queries, keys), boolean: each sees the
    keys that are not padding, up to its own position. It is the mask transformers would build from
    the 2D one; built here, it spares transformers' check for padding, a host sync on every step."""
    length = keys.shape[1]
    key_position = torch.arange(length, device=keys.device)
    query_position = torch.arange(length - queries, length, device=keys.device)
    causal = key_position[None, :] <= query_position[:, None]
    return keys.bool()[:, None, None, :] & causal[None, None]


def _cache_of(output):
    for name in ("cache", "past_key_values"):
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    raise DdpEvalError("model.reuse_prefix: the model returned no KV cache; set model.reuse_prefix=false")
