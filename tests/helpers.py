"""Code shared by the tests (fixtures live in the conftest.py files): tiny random Whisper models, the
training overrides of the end-to-end runs, the tiny LoRA model the preset tests train, and a real-base adapter."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import TrainerCallback, WhisperConfig, WhisperForConditionalGeneration

from whispertune.config import Config
from whispertune.pretrained.ct2_processor import build_generation_config, build_processor
from whispertune.training import preset_surgery, presets


def embedded_data_dir(package: str, sub: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / sub


def make_tiny_whisper(out_dir: Path, tokenizer_dir: Path, *, d_model: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny random multilingual Whisper (real tokenizer, 80 mel bins) with its processor to `out_dir`."""
    processor = build_processor(tokenizer_dir)
    tok = processor.tokenizer
    config = WhisperConfig(
        vocab_size=len(tok),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        # suppressions belong to the generation config only
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = build_generation_config(tokenizer_dir, tok, config)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def stage_config(model_dir, mode: str = "none") -> Config:
    """Defaults with `model_dir` as the Marathi base in quantization `mode`; its model section is resolved
    (a directory and a language code) as `load_base` takes it."""
    cfg = Config()
    cfg.model.name_or_path = str(model_dir)
    cfg.model.language = "mr"
    cfg.quantization.mode = mode
    return cfg


def features_and_labels(seed: int = 0):
    """Two random 30 s log-Mel inputs and six label ids each, for the tiny models' real vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 80, 3000, generator=gen), torch.randint(100, 1000, (2, 6), generator=gen)


def train_overrides(model_dir: Path, data_dir: Path, out: Path, mode: str, steps: int) -> list[str]:
    """Config overrides of the end-to-end training tests (the speech_folder data, tiny batches)."""
    return [
        f"model.name_or_path={model_dir}", "model.language=en", f"quantization.mode={mode}",
        f"data.path={data_dir}", f"data.cache_dir={out.parent / 'features'}",
        f"train.output_dir={out}", f"train.max_steps={steps}", "train.per_device_batch_size=3",
        "train.learning_rate=0.01", "train.warmup_steps=0", "train.logging_steps=1",
        "train.save_strategy=steps", f"train.save_steps={max(steps // 2, 1)}",
        "train.gradient_checkpointing=false",
        "lora.target_modules=q_proj,k_proj,v_proj,out_proj,fc1,fc2",
    ]


CLI_STEPS = 12  # 6 clips, batch 2: 3 steps an epoch, so resumes also land mid-epoch


def cli_config(path: Path, model_dir: Path, data_dir: Path, out: Path, save_steps: int) -> Path:
    """The YAML config of the CLI runs (tests/training/test_crash_safety.py, test_run_faults.py): CLI_STEPS
    steps of LoRA with dropout, no evaluation; only `save_steps` differs between them (saving draws nothing
    from the RNGs, so the losses are those of `cli_reference_run` of tests/training/conftest.py)."""
    cfg = {
        "model": {"name_or_path": str(model_dir), "language": "en"},
        "quantization": {"mode": "none"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "fc1"]},
        "data": {"path": str(data_dir), "eval_split": None, "cache_dir": str(path.parent / "features")},
        "train": {"output_dir": str(out), "max_steps": CLI_STEPS, "per_device_batch_size": 2, "learning_rate": 0.01,
                  "warmup_steps": 0, "logging_steps": 1, "save_strategy": "steps", "save_steps": save_steps,
                  "gradient_checkpointing": False, "report_to": [], "eval_strategy": "no"},
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    """The environment of the CLI subprocesses: this process's thread count, for identical arithmetic."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}



class StopAt(TrainerCallback):
    """Simulates a killed run: stop right after step `step` (its checkpoint is saved first)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


DECODER_ONLY = r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)"


def tiny_lora_model(freeze_encoder: bool = False, dropout: float = 0.0, encoder_layers: int = 2) -> torch.nn.Module:
    config = WhisperConfig(vocab_size=120, d_model=32, encoder_layers=encoder_layers, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=64, decoder_start_token_id=1,
                           pad_token_id=0, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    targets = DECODER_ONLY if freeze_encoder else ["q_proj", "v_proj"]
    torch.manual_seed(1)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=targets))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(2, 80, 3000, generator=gen), torch.randint(2, 120, (2, 6), generator=gen)


def train_losses(model: torch.nn.Module, steps: int) -> list[float]:
    feats, labels = batch()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(steps):
        loss = model(input_features=feats, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def prepared(name: str, dropout: float = 0.0, encoder_layers: int = 2, **changes) -> torch.nn.Module:
    """Preset `name` (fp32 on CPU, optionally changed) applied to a fresh tiny LoRA model."""
    preset = dataclasses.replace(presets.get_preset(name), **changes)
    return preset_surgery.prepare_model(tiny_lora_model(preset.freeze_encoder, dropout, encoder_layers), preset)


def make_adapter(base: str, run_dir: Path, *, language: str, seed: int = 0, scale: float = 0.02) -> Path:
    """A LoRA adapter with random non-zero B matrices, saved the way `whispertune train` saves one."""
    from whispertune.config import Config, LoraConfig, QuantizationConfig
    from whispertune.model.loading import load_base, load_processor
    from whispertune.model.lora import add_lora
    from whispertune.training.model_card import write_card
    from whispertune.training.plan import resolve_plan
    from whispertune.training.trainer import write_adapter

    cfg = Config()
    cfg.model.name_or_path, cfg.model.language = base, language
    cfg.quantization.mode = "int8"  # recorded only: the adapter is built on the fp32 base here
    cfg.lora = LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj", "fc1"])
    plan = resolve_plan(cfg, device="cpu")
    model = load_base(plan.model, QuantizationConfig(mode="none"), for_training=True, device="cpu")
    torch.manual_seed(seed)  # lora_A's initialization
    peft_model = add_lora(model, cfg.lora, freeze_encoder=False, verbose=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    adapter_dir = run_dir / "adapter"
    write_adapter(peft_model, load_processor(plan.model_path, plan.language, "transcribe"), adapter_dir, plan)
    write_card(adapter_dir)  # as `train` does once metrics.json is written
    return adapter_dir


# Rows of `write_rate_corpus`: id -> (seconds of audio, transcript). Four plausible rates (4.7-9.5 chars/s), one
# transcript far too long for its half second (112 chars/s), one 20 s clip with two letters (0.1 chars/s).
RATE_CORPUS = {
    "good1": (2.0, "hello world, how are you"),
    "good2": (3.0, "the cat sat on the mat today"),
    "good3": (1.5, "नमस्ते मित्रा"),
    "good4": (2.5, "open the door, please"),
    "fast": (0.5, "this transcript is far too long to be spoken in half a second of audio"),
    "slow": (20.0, "ok"),
}


def write_rate_corpus(root: Path) -> Path:
    """An audio folder (wav files of a tone in noise, of RATE_CORPUS's lengths, and metadata.csv with an id
    column) whose speaking rates are known; returns `root`."""
    import numpy as np
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["file_name,text,id"]
    for row_id, (seconds, text) in RATE_CORPUS.items():
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(root / f"{row_id}.wav", (0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
                                          ).astype("float32"), 16000)
        lines.append(f'{row_id}.wav,"{text}",{row_id}')
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_espeak_folder(root: Path, texts: list[str]) -> Path:
    """An audio folder of espeak-ng recordings `clip<i>.wav` of `texts` and its metadata.csv; returns `root`."""
    import subprocess

    lines = ["file_name,text"]
    for i, text in enumerate(texts):
        subprocess.run(["espeak-ng", "-w", str(root / f"clip{i}.wav"), text], check=True)
        lines.append(f"clip{i}.wav,{text}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def run_two_ranks(script_text: str, flags: list[str], workdir: Path) -> None:
    """Run `script_text` under `torchrun --nproc_per_node 2` with argv (json flags, workdir); assert it succeeded."""
    script = workdir / "rank.py"
    script.write_text(script_text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           json.dumps(flags), str(workdir)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
