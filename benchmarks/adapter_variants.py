"""Adapter variants compared through the product: `whispertune.train()` then `whispertune.evaluate()` for each
`lora.variant` (lora, dora, rslora, adalora) on the same corpus, steps, batch and seed.

    python benchmarks/adapter_variants.py --model /models/whisper-base --data /data/corpus --language en \
        --steps 500 --batch 16

`--data`: an audio folder with `train/` and `test/` splits (each a metadata.csv with file_name,text, the
layout `data.source folder` reads). `--model`: a local checkpoint directory or an `embedded:` name. Each
variant is one JSON line of benchmarks/results/adapter_variants.jsonl: environment (device, torch /
transformers / peft versions, date), run id, the exact settings (the run's own config.yaml: the preset a GPU
applied included), WER/CER on the test split (raw and normalized), samples/s (the Trainer's own figure and
steps x batch over the StageClock's `train_steps` seconds), peak GPU memory of training and of evaluation
(torch.cuda.max_memory_allocated, CUDA only), trainable parameters at the start of training and the
parameters of the saved adapter (AdaLoRA's is pruned). A variant that fails is recorded with its error and
the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import uuid
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import whispertune  # noqa: E402

VARIANTS = ("lora", "dora", "rslora", "adalora")


class TrainableParams(TrainerCallback):
    """The trainable / total parameter counts of the model the Trainer starts with (peft's own count)."""

    def __init__(self):
        self.trainable: int | None = None
        self.total: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.trainable, self.total = model.get_nb_trainable_parameters()
        return control


def adapter_params(adapter_dir: Path) -> int:
    return sum(t.numel() for t in load_file(str(adapter_dir / "adapter_model.safetensors")).values())


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def overrides(args, variant: str, out: Path) -> list[str]:
    """The config of one variant's run: everything but lora.variant is the same for every variant."""
    return [
        f"model.name_or_path={args.model}", f"model.language={args.language}",
        "data.source=folder", f"data.path={args.data}", "data.train_split=train", "data.eval_split=test",
        f"train.output_dir={out}", f"train.max_steps={args.steps}", f"train.per_device_batch_size={args.batch}",
        f"train.speed_batch_size={args.batch}", f"train.seed={args.seed}", f"train.learning_rate={args.lr}",
        f"train.warmup_steps={min(args.warmup, args.steps - 1)}", "train.eval_strategy=no", "train.save_strategy=no",
        "train.report_to=[]", f"train.speed_preset={args.preset}", f"train.logging_steps={max(1, args.steps // 20)}",
        f"lora.r={args.r}", f"lora.alpha={args.alpha}", f"lora.target_modules={args.targets}",
        f"lora.variant={variant}", *args.set,
    ]


def run_variant(args, variant: str, run_id: str, env: dict) -> dict:
    out = args.work / run_id / variant
    record = {"bench": "adapter_variants", "run_id": run_id, "variant": variant, **env,
              "args": {k: str(v) for k, v in vars(args).items() if k != "set"}, "set": args.set}
    try:
        cfg = whispertune.load_config(None, overrides(args, variant, out))
        common.free_memory()
        counter = TrainableParams()
        result = whispertune.train(cfg, overwrite=True, extra_callbacks=[counter])
        record["train_peak_gib"] = peak_gib()
        settings = yaml.safe_load((result.run_dir / "config.yaml").read_text(encoding="utf-8"))
        metrics = json.loads((result.run_dir / "metrics.json").read_text(encoding="utf-8"))
        steps_s = result.seconds.get("train_steps") or float("nan")
        samples = result.global_step * cfg.train.per_device_batch_size * cfg.train.gradient_accumulation_steps
        record.update({
            "settings": settings, "global_step": result.global_step, "final_train_loss": result.final_train_loss,
            "precision": metrics.get("precision"), "run_device": metrics.get("device"),
            "samples_per_s_trainer": metrics.get("train", {}).get("train_samples_per_second"),
            "samples_per_s_train_steps": round(samples / steps_s, 3), "stage_seconds": metrics.get("seconds"),
            "trainable_params": counter.trainable, "total_params": counter.total,
            "adapter_params": adapter_params(result.adapter_dir),
        })
        common.free_memory()
        scores = whispertune.evaluate(adapter=str(result.adapter_dir), data=cfg.data, split="test",
                                      decoding=whispertune.DecodingOptions(
                                          batch_size=args.eval_batch, max_new_tokens=cfg.generation.max_new_tokens,
                                          num_beams=cfg.generation.num_beams),
                                      max_samples=args.eval_clips, progress=False)
        record.update({"eval_peak_gib": peak_gib(), "wer": scores.wer, "cer": scores.cer,
                       "wer_normalized": scores.wer_normalized, "cer_normalized": scores.cer_normalized,
                       "eval_utterances": scores.n_utterances, "eval_seconds": round(scores.seconds, 2)})
    except Exception as exc:  # noqa: BLE001 - one variant's failure is a result too; the others still run
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()[-2000:]
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (e.g. whisper-base) or embedded: name")
    ap.add_argument("--data", required=True, type=Path, help="audio folder with train/ and test/ metadata.csv splits")
    ap.add_argument("--language", default="en", help="the corpus language (Whisper name or code)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16, help="per-device batch (also the preset's batch on a GPU)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--r", type=int, default=32)
    ap.add_argument("--alpha", type=int, default=64)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--preset", default="auto", help="train.speed_preset, the same for every variant")
    ap.add_argument("--eval-batch", type=int, default=0, help="0: by device")
    ap.add_argument("--eval-clips", type=int, default=None, help="score at most this many test clips")
    ap.add_argument("--set", action="append", default=[], help="another config override, e.g. train.precision=bf16 "
                    "(generation.max_new_tokens and generation.num_beams also decode the evaluation)")
    ap.add_argument("--work", type=Path, default=Path("runs/adapter_variants"))
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)}; accepted: {', '.join(VARIANTS)}")
    run_id, env = uuid.uuid4().hex[:8], common.environment()
    for variant in variants:
        common.write_result("adapter_variants", run_variant(args, variant, run_id, env), args.results)


if __name__ == "__main__":
    main()
