"""Typed configuration: dataclasses filled from YAML files and `--section.key value` flags.

Every value is checked against its declared type; an unknown key or a wrong type raises
ConfigError naming the key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_augment import AugmentConfig, check_augment
from .config_lora import LoraConfig, check_lora
from .config_train_checks import check_kept_training, check_packing
from .config_triage import check_triage
from .config_values import check_ranges, coerce_value, parse_override, read_flag_value
from .errors import ConfigError

# The speed presets' names; their settings are training.presets.PRESETS, a table keyed by these names.
# Only the names live here, so that `train.speed_preset` is checked like any other Literal field.
SpeedPresetName = Literal["recipe", "plain", "fast", "lean", "lean-resident", "fast-fp8", "fast-frozen-encoder"]
# How the base's weights are held: as stored, or quantized on load by bitsandbytes (model/bnb.py)
QuantizationMode = Literal["none", "int8", "nf4"]


@dataclass
class ModelConfig:
    name_or_path: str = "embedded:whisper-base"  # Hub id, local dir, or embedded:whisper-base / embedded:tiny.en
    language: str | None = "marathi"  # name ("Marathi") or code ("mr"); None for English-only models
    task: Literal["transcribe", "translate"] = "transcribe"
    revision: str | None = None
    token: str | None = None  # Hub token; None uses the usual places (HF_TOKEN, cached login)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


@dataclass
class QuantizationConfig:
    mode: QuantizationMode = "none"
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # nf4 compute dtype
    double_quant: bool = True  # nf4 double quantization
    llm_int8_threshold: float = 6.0
    device_map: str = "auto"


@dataclass
class DataConfig:
    source: Literal["hub", "folder", "manifest", "disk"] = "folder"
    path: str = ""  # Hub id, audio folder, manifest .jsonl, or a dataset saved with save_to_disk
    config_name: str | None = None  # Hub dataset config, e.g. "mr"
    train_split: str = "train"  # split expression, e.g. "train+validation"
    eval_split: str | None = "test"
    text_column: str = "text"
    audio_column: str = "audio"
    token: str | None = None
    streaming: bool = False  # read the training split lazily (hub / disk sources; needs train.max_steps)
    shuffle_buffer: int = 1000  # streamed rows shuffled within a buffer of this many (seeded by train.seed)
    num_proc: int = 1
    max_duration_s: float = 30.0
    pack_utterances: int = 1  # > 1: training clips packed 1..N to a 30 s window (data/packing.py); 1: off
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: str | None = None  # default: <user cache>/whispertune/features
    # data triage (data/triage.py, docs/data.md): speaking rates outside these are flagged; 0 = no lower bound
    min_chars_per_second: float = 1.0
    max_chars_per_second: float = 35.0
    drop_flagged: bool = False  # train without the flagged rows (each counted as skipped in the data report)


@dataclass
class TrainingConfig:
    output_dir: str = "runs/whispertune"
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_epochs
    eval_strategy: Literal["no", "steps", "epoch"] = "epoch"
    eval_steps: int | None = None
    save_strategy: Literal["no", "steps", "epoch"] = "epoch"
    save_steps: int = 500
    save_total_limit: int | None = None
    logging_steps: int = 25
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 > fp16 > fp32 (CPU)
    gradient_checkpointing: bool = True
    prepare_kbit: bool = True  # peft's prepare_model_for_kbit_training on quantized bases
    freeze_encoder: bool = False  # LoRA on the decoder only
    cache_encoder_outputs: bool = False  # with freeze_encoder: run the encoder once per clip
    cache_cross_attention: bool = False  # also keep the decoder's cross-attention keys/values (18 MB a clip for base)
    predict_with_generate: bool = False  # WER by generation at each evaluation
    select_best: Literal["no", "wer", "cer", "loss"] = "no"  # adapter/ = the checkpoint best by this eval metric
    timestamp_probability: float = 0.0  # share of rows with segment times trained with timestamp tokens
    max_nonfinite_steps: int = 3  # stop after this many NaN/inf-loss steps in a row (each is skipped)
    seed: int = 42
    # a training.presets.PRESETS name or "auto" (CUDA: `lean`, unless freeze_encoder; CPU: the config as written)
    speed_preset: Literal["auto", SpeedPresetName] = "auto"
    speed_batch_size: int = 0  # > 0: this batch instead of the preset's (e.g. 64 for fast-fp8 on a 141 GB GPU)
    remove_unused_columns: bool = False
    label_names: list[str] = field(default_factory=lambda: ["labels"])
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    dataloader_num_workers: int = -1  # -1: auto (4 on a GPU, where reading batches must overlap the step; 0 on a CPU)
    push_to_hub: bool = False
    hub_repo_id: str | None = None


@dataclass
class EvaluationConfig:
    batch_size: int = 0  # 0: auto (inference.options.resolve_batch_size: by GPU memory, 8 on a CPU)
    sort_by_length: bool = True
    normalizer: Literal["auto", "basic", "english", "none"] = "auto"
    autocast: bool = True  # mixed precision for quantized bases on GPU


@dataclass
class GenerationConfig:
    max_new_tokens: int = 255  # evaluation / transcription
    train_generation_max_length: int = 128  # generation_max_length during training evaluation
    num_beams: int = 1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvaluationConfig = field(default_factory=EvaluationConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training data only (config_augment.py)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _section_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


def _apply(cfg: Config, section: str, key: str, value: Any) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; accepted: {', '.join(SECTIONS)}")
    hints = _section_types(SECTIONS[section])
    if key not in hints:
        raise ConfigError(f"unknown key {section}.{key}; accepted: {', '.join(hints)}")
    setattr(getattr(cfg, section), key, coerce_value(f"{section}.{key}", value, hints[key]))


def config_from_dict(data: dict[str, Any] | None, base: Config | None = None) -> Config:
    cfg = base if base is not None else Config()
    for section, values in (data or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; accepted: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
        for key, value in values.items():
            _apply(cfg, section, key, value)
    return cfg


def _apply_text(cfg: Config, section: str, key: str, raw: str) -> None:
    if section in SECTIONS:
        hints = _section_types(SECTIONS[section])
        if key in hints:
            _apply(cfg, section, key, read_flag_value(raw, hints[key]))
            return
    _apply(cfg, section, key, raw)  # raises the unknown section/key error


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then `section.key=value` overrides, each checked."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    cfg = config_from_dict(data)
    for text in overrides or []:
        _apply_text(cfg, *parse_override(text))
    validate(cfg)
    return cfg


# device_map strings accepted by transformers' from_pretrained (a dict is not expressible as a flag)
DEVICE_MAP = re.compile(r"^(auto|balanced|balanced_low_0|sequential|cpu|cuda|cuda:\d+)$")


def validate(cfg: Config) -> None:
    """Checks that span more than one type: ranges and combinations."""
    check_lora(cfg.lora, cfg.train.max_steps)
    if cfg.train.speed_batch_size < 0:
        raise ConfigError("train.speed_batch_size must be 0 (the preset's batch) or a positive integer")
    if cfg.train.per_device_batch_size <= 0:
        raise ConfigError("train.per_device_batch_size must be a positive integer")
    if cfg.train.dataloader_num_workers < -1:
        raise ConfigError(f"train.dataloader_num_workers: got {cfg.train.dataloader_num_workers}, "
                          "expected -1 (auto), 0 (main process) or a positive integer")
    if cfg.train.cache_encoder_outputs and not cfg.train.freeze_encoder:
        raise ConfigError("train.cache_encoder_outputs needs train.freeze_encoder: true")
    if cfg.train.cache_cross_attention and not cfg.train.cache_encoder_outputs:
        raise ConfigError("train.cache_cross_attention needs train.cache_encoder_outputs: true")
    if cfg.train.cache_cross_attention and any(t.split(".")[-1] in ("k_proj", "v_proj") and "self_attn" not in t
                                               for t in cfg.lora.target_modules):
        raise ConfigError("train.cache_cross_attention: the cross-attention keys/values must stay frozen; name "
                          "self-attention projections as self_attn.k_proj / self_attn.v_proj in lora.target_modules")
    if not 0 < cfg.data.max_duration_s <= 30:
        raise ConfigError(f"data.max_duration_s: got {cfg.data.max_duration_s}, expected a number in (0, 30]: Whisper "
                          "hears 30 s windows, so a longer clip's features would be cut while its whole transcript is "
                          "kept; split long recordings into clips first")
    if cfg.data.streaming:
        _check_streaming(cfg)
    if cfg.data.num_proc <= 0:
        raise ConfigError(f"data.num_proc: got {cfg.data.num_proc}, expected a positive integer")
    if not DEVICE_MAP.match(cfg.quantization.device_map):
        raise ConfigError(f"quantization.device_map: got {cfg.quantization.device_map!r}, expected one of "
                          "auto, balanced, balanced_low_0, sequential, cpu, cuda, cuda:N")
    check_ranges(cfg)
    check_triage(cfg.data)
    check_augment(cfg)
    check_kept_training(cfg.train, cfg.data)
    check_packing(cfg)
    if cfg.train.max_nonfinite_steps <= 0:
        raise ConfigError(f"train.max_nonfinite_steps: got {cfg.train.max_nonfinite_steps}, expected a positive integer")
    from .languages import resolve_language  # lazy: `whispertune --help` imports config, languages imports transformers

    try:
        resolve_language(cfg.model.language)
    except ConfigError as exc:
        raise ConfigError(f"model.language: {exc}") from None


def _check_streaming(cfg: Config) -> None:
    if cfg.data.source not in ("hub", "disk"):
        raise ConfigError(f"data.streaming: true reads a Hub-style dataset (data.source hub, a local folder of parquet "
                          f"shards included, or disk); data.source={cfg.data.source} is read whole: drop data.streaming")
    if cfg.train.max_steps <= 0:
        raise ConfigError("data.streaming: true needs train.max_steps > 0: a stream has no length, so neither the "
                          "number of steps nor the learning-rate schedule can come from train.num_epochs "
                          "(e.g. --train.max_steps 5000)")
    if cfg.train.cache_encoder_outputs:
        raise ConfigError("data.streaming: true cannot be combined with train.cache_encoder_outputs (the cache "
                          "encodes the whole training set up front); drop one of them")
    if cfg.data.shuffle_buffer <= 0:
        raise ConfigError(f"data.shuffle_buffer: got {cfg.data.shuffle_buffer}, expected a positive integer")

