"""`whispertune train --dry-run`: count trainable parameters and estimate training GPU memory from the
model's config alone (meta weights, nothing downloaded but config.json)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import Config, ModelConfig
from ..errors import UserError
from .loading import resolve_name
from .lora import add_lora

# Public Whisper dimensions (openai/whisper model card + config.json of each checkpoint), used by
# `dry_run` when the Hub cannot be reached. Columns: d_model, layers (encoder = decoder), attention
# heads, ffn dim, vocab size, mel bins.
KNOWN_ARCHITECTURES: dict[str, tuple[int, int, int, int, int, int]] = {
    "whisper-tiny": (384, 4, 6, 1536, 51865, 80),
    "whisper-base": (512, 6, 8, 2048, 51865, 80),
    "whisper-small": (768, 12, 12, 3072, 51865, 80),
    "whisper-medium": (1024, 24, 16, 4096, 51865, 80),
    "whisper-large": (1280, 32, 20, 5120, 51865, 80),
    "whisper-large-v2": (1280, 32, 20, 5120, 51865, 80),
    "whisper-large-v3": (1280, 32, 20, 5120, 51866, 128),
    "whisper-tiny.en": (384, 4, 6, 1536, 51864, 80),
    "whisper-base.en": (512, 6, 8, 2048, 51864, 80),
    "whisper-small.en": (768, 12, 12, 3072, 51864, 80),
    "whisper-medium.en": (1024, 24, 16, 4096, 51864, 80),
}


@dataclass
class DryRun:
    trainable: int
    total: int
    memory_estimate_gib: dict[str, float]
    config_source: str = ""  # the model path, or a note that the built-in table was used

    def summary(self) -> str:
        lines = [f"trainable params: {self.trainable:,} || all params: {self.total:,} || "
                 f"trainable%: {100 * self.trainable / self.total:.4f}", f"config: {self.config_source}"]
        lines += [f"GPU memory estimate ({k}): {v:.2f} GiB" for k, v in self.memory_estimate_gib.items()]
        return "\n".join(lines)


def model_config(cfg: ModelConfig):
    """(config, source): AutoConfig from the Hub or a local dir; the known-architectures table if unreachable."""
    from transformers import AutoConfig, WhisperConfig

    name = resolve_name(cfg.name_or_path)
    try:
        return AutoConfig.from_pretrained(name, revision=cfg.revision, token=cfg.token, trust_remote_code=False), name
    except (OSError, ValueError) as exc:
        key = name.rstrip("/").split("/")[-1]
        if key not in KNOWN_ARCHITECTURES:
            raise UserError(f"cannot read the config of {cfg.name_or_path!r} ({exc}); "
                            f"offline, only these are known: {', '.join(KNOWN_ARCHITECTURES)}") from None
        d, layers, heads, ffn, vocab, mels = KNOWN_ARCHITECTURES[key]
        config = WhisperConfig(
            d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
            decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, vocab_size=vocab,
            num_mel_bins=mels, max_source_positions=1500, max_target_positions=448,
        )
        return config, f"built-in table for {key} (config.json unreachable: {type(exc).__name__})"


def memory_estimate(model: nn.Module, cfg: Config, trainable: int) -> dict[str, float]:
    """Rough GPU memory for training, in GiB. Formula:

    weights  = quantized linear params x (1 byte int8 | 0.5 byte + 4 bytes per 64-block nf4 | 2 bytes)
               + other params x 2 bytes (fp16/bf16 norms, embeddings, convs)
    lora     = trainable x 16 bytes (fp32 weight + grad + 2 AdamW moments)
    activations (16-bit) per layer and clip (Korthikanti et al. 2022): s*h*(34 + 5*a*s/h) bytes,
               encoder s=1500, decoder s=generation.train_generation_max_length; with gradient
               checkpointing only each layer's input (2*s*h bytes) plus one full layer are kept.
    """
    conf = model.config
    quant = cfg.quantization.mode
    skip = {id(m) for m in [model.get_output_embeddings()] if m is not None}
    linear = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in skip)
    base_total = sum(p.numel() for p in model.parameters()) - trainable
    per_linear = {"int8": 1.0, "nf4": 0.5 + 4 / 64, "none": 2.0}[quant]
    weights = linear * per_linear + (base_total - linear) * 2 + (conf.d_model * 4 if quant == "int8" else 0)
    lora = trainable * 16

    def layer_act(s: int, h: int, a: int) -> float:
        return s * h * (34 + 5 * a * s / h)

    s_enc, s_dec, h = conf.max_source_positions, cfg.generation.train_generation_max_length, conf.d_model
    enc_full = layer_act(s_enc, h, conf.encoder_attention_heads)
    dec_full = layer_act(s_dec, h, conf.decoder_attention_heads)
    if cfg.train.gradient_checkpointing:
        act = 2 * h * (s_enc * conf.encoder_layers + s_dec * conf.decoder_layers) + max(enc_full, dec_full)
    else:
        act = enc_full * conf.encoder_layers + dec_full * conf.decoder_layers
    act *= cfg.train.per_device_batch_size
    gib = 1024 ** 3
    parts = {"weights": weights / gib, "lora+optimizer": lora / gib, "activations": act / gib}
    parts["total"] = sum(parts.values())
    return parts


def dry_run(cfg: Config) -> DryRun:
    """Build the model from its config with empty (meta) weights, apply LoRA, count and estimate."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForSpeechSeq2Seq

    config, source = model_config(cfg.model)
    with init_empty_weights():
        model = AutoModelForSpeechSeq2Seq.from_config(config, trust_remote_code=False)
    # under init_empty_weights proj_out comes out untied (and tie_weights inside the context does
    # nothing): tie it to the token embedding as loading a checkpoint would, or it counts twice
    model.tie_weights()
    with init_empty_weights():
        peft_model = add_lora(model, cfg.lora, freeze_encoder=cfg.train.freeze_encoder, verbose=False,
                              total_steps=cfg.train.max_steps)
    trainable, total = peft_model.get_nb_trainable_parameters()
    memory = memory_estimate(peft_model.base_model.model, cfg, trainable)
    return DryRun(trainable=trainable, total=total, memory_estimate_gib=memory, config_source=source)
