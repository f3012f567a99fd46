"""Shared pieces of the benchmarks: architectures, random checkpoints, model loading, FLOPs, results files.

Run as scripts from the repository root (`python benchmarks/train_throughput.py ...`); they import
this file as a sibling module.
"""

from __future__ import annotations

import datetime
import gc
import json
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Dimensions of OpenAI's Whisper sizes (config.json of the Hub checkpoints); tiny-random is for CPU smoke tests.
ARCHS: dict[str, dict[str, int]] = {
    "tiny-random": dict(d_model=64, layers=2, heads=2, ffn=128, mels=80, vocab=51865),
    "base": dict(d_model=512, layers=6, heads=8, ffn=2048, mels=80, vocab=51865),
    "small": dict(d_model=768, layers=12, heads=12, ffn=3072, mels=80, vocab=51865),
    "medium": dict(d_model=1024, layers=24, heads=16, ffn=4096, mels=80, vocab=51865),
    "large-v2": dict(d_model=1280, layers=32, heads=20, ffn=5120, mels=80, vocab=51865),
    "large-v3": dict(d_model=1280, layers=32, heads=20, ffn=5120, mels=128, vocab=51866),
}
# Multilingual Whisper special token ids (vocab 51865): start, <|mr|>, transcribe, notimestamps, eot.
SOT, LANG_MR, TRANSCRIBE, NO_TIMESTAMPS, EOT = 50258, 50320, 50359, 50363, 50257
PROMPT = [SOT, LANG_MR, TRANSCRIBE, NO_TIMESTAMPS]
ENCODER_FRAMES = 3000  # Whisper's encoder accepts exactly 30 s of 10 ms frames
RESULTS = Path(__file__).resolve().parent / "results"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def whisper_config(arch: str):
    from transformers import WhisperConfig

    a = ARCHS[arch]
    return WhisperConfig(
        vocab_size=a["vocab"], d_model=a["d_model"], encoder_layers=a["layers"], decoder_layers=a["layers"],
        encoder_attention_heads=a["heads"], decoder_attention_heads=a["heads"], encoder_ffn_dim=a["ffn"],
        decoder_ffn_dim=a["ffn"], num_mel_bins=a["mels"], max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=SOT, pad_token_id=EOT, bos_token_id=EOT, eos_token_id=EOT,
        suppress_tokens=None, begin_suppress_tokens=None,
    )


def random_checkpoint(arch: str, root: Path, seed: int = 0) -> Path:
    """Save a randomly initialised Whisper of `arch` (bf16 safetensors) once; later calls reuse it.

    Saved and reloaded (rather than built in memory) so that bitsandbytes quantizes it while loading,
    exactly as it would a Hub checkpoint.
    """
    from transformers import GenerationConfig, WhisperForConditionalGeneration

    out = root / f"whisper-{arch}-random"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    with torch.device(device()):  # initialising 1.5 B parameters on the GPU takes seconds, not minutes
        model = WhisperForConditionalGeneration(whisper_config(arch)).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=SOT, eos_token_id=EOT, pad_token_id=EOT, bos_token_id=EOT, max_length=448,
        lang_to_id={"<|en|>": 50259, "<|mr|>": LANG_MR}, task_to_id={"translate": 50358, "transcribe": TRANSCRIBE},
        no_timestamps_token_id=NO_TIMESTAMPS, is_multilingual=True,
    )
    model.save_pretrained(out)
    del model
    free_memory()
    return out


def load_lora_model(model_dir: Path, quant: str, precision: str, prepare_kbit: bool, freeze_encoder: bool,
                    attn: str = "sdpa", r: int = 32, alpha: int = 64, dropout: float = 0.05):
    """Load `model_dir` as the recipe does (optionally 8/4-bit), add LoRA on q_proj/v_proj; returns the peft model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    kwargs: dict[str, Any] = dict(attn_implementation=attn, dtype=dtype)
    if quant == "int8":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["dtype"] = torch.float16  # the recipe: fp16 non-int8 weights before k-bit preparation
    elif quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    if quant != "none":
        kwargs["device_map"] = {"": device().index or 0} if device().type == "cuda" else {"": "cpu"}
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, **kwargs)
    if quant == "none":
        model.to(device())
    model.config.use_cache = False
    model.generation_config.suppress_tokens = None
    if quant != "none" and prepare_kbit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets: Any = ["q_proj", "v_proj"]
    if freeze_encoder:
        targets = r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)"
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(model, lora)


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def train_flops_per_sample(arch: str, label_len: int, freeze_encoder: bool) -> dict[str, float]:
    """Model FLOPs of one training sample (no recomputation counted), by formula.

    Forward: 2*m*n*k for every matmul and conv (both encoder convs, all projections, LM head) plus
    attention (QK^T and PV: 4*Lq*Lk*d per layer). Backward: the base weights are frozen, so only
    input gradients are needed: the same matmuls once more (weight gradients of the LoRA factors are
    <1 % and not counted), attention backward = 2x its forward (4 matmuls). The convs need no backward
    (their input is data). With a frozen encoder, the encoder and the cross-attention K/V projections
    of its output have no backward.
    """
    a = ARCHS[arch]
    d, f, n, v = a["d_model"], a["ffn"], a["layers"], a["vocab"]
    t, length = ENCODER_FRAMES // 2, label_len
    conv = 2 * ENCODER_FRAMES * a["mels"] * 3 * d + 2 * t * 3 * d * d
    enc_lin = n * 2 * t * (4 * d * d + 2 * d * f)
    enc_att = n * 4 * t * t * d
    cross_kv = n * 2 * t * 2 * d * d
    dec_lin = n * 2 * length * (4 * d * d + 2 * d * d + 2 * d * f) + 2 * length * d * v
    dec_att = n * (4 * length * length * d + 4 * length * t * d)
    forward = conv + enc_lin + enc_att + cross_kv + dec_lin + dec_att
    backward = dec_lin + 2 * dec_att
    if not freeze_encoder:
        backward += enc_lin + 2 * enc_att + cross_kv
    return {"forward": float(forward), "backward": float(backward), "total": float(forward + backward)}


def environment() -> dict[str, Any]:
    import transformers

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
    }
    for name in ("peft", "bitsandbytes", "accelerate"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is recorded, not fatal
            info[name] = None
    return info


def write_result(name: str, record: dict[str, Any], results_dir: Path = RESULTS) -> None:
    """Append one JSON line to `<results_dir>/<name>.jsonl` (and echo it)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True)
    with open(results_dir / f"{name}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    print(line, flush=True)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def quiet() -> None:
    """bitsandbytes and transformers warn on every int8 matmul of the recipe; keep the logs readable."""
    import logging

    warnings.filterwarnings("ignore")
    for name in ("bitsandbytes", "transformers", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype a training step of a preset with `precision` runs under (None: no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def log_mel_batch(
    clips: list[np.ndarray], mel_filters: np.ndarray, device: str | torch.device = "cpu", n_samples: int = 480000
) -> torch.Tensor:
    """Whisper log-Mel features of many 16 kHz clips in one batched STFT (CPU or GPU).

    Same math as transformers' WhisperFeatureExtractor (n_fft 400, hop 160, per-clip max - 8 floor,
    (x + 4) / 4), but padding happens in one tensor on `device` instead of per clip in numpy.
    `mel_filters` is the extractor's `mel_filters` array (n_freq x n_mels). Returns (batch, n_mels, 3000).
    """
    batch = torch.zeros(len(clips), n_samples, dtype=torch.float32)
    for i, clip in enumerate(clips):
        n = min(len(clip), n_samples)
        batch[i, :n] = torch.from_numpy(np.asarray(clip[:n], dtype=np.float32))
    batch = batch.to(device, non_blocking=True)
    window = torch.hann_window(400, device=device)
    stft = torch.stft(batch, 400, 160, window=window, return_complex=True)
    power = stft[..., :-1].abs().square()
    mel = torch.from_numpy(mel_filters).to(device, torch.float32).T @ power
    log_spec = mel.clamp_min(1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0
