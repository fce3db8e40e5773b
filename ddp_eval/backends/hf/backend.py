"""The transformers backend: prepared batches -> replies on one device, with CUDA out-of-memory handled
by splitting the batch.

Replies come from `generate`, or from the model family's fast path where it takes the batch (shared
prefixes); `choice_logits` picks the best-scoring choice label from one forward pass. A batch that
runs out of memory is split in halves (re-preprocessed) and retried, down to one row; only a single
row that still does not fit is recorded as failed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from ddp_eval.backends.base import Record
from ddp_eval.backends.hf.sampling import row_sampler
from ddp_eval.config import Config, GenerationConfig
from ddp_eval.core.batch import PreparedBatch
from ddp_eval.errors import DdpEvalError
from ddp_eval.models.base import FastPath
from ddp_eval.models.loading import check_inputs_device

log = logging.getLogger(__name__)


class HFBackend:
    """The model, its processor and generation settings on this rank's device."""

    def __init__(self, model, processor, device: torch.device, gen_kwargs: dict[str, Any], mode: str = "generate",
                 fast: FastPath | None = None, context: int | None = None,
                 sampling: tuple[GenerationConfig, int] | None = None) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.gen_kwargs = gen_kwargs
        self.mode = mode
        self.fast = fast
        self.context = context  # the language model's context in tokens; longer prompts fail, not crash
        self.sampling = sampling  # (generation settings, run.seed): rows sample from their own generators
        self._checked = False
        self._label_ids: dict[str, int] = {}

    def predict(self, prepared: PreparedBatch, reprepare: Callable[[tuple[int, ...]], PreparedBatch]) -> list[Record]:
        """Records for every row; rows whose prompt exceeds the model's context are recorded failed."""
        too_long = self._too_long(prepared)
        if too_long:
            failed = {**prepared.failed, **too_long}
            records = [{"index": i, "prediction": "", "error": reason} for i, reason in failed.items()]
            keep = tuple(i for i in prepared.indices if i not in too_long)
            return records + (predict_batch(self.replies, reprepare(keep), reprepare) if keep else [])
        return predict_batch(self.replies, prepared, reprepare)

    def _too_long(self, prepared: PreparedBatch) -> dict[int, str]:
        if self.context is None or prepared.inputs is None or not prepared.indices:
            return {}
        if self.fast is not None and self.fast.takes(prepared):
            lengths = self.fast.row_tokens(prepared)
        else:
            lengths = prepared.inputs["attention_mask"].sum(-1).tolist()
        return {i: f"the prompt has {n} tokens, more than the model's context of {self.context}"
                for i, n in zip(prepared.indices, lengths) if n > self.context}

    @torch.inference_mode()
    def replies(self, prepared: PreparedBatch) -> list[str]:
        inputs = prepared.inputs.to(self.device, non_blocking=True)
        if not self._checked:
            check_inputs_device(inputs, self.device)
            self._checked = True
        with self.fast.batch(prepared) if self.fast is not None else contextlib.nullcontext():
            new_tokens = self._new_tokens(inputs, prepared)
        if self.mode == "choice_logits":
            return new_tokens
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _new_tokens(self, inputs, prepared: PreparedBatch):
        """Generated token ids per row, or the chosen labels in choice_logits mode."""
        fast = self.fast if self.fast is not None and self.fast.takes(prepared) else None
        if self.mode == "choice_logits":
            logits = fast.first_logits(inputs, prepared) if fast is not None else \
                self.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1, :]
            return self._choose(logits, prepared.choices)
        if fast is not None:
            return fast.generate(inputs, prepared, self.gen_kwargs["max_new_tokens"])
        kwargs = self.gen_kwargs
        if self.sampling is not None:
            gen, seed = self.sampling
            kwargs = kwargs | {"logits_processor": row_sampler(gen, seed, prepared.indices,
                                                               inputs["input_ids"].shape[1])}
        output = self.model.generate(**inputs, **kwargs)
        return output[:, inputs["input_ids"].shape[1]:]

    def _choose(self, logits, choices: list[tuple[str, ...]]) -> list[str]:
        """Per row, the choice label with the highest next-token logit."""
        if any(not row for row in choices):
            raise DdpEvalError("generation.mode choice_logits: this benchmark's rows have no choices to pick from; "
                               "use generation.mode=generate")
        candidates = [[self.label_id(label) for label in row] for row in choices]
        width = max(len(c) for c in candidates)
        ids = torch.tensor([c + [c[0]] * (width - len(c)) for c in candidates], device=logits.device)
        best = logits.gather(1, ids).argmax(dim=1).tolist()  # one host sync per batch
        return [row[b] for row, b in zip(choices, best)]

    def label_id(self, label: str) -> int:
        if label not in self._label_ids:
            ids = self.processor.tokenizer.encode(label, add_special_tokens=False)
            if len(ids) != 1:
                raise DdpEvalError(f"generation.mode choice_logits: choice {label!r} is not one token for "
                                   "this tokenizer; use generation.mode=generate")
            self._label_ids[label] = ids[0]
        return self._label_ids[label]


def generation_kwargs(cfg: Config, max_new_tokens: int | None = None) -> dict:
    """Keyword arguments for `generate`. Always greedy there: sampling (and the presence penalty) is the
    per-row `RowSampler` the backend adds per batch (sampling.py), so a checkpoint's generation_config
    (Qwen3-VL's asks for sampling) never decides."""
    gen = cfg.generation
    return {"max_new_tokens": max_new_tokens or gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty,
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def row_sampling(cfg: Config) -> tuple[GenerationConfig, int] | None:
    """What the backend samples with, or None for greedy decoding without a presence penalty."""
    gen = cfg.generation
    return None if gen.greedy and gen.presence_penalty == 0.0 else (gen, cfg.run.seed)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's out-of-memory, or the CPU allocator's ("can't allocate memory")."""
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def predict_batch(replies: Callable[[PreparedBatch], list[str]], prepared: PreparedBatch,
                  prepare: Callable[[tuple[int, ...]], PreparedBatch]) -> list[Record]:
    """Records for every row of `prepared` (failed rows included); splits on out-of-memory."""
    records = [{"index": i, "prediction": "", "error": reason} for i, reason in prepared.failed.items()]
    if not prepared.indices:
        return records
    try:
        texts = replies(prepared)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        prepared.inputs = None
        if len(prepared.indices) == 1:
            log.error("row %d does not fit in memory even alone; recorded as failed", prepared.indices[0])
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else "out of memory"
            return records + [{"index": prepared.indices[0], "prediction": "",
                               "error": f"{reason} (with a batch of one row)"}]
        # Before the halves, not for a lone row: the parity rows' thread may meet this while the loop's thread
        # captures a CUDA graph, where emptying the cache is not allowed (the allocator frees what it needs).
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(prepared.indices) // 2
        log.warning("out of memory on a batch of %d rows; retrying as %d + %d", len(prepared.indices), half,
                    len(prepared.indices) - half)
        return records + [
            record
            for part in (prepared.indices[:half], prepared.indices[half:])
            for record in predict_batch(replies, prepare(part), prepare)
        ]
    return records + [{"index": i, "prediction": t} for i, t in zip(prepared.indices, texts)]
