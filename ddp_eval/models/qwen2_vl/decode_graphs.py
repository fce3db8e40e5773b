"""Greedy decode steps at fixed shapes, replayed from CUDA graphs.

A decode step runs the language model on one token per row. For Qwen2-VL-2B that is a few hundred
small kernels: the host needs ~30 ms to launch them, and the GPU finishes them in a few. A CUDA
graph records the launches once and replays them with one call. A graph needs every tensor of the
step at a fixed address and shape, so the step runs on static buffers: the KV cache with room for
the prompt plus the new tokens, the key padding mask, the token and its rotary position. Each step
writes its key and value into the next free column and unmasks that column. Columns that are not
written yet stay masked, so they add nothing to the attention.

The room is the prompt plus up to `ROOM_STEP` new tokens, rounded up to a multiple of `ROOM_STEP`,
so batches of similar length share a graph; a batch that decodes further moves to a step with more
room (memory follows the replies' length, not max_new_tokens). Every layer's keys and values live in
one buffer that all graphs reuse (one batch decodes at a time). On the CPU the same static step runs
eagerly, without a graph, so tests can compare it with the plain loop.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ddp_eval.errors import DdpEvalError
from ddp_eval.models.qwen2_vl.positions import text_positions

log = logging.getLogger(__name__)

ROOM_STEP = 256  # KV room granularity in tokens: one graph per (rows, room) met


@dataclass
class _StaticKV:
    """The cache object transformers' attention layers update, on fixed buffers: `update` writes the
    step's key and value at `column` and returns the whole buffer (unwritten columns are masked)."""

    keys: list[torch.Tensor]  # per layer (rows, kv_heads, room, head_dim)
    values: list[torch.Tensor]
    column: torch.Tensor  # (1,) long: where this step's token goes

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.column, key_states)
        self.values[layer_idx].index_copy_(2, self.column, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:  # only asked when no positions are given
        return self.keys[layer_idx].shape[2]


class DecodeStep:
    """One decode step for a batch of `rows` rows and `room` key columns, on static buffers."""

    def __init__(self, decoder: GraphedDecoder, rows: int, room: int, keys, values) -> None:
        device = keys[0].device
        self.decoder = decoder
        self.kv = _StaticKV(keys, values, torch.zeros(1, dtype=torch.long, device=device))
        self.mask = torch.zeros(rows, room, dtype=torch.bool, device=device)
        self.token = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(rows, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        self.used = 0  # key columns holding a token (host-side count, no sync)

    @property
    def room(self) -> int:
        return self.mask.shape[1]

    def load(self, cache, mask: torch.Tensor, position: torch.Tensor) -> None:
        """Take over the prefill's state: its keys and values, its mask, each row's next position."""
        length = mask.shape[1]
        for layer, (keys, values) in enumerate(_layers_of(cache)):
            self.kv.keys[layer][:, :, :length].copy_(keys)
            self.kv.values[layer][:, :, :length].copy_(values)
        self.mask.zero_()
        self.mask[:, :length] = mask.bool()
        self.kv.column.fill_(length)
        self.position.copy_(position)
        self.used = length

    def take_over(self, smaller: DecodeStep) -> None:
        """Continue where a step with less room stopped."""
        room = smaller.room
        for mine, theirs in zip(self.kv.keys + self.kv.values, smaller.kv.keys + smaller.kv.values):
            mine[:, :, :room].copy_(theirs)
        self.mask.zero_()
        self.mask[:, :room] = smaller.mask
        self.kv.column.copy_(smaller.kv.column)
        self.position.copy_(smaller.position)
        self.used = smaller.used

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        """Logits for the token after `token` (rows,), then advance one column. The result is a
        buffer that the next call overwrites."""
        self.token.copy_(token[:, None])
        self.used += 1
        if self.graph is None:
            return self.run()
        self.graph.replay()
        return self.logits

    def run(self) -> torch.Tensor:
        self.mask.index_fill_(1, self.kv.column, True)
        d = self.decoder
        # Already the 4D mask: transformers uses it as it is (Qwen3-VL's text model takes no per-layer-type
        # mapping of masks, and with full attention alone the mapping would hold this one mask).
        hidden = d.text_model(input_ids=self.token, attention_mask=self.mask[:, None, None, :],
                              position_ids=text_positions(self.position[:, None]), use_cache=True,
                              **{d.cache_arg: self.kv}).last_hidden_state
        logits = d.lm_head(hidden[:, -1, :])
        self.kv.column.add_(1)
        self.position.add_(1)
        return logits


class GraphedDecoder:
    """Decode steps of the language model on static buffers, captured as CUDA graphs on a GPU."""

    def __init__(self, model: nn.Module) -> None:
        self.text_model, self.lm_head = _text_parts(model)
        config = self.text_model.config
        types = set(getattr(config, "layer_types", None) or ["full_attention"])
        if types != {"full_attention"}:
            raise DdpEvalError(f"model.decode_graphs: the language model has {sorted(types)} layers; only full "
                               "attention is supported; set model.decode_graphs=false")
        params = inspect.signature(self.text_model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.room_step = ROOM_STEP
        self.steps: dict[tuple[int, int], DecodeStep] = {}
        self.storage: list[torch.Tensor] = []  # per layer, keys then values, flat; all steps view it
        self.pool = None
        if next(model.parameters()).device.type != "cuda":
            log.info("model.decode_graphs: not on a CUDA device, so the static decode steps run without graphs")

    def start(self, cache, mask: torch.Tensor, position: torch.Tensor, max_new_tokens: int) -> DecodeStep:
        """The step for this batch's shape, loaded with its prefill state (`cache`: a DynamicCache)."""
        rows, length = mask.shape
        room = _round_up(length + min(max_new_tokens - 1, self.room_step), self.room_step)
        step = self.steps.get((rows, room))
        if step is None:
            step = self._new_step(rows, room, _layers_of(cache))
        step.load(cache, mask, position)
        return step

    def with_room(self, step: DecodeStep) -> DecodeStep:
        """`step` if it has a free key column, else a step with more room that continues from it."""
        if step.used < step.room:
            return step
        rows = step.mask.shape[0]
        bigger = self._new_step(rows, step.room + self.room_step, list(zip(step.kv.keys, step.kv.values)),
                                new_storage=True)  # not the buffers `step` still reads
        bigger.take_over(step)
        return bigger

    def _new_step(self, rows: int, room: int, layers, new_storage: bool = False) -> DecodeStep:
        first = layers[0][0]
        # per buffer (each layer's keys, then its values): (rows, kv_heads, room, head_dim)
        shapes = [(rows, t.shape[1], room, t.shape[3]) for pair in layers for t in pair]
        need = max(s[0] * s[1] * s[2] * s[3] for s in shapes)
        if new_storage or not self.storage or self.storage[0].numel() < need:
            # New buffers, and the steps that viewed the old ones go, with their graphs. Their memory
            # pool goes too: torch refuses a capture into a pool whose graphs are all gone.
            self.steps.clear()
            self.pool = None
            self.storage = []  # freed before the new ones are allocated, unless a step still views them
            self.storage = [torch.zeros(need, dtype=first.dtype, device=first.device) for _ in shapes]
        views = [buf[:s[0] * s[1] * s[2] * s[3]].view(s) for buf, s in zip(self.storage, shapes)]
        step = DecodeStep(self, rows, room, views[0::2], views[1::2])
        if first.is_cuda:
            self._capture(step)
            log.info("decode step captured as a CUDA graph for %d rows x %d key columns", rows, room)
        self.steps[(rows, room)] = step
        return step

    def _capture(self, step: DecodeStep) -> None:
        device = step.token.device
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                step.run()  # outside the capture: lazy initialisation (cuBLAS workspaces, kernel loading)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the DataLoader's pinning thread keeps allocating host memory meanwhile.
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                step.logits = step.run()
        step.graph = graph
        self.pool = graph.pool()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _text_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    inner = getattr(model, "model", None)
    text_model = getattr(inner, "language_model", None)
    lm_head = getattr(model, "lm_head", None)
    if text_model is None or lm_head is None:
        raise DdpEvalError(f"model.decode_graphs: {type(model).__name__} has no model.language_model and lm_head "
                           "to decode with; set model.decode_graphs=false")
    return text_model, lm_head


def _layers_of(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers DynamicCache."""
    layers = getattr(cache, "layers", None)
    if not layers or getattr(layers[0], "keys", None) is None:
        raise DdpEvalError(f"model.decode_graphs: cannot read the prefill's {type(cache).__name__} "
                           "(this transformers version keeps it differently); set model.decode_graphs=false")
    return [(layer.keys, layer.values) for layer in layers]
