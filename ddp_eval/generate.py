"""Model inputs -> replies on one device, with CUDA out-of-memory handled by splitting the batch.

A batch that runs out of memory is split in halves (re-preprocessed) and retried, down to one row;
only a single row that still does not fit is recorded as failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ddp_eval.config import Config
from ddp_eval.errors import DdpEvalError
from ddp_eval.inputs import PreparedBatch
from ddp_eval.model import check_inputs_device
from ddp_eval.prefix_decode import PrefixDecoder
from ddp_eval.vision_reuse import VisionReuse

log = logging.getLogger(__name__)


class Replica:
    """The model, its processor and generation settings on this rank's device."""

    def __init__(self, model, processor, device: torch.device, gen_kwargs: dict[str, Any],
                 reuse_vision: bool = False, mode: str = "generate", reuse_prefix: bool = False,
                 decode_graphs: bool = False) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.gen_kwargs = gen_kwargs
        self.vision_reuse = VisionReuse(model) if reuse_vision else None
        self.prefix_decoder = PrefixDecoder(model, decode_graphs) if reuse_prefix else None
        self.mode = mode
        self._checked = False
        self._letter_ids: dict[str, int] = {}

    @torch.inference_mode()
    def replies(self, prepared: PreparedBatch) -> list[str]:
        inputs = prepared.inputs.to(self.device, non_blocking=True)
        if not self._checked:
            check_inputs_device(inputs, self.device)
            self._checked = True
        if self.vision_reuse is not None and prepared.image_map is not None:
            self.vision_reuse.share(prepared.image_map, prepared.unique_grid_thw)
        try:
            new_tokens = self._new_tokens(inputs, prepared)
        finally:
            if self.vision_reuse is not None:
                self.vision_reuse.clear()
        if self.mode == "choice_logits":
            return new_tokens
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _new_tokens(self, inputs, prepared: PreparedBatch):
        """Generated token ids per row, or the chosen letters in choice_logits mode."""
        if prepared.prefix is not None and self.prefix_decoder is not None:
            suffix = prepared.prefix.to(self.device)
            if self.mode == "choice_logits":
                return self._choose(self.prefix_decoder.first_logits(inputs, suffix)[0], prepared.letters)
            return self.prefix_decoder.generate(inputs, suffix, self.gen_kwargs["max_new_tokens"])
        if self.mode == "choice_logits":
            logits = self.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1, :]
            return self._choose(logits, prepared.letters)
        output = self.model.generate(**inputs, **self.gen_kwargs)
        return output[:, inputs["input_ids"].shape[1]:]

    def _choose(self, logits, letters: list[tuple[str, ...]]) -> list[str]:
        """Per row, the option letter with the highest next-token logit."""
        candidates = [[self.letter_id(letter) for letter in row] for row in letters]
        width = max(len(c) for c in candidates)
        ids = torch.tensor([c + [c[0]] * (width - len(c)) for c in candidates], device=logits.device)
        best = logits.gather(1, ids).argmax(dim=1).tolist()  # one host sync per batch
        return [row[b] for row, b in zip(letters, best)]

    def letter_id(self, letter: str) -> int:
        if letter not in self._letter_ids:
            ids = self.processor.tokenizer.encode(letter, add_special_tokens=False)
            if len(ids) != 1:
                raise DdpEvalError(f"generation.mode choice_logits: option letter {letter!r} is not one token for "
                                   "this tokenizer; use generation.mode=generate")
            self._letter_ids[letter] = ids[0]
        return self._letter_ids[letter]


def generation_kwargs(cfg: Config) -> dict:
    """Keyword arguments for `generate`: greedy (VLMEvalKit's default) or sampling."""
    gen = cfg.generation
    common = {"max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty, "top_k": None}
    if gen.greedy:
        return common | {"do_sample": False, "temperature": None, "top_p": None}
    return common | {"do_sample": True, "temperature": gen.temperature, "top_p": gen.top_p}


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def predict_batch(replies: Callable[[PreparedBatch], list[str]], prepared: PreparedBatch,
                  prepare: Callable[[tuple[int, ...]], PreparedBatch]) -> list[dict[str, Any]]:
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
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(prepared.indices) == 1:
            log.error("row %d does not fit in GPU memory even alone; recorded as failed", prepared.indices[0])
            return records + [{"index": prepared.indices[0], "prediction": "",
                               "error": "CUDA out of memory with a batch of one row"}]
        half = len(prepared.indices) // 2
        log.warning("out of memory on a batch of %d rows; retrying as %d + %d", len(prepared.indices), half,
                    len(prepared.indices) - half)
        return records + [
            record
            for part in (prepared.indices[:half], prepared.indices[half:])
            for record in predict_batch(replies, prepare(part), prepare)
        ]
    return records + [{"index": i, "prediction": t} for i, t in zip(prepared.indices, texts)]
