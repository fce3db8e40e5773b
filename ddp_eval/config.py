"""Typed configuration: YAML file + `--set key.sub=value` overrides, validated once.

Defaults follow VLMEvalKit's (greedy decoding; the model family's min/max pixels) so that numbers are
comparable. Every mistake names the key; unknown keys list the valid ones. The keys a user set (in
the file or with --set) are remembered: a speed feature asked for explicitly fails loudly where it
cannot run, one that is merely on by default steps aside with a log line.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ddp_eval.core.presets import PRESETS, preset_values
from ddp_eval.errors import DdpEvalError

DTYPES = ("auto", "bfloat16", "float16", "float32")
DATA_FORMATS = ("auto", "tsv", "hf_dataset", "mmbench_tsv")  # mmbench_tsv: the older name of tsv
GENERATION_MODES = ("generate", "choice_logits")
MAX_TIMEOUT_S = 30 * 24 * 3600  # longer waits overflow the process group's timer
VISION_ATTENTION = ("auto", "sdpa", "varlen", "cudnn", "fa4", "triton")


@dataclass
class ModelConfig:
    path: str = ""
    # The model family's adapter (models/registry.py); null: from config.json's model_type.
    family: str | None = None
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    # Vision tower attention: sdpa (transformers' loop, one call per image per layer), varlen (one packed
    # call per layer for all images of the batch: PyTorch's varlen_attn on CUDA, image by image on CPU),
    # auto: triton on Hopper GPUs at the head dims measured there (64, 80), else varlen where PyTorch has the
    # kernel for this device and dtype (CUDA, bf16/fp16), else sdpa;
    # cudnn: the packed call runs cuDNN's attention image by image (CUDA; windowed towers with many
    # segments, as Qwen2.5-VL's, keep varlen there): pays only where images come in a few sizes, since
    # cuDNN builds a plan (~0.3 s) for every new sequence length;
    # fa4: packed like varlen, with FlashAttention-4's kernels (the flash-attn-4 package; Hopper, Blackwell);
    # triton: packed like varlen, with this package's Triton kernel (CUDA, bf16/fp16; windowed layers keep
    # varlen_attn).
    vision_attention: str = "auto"
    # torch.compile the vision tower's blocks (GPU): faster prefill after a warm-up compile.
    compile_vision: bool = False
    # Encode each distinct image of a batch once and share its features across the rows showing it
    # (several questions on one image); false encodes every row's image separately.
    reuse_vision: bool = True
    # Prefill the prompt start that rows of one image share (system prompt, image, hint, question) once
    # and reuse its KV cache for each row's own tokens; greedy decoding only. null: on with CUDA where the
    # family offers it and decoding is greedy (the float32 tests show the same predictions), off on the CPU.
    reuse_prefix: bool | None = None
    # With reuse_prefix: run the decode steps on fixed-size buffers, replayed as CUDA graphs on a GPU
    # (one launch per step instead of hundreds); on the CPU the same steps run without graphs. null: as
    # reuse_prefix.
    decode_graphs: bool | None = None
    # Decode steps and other short queries attend on the language model's key/value heads as they are,
    # instead of copying them for every query head (sdpa only; the result is the same).
    kv_head_attention: bool = True
    # The vision tower's rotary embedding as one Triton kernel on CUDA instead of a dozen (the same float32
    # operations, no fused multiply-add); equal bit for bit to transformers' own on an H200 in bf16
    # (bench/rotary.py, bench/RESULTS.md run 28). null: on with CUDA; the CPU keeps transformers' own.
    fused_rotary: bool | None = None
    # The vision MLP's QuickGELU (Qwen2-VL) as one Triton kernel on CUDA instead of three (the same float32
    # steps, each rounded as PyTorch's kernels round them); equal bit for bit on an H200 in bf16 and fp16
    # (bench/quick_gelu.py, run 28). null: on with CUDA; the CPU keeps transformers' own.
    fused_activation: bool | None = None
    # Image resizing bounds; null: the model family's default (VLMEvalKit's setting for that family).
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass
class DataConfig:
    # A TSV file, a `datasets` directory / parquet file, or a benchmark name (MMBench_DEV_EN, ...).
    path: str = ""
    # A suite: several benchmark names (or local files with data.task) in one launch, one model load per
    # rank; each benchmark gets a folder of its own under run.output_dir. Instead of data.path.
    benchmarks: list[str] | None = None
    # The task that reads, prompts and scores a local file (tasks/registry.py); null: from the benchmark
    # name, or mcq for a local file.
    task: str | None = None
    format: str = "auto"
    limit: int | None = None
    cache_dir: str = "~/.cache/ddp_eval"
    # Base URL that replaces VLMEvalKit's download host (a mirror); None uses the published URL.
    mirror: str | None = None
    # Expected md5 of a downloaded benchmark; None uses the md5 that VLMEvalKit publishes.
    md5: str | None = None


@dataclass
class GenerationConfig:
    # generate: decode a reply and extract the letter (VLMEvalKit's way). choice_logits: one forward
    # pass; the reply is the choice label (an option letter) the model scores highest.
    mode: str = "generate"
    max_new_tokens: int = 2048
    greedy: bool = True
    # Sampling (greedy=false) only: each row draws from its own generator, seeded by run.seed and the row's
    # index, so replies do not depend on the batch, the world size or a resume.
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    # 1.0 as VLMEvalKit passes (overrides a checkpoint's generation_config).
    repetition_penalty: float = 1.0
    # vLLM's presence penalty: subtracted from the logit of every token already generated (not the prompt's).
    presence_penalty: float = 0.0
    # A named set of the keys above, as VLMEvalKit runs a checkpoint (core/presets.py: qwen3_vl_instruct,
    # qwen3_vl_instruct_vllm, qwen3_vl_thinking); keys set explicitly win over the preset's.
    preset: str | None = None


@dataclass
class RunConfig:
    output_dir: str = "outputs/run"
    # Cap on rows per batch; null: 64 on CUDA, 8 on the CPU (run/budget.py).
    batch_size: int | None = None
    # Cap on prompt tokens per batch (rows x longest row, image tokens included); null: on CUDA what half
    # the device's free memory holds after the weights, on the CPU none (rows only).
    batch_tokens: int | None = None
    num_workers: int = 2
    seed: int = 0
    # How long a rank waits for the others (process-group timeout), in seconds.
    dist_timeout_s: int = 3600
    # Rows predicted again, each alone through the model's own generate (no batching, no reuse, no fast
    # decoder), and compared with their batched predictions: the agreement is logged and written to
    # metrics.json and report.md. null: 16 on CUDA (spread over the plan), 0 on the CPU.
    parity_rows: int | None = None
    # Predict the parity rows in a second thread while the batches run, so their batch-1 calls (mostly
    # host time) overlap the GPU's work on the batches. null: on with CUDA where the model family says
    # which state its model keeps per call (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), otherwise after the batches.
    parity_alongside: bool | None = None
    # Below this agreement the parity check warns.
    parity_min_agreement: float = 0.9


@dataclass
class ScoringConfig:
    enabled: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    run: RunConfig = field(default_factory=RunConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    # The keys the user set, as "section.key" (not a config key itself).
    set_keys: frozenset[str] = field(default=frozenset(), compare=False, metadata={"internal": True})

    def is_set(self, key: str) -> bool:
        """Whether the user gave `key` ("model.reuse_prefix") rather than leaving its default."""
        return key in self.set_keys


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read the YAML file (if any), apply `key.sub=value` overrides, build and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DdpEvalError(f"config file not found: {path}")
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as err:
            raise DdpEvalError(f"config file {path} is not valid YAML: {err}") from None
        except UnicodeDecodeError as err:
            raise DdpEvalError(f"config file {path} is not UTF-8 text (byte offset {err.start}: {err.reason})") \
                from None
        except OSError as err:
            raise DdpEvalError(f"config file {path} cannot be read ({err.strerror or err})") from None
        if not isinstance(raw, dict):
            raise DdpEvalError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    data = raw.get("data")
    if isinstance(data, dict) and "path" in data and data["path"] is None:
        data["path"] = ""  # `data.path: null` beside data.benchmarks, as the README's "or" reads
    cfg = _build(Config, raw, prefix="")
    cfg.set_keys = frozenset(f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict)
                             for key in values)
    _apply_preset(cfg)
    validate(cfg)
    return cfg


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (so 4, true, null work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise DdpEvalError(f"--set expects key.sub=value, got {item!r}")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DdpEvalError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DdpEvalError(f"{where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        valid = ", ".join(prefix + name for name in fields)
        hint = ("; ddp_eval puts one full replica on each rank's own device (cuda:<LOCAL_RANK>), so there is no "
                "device_map to set" if unknown[0] == "device_map" else "")
        raise DdpEvalError(f"unknown config key {prefix}{unknown[0]}; valid keys here: {valid}{hint}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            values[name] = _check_type(f"{prefix}{name}", value, hint)
    return cls(**values)


_SHOWN = reprlib.Repr()  # keyword arguments need Python 3.12
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 2, 80, 80
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 6


def shown(value: Any) -> str:
    """A bounded repr: a value built from nested YAML aliases is huge when spelt out in full."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 200 else text[:200] + " ..."


def _check_type(key: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for typ in allowed:
        if typing.get_origin(typ) is list:
            items = [value] if isinstance(value, str) else value
            if isinstance(items, list) and items and all(isinstance(v, str) and v.strip() for v in items):
                return [v.strip() for v in items]
            continue
        if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if typ is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ in (str, bool) and isinstance(value, typ):
            return value
    names = " or ".join("null" if t is type(None) else "a list of names" if typing.get_origin(t) is list
                        else t.__name__ for t in allowed)
    raise DdpEvalError(f"config key {key} must be {names}, got {shown(value)} ({type(value).__name__})")


def validate(cfg: Config) -> None:
    """Checks across values; file existence is checked where the files are opened."""
    _one_of("model.dtype", cfg.model.dtype, DTYPES)
    _one_of("data.format", cfg.data.format, DATA_FORMATS)
    _one_of("model.vision_attention", cfg.model.vision_attention, VISION_ATTENTION)
    _one_of("generation.mode", cfg.generation.mode, GENERATION_MODES)
    if not cfg.model.path:
        raise DdpEvalError("config key model.path is required: a local model directory")
    if cfg.data.benchmarks and cfg.data.path:
        raise DdpEvalError("config keys data.path and data.benchmarks are both set; use data.path for one benchmark "
                           "or data.benchmarks for a suite")
    if not cfg.data.path and not cfg.data.benchmarks:
        raise DdpEvalError("config key data.path is required: a TSV, a dataset directory or a benchmark name "
                           "(or data.benchmarks: a list of them)")
    if cfg.data.benchmarks and len(set(cfg.data.benchmarks)) != len(cfg.data.benchmarks):
        raise DdpEvalError(f"config key data.benchmarks names a benchmark twice: {cfg.data.benchmarks}")
    if cfg.data.benchmarks and len({Path(b).stem for b in cfg.data.benchmarks}) != len(cfg.data.benchmarks):
        raise DdpEvalError("config key data.benchmarks: two entries share a file name, and each benchmark's folder "
                           f"is named after it: {cfg.data.benchmarks}")
    low, high = cfg.model.min_pixels, cfg.model.max_pixels
    if (low is not None and low <= 0) or (high is not None and high <= 0) or (None not in (low, high) and high < low):
        raise DdpEvalError(f"model.min_pixels ({low}) and model.max_pixels ({high}) must be > 0, min <= max")
    _positive("generation.max_new_tokens", cfg.generation.max_new_tokens)
    if cfg.generation.repetition_penalty <= 0:
        raise DdpEvalError("config key generation.repetition_penalty must be > 0, got "
                           f"{cfg.generation.repetition_penalty}")
    _check_prefix_reuse(cfg)
    if not cfg.generation.greedy:
        if cfg.generation.temperature <= 0:
            raise DdpEvalError(f"config key generation.temperature must be > 0 when sampling (generation.greedy="
                               f"false), got {cfg.generation.temperature}; for greedy decoding set "
                               "generation.greedy=true")
        if not 0 < cfg.generation.top_p <= 1:
            raise DdpEvalError(f"config key generation.top_p must be in (0, 1], got {cfg.generation.top_p}")
        if cfg.generation.top_k is not None:
            _positive("generation.top_k", cfg.generation.top_k)
    if not -2 <= cfg.generation.presence_penalty <= 2:
        raise DdpEvalError("config key generation.presence_penalty must be in [-2, 2] (as vLLM's), got "
                           f"{cfg.generation.presence_penalty}")
    if cfg.run.batch_size is not None:
        _positive("run.batch_size", cfg.run.batch_size)
    if cfg.run.batch_tokens is not None:
        _positive("run.batch_tokens", cfg.run.batch_tokens)
    _positive("run.dist_timeout_s", cfg.run.dist_timeout_s)
    if cfg.run.dist_timeout_s > MAX_TIMEOUT_S:
        raise DdpEvalError(f"config key run.dist_timeout_s must be at most {MAX_TIMEOUT_S} (30 days), "
                           f"got {cfg.run.dist_timeout_s}")
    if not str(cfg.run.output_dir).strip():
        raise DdpEvalError("config key run.output_dir is empty; name a directory for the shards and results")
    if cfg.run.parity_rows is not None and cfg.run.parity_rows < 0:
        raise DdpEvalError(f"config key run.parity_rows must be >= 0 or null, got {cfg.run.parity_rows}")
    if cfg.run.parity_alongside and cfg.model.compile_vision:
        raise DdpEvalError("config key run.parity_alongside=true cannot be combined with model.compile_vision=true "
                           "(torch.compile does not build from two threads); set one of them to false")
    if not 0 <= cfg.run.parity_min_agreement <= 1:
        raise DdpEvalError("config key run.parity_min_agreement must be in [0, 1], got "
                           f"{cfg.run.parity_min_agreement}")
    if cfg.run.num_workers < 0:
        raise DdpEvalError(f"run.num_workers must be >= 0, got {cfg.run.num_workers}")
    if cfg.data.limit is not None and cfg.data.limit <= 0:
        raise DdpEvalError(f"data.limit must be a positive number of rows or null, got {cfg.data.limit}")


def _apply_preset(cfg: Config) -> None:
    """Fill the generation keys the user left unset from generation.preset."""
    name = cfg.generation.preset
    if name is None:
        return
    if name not in PRESETS:
        raise DdpEvalError(f"config key generation.preset: unknown preset {shown(name)} (known: "
                           f"{', '.join(sorted(PRESETS))})")
    for key, value in preset_values(name).items():
        if not cfg.is_set(f"generation.{key}"):
            setattr(cfg.generation, key, value)


def plain_greedy(gen: GenerationConfig) -> bool:
    """Whether `generate` would decode plainly greedily (what the shared-prefix decoder reproduces)."""
    return gen.greedy and gen.repetition_penalty == 1.0 and gen.presence_penalty == 0.0


def _check_prefix_reuse(cfg: Config) -> None:
    """Explicit settings only: null (on where proven) is decided with the device, in models/base.py."""
    if cfg.model.reuse_prefix is not True:
        if cfg.model.decode_graphs and cfg.model.reuse_prefix is False:
            raise DdpEvalError("model.decode_graphs=true needs model.reuse_prefix=true (it runs the decode steps of "
                               "the shared-prefix decoder); set model.reuse_prefix=true or model.decode_graphs=false")
        return
    needs = [(not cfg.model.reuse_vision, "model.reuse_vision=true"),
             (not cfg.generation.greedy, "generation.greedy=true"),
             (cfg.generation.repetition_penalty != 1.0, "generation.repetition_penalty=1.0"),
             (cfg.generation.presence_penalty != 0.0, "generation.presence_penalty=0")]
    missing = [what for bad, what in needs if bad]
    if missing:
        raise DdpEvalError(f"model.reuse_prefix=true needs {' and '.join(missing)} (it decodes greedily from the "
                           "shared prefix's cache); set those or model.reuse_prefix=false")


def _one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DdpEvalError(f"config key {key} must be one of {', '.join(choices)}; got {shown(value)}")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise DdpEvalError(f"config key {key} must be > 0, got {value}")


def to_dict(cfg: Config) -> dict[str, Any]:
    return {f.name: dataclasses.asdict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if not f.metadata.get("internal")}
