"""Loss trajectories on real whisper-base weights: the reference recipe vs the speed presets.

Same data order for every run (one seeded permutation of the training clips, batch 8), same schedule
(AdamW lr 1e-3, 50 warm-up steps, linear decay to 0 at the last step, gradient clipping at 1.0 as the
Trainer does), LoRA r=32 on q/v of encoder and decoder, models built as in train_throughput.py
(`recipe`: int8 + peft k-bit preparation + reentrant checkpointing + fp16 autocast/GradScaler; the
presets via preset_surgery.prepare_model). The batch is 8 for every run so that only the numerics differ.
The recipe runs with two LoRA-initialisation seeds: their difference is the noise level.

Usage (GPU): python benchmarks/real_weights_loss.py --model DIR --corpus DIR --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from demo_sweep import labels_of, read_split  # noqa: E402
from train_throughput import build  # noqa: E402
from whispertune.model.loading import load_processor  # noqa: E402
from whispertune.training import presets  # noqa: E402


def moving_average(x: list[float], k: int = 20) -> np.ndarray:
    return np.convolve(np.asarray(x), np.ones(k) / k, mode="valid")


def train_run(name: str, seed: int, args, model_dir: Path, feats: torch.Tensor, labels: torch.Tensor,
              order: torch.Tensor) -> dict:
    preset = dataclasses.replace(presets.get_preset(name), batch_size=args.batch)
    common.free_memory()
    torch._dynamo.reset()
    torch.manual_seed(seed)  # LoRA A matrices and dropout masks
    model = build(model_dir, preset)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / 50 if s < 50 else max(0.0, (args.steps - s) / (args.steps - 50)))
    dtype = common.autocast_dtype(preset.precision)
    dev = feats.device
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    losses, t0 = [], time.time()
    for step in range(args.steps):
        idx = order[(step * args.batch) % len(order):][: args.batch].to(dev)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_features=feats[idx].to(model.dtype if dtype is None else dtype),
                         labels=labels[idx]).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        if step % 50 == 0:
            print(f"{name} seed={seed} step={step} loss={losses[-1]:.4f} ({time.time() - t0:.0f}s)", flush=True)
    seconds = round(time.time() - t0, 1)
    del model, opt, params
    return {"preset": name, "seed": seed, "batch": args.batch, "losses": losses, "seconds": seconds,
            "date": common.environment()["date"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--runs", default="recipe:0,lean:0,fast:0,recipe:1", help="preset:seed list, in order")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--previous", type=Path, default=None,
                   help="an earlier result file of the same model, steps and corpus: its runs are kept and compared")
    args = p.parse_args(argv)
    common.quiet()
    dev = common.device()
    processor = load_processor(str(args.model), "mr", "transcribe")
    audio, texts = read_split(args.corpus, "train", args.clips)
    feats = torch.cat([common.log_mel_batch(audio[i:i + 64], processor.feature_extractor.mel_filters, dev)
                       for i in range(0, len(audio), 64)])
    # one fixed label length: the compiled layers then see one shape (padding is -100, ignored by the loss)
    labels = torch.nn.utils.rnn.pad_sequence(labels_of(processor, texts, 0, 50258), batch_first=True,
                                             padding_value=-100).to(dev)
    order = torch.randperm(len(audio), generator=torch.Generator().manual_seed(0))
    order = order.repeat(args.steps * args.batch // len(order) + 1)
    out = {"model": "whisper-base (fp16 copy of the embedded checkpoint)", "steps": args.steps,
           "clips": len(audio), **common.environment(), "runs": []}
    if args.previous:  # runs measured in an earlier call (same data order and schedule), tagged with their date
        before = json.loads(args.previous.read_text(encoding="utf-8"))
        if (before["steps"], before["clips"]) != (args.steps, len(audio)):
            raise SystemExit(f"{args.previous}: steps/clips {before['steps']}/{before['clips']} differ from this run")
        out["runs"] = [r | {"date": r.get("date", before["date"])} for r in before["runs"]]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for item in args.runs.split(","):
        name, seed = item.split(":")
        try:
            out["runs"].append(train_run(name, int(seed), args, args.model, feats, labels, order))
        except Exception as exc:  # noqa: BLE001 - record the failure, keep the other runs
            out["runs"].append({"preset": name, "seed": int(seed), "error": f"{type(exc).__name__}: {exc}"[:400]})
        out["comparison"] = compare(out["runs"])
        (args.out_dir / "real_weights_loss.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out["comparison"], indent=1))
    plot(out, args.out_dir / "real_weights_loss.png")
    return 0


def compare(runs: list[dict]) -> dict:
    """Mean |difference| of 20-step moving averages against recipe seed 0 (recipe seed 1 = the noise)."""
    ok, seen = {}, Counter()
    for r in runs:  # a rerun of the same preset and seed is keyed preset:seed#2
        if "losses" in r:
            key = f"{r['preset']}:{r['seed']}"
            seen[key] += 1
            ok[key if seen[key] == 1 else f"{key}#{seen[key]}"] = moving_average(r["losses"])
    ref = ok.get("recipe:0")
    if ref is None:
        return {}
    return {k: round(float(np.abs(v - ref).mean()), 4) for k, v in ok.items() if k != "recipe:0"} | {
        "final_ma20": {k: round(float(v[-1]), 4) for k, v in ok.items()}}


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in out["runs"]:
        if "losses" in r:
            ma = moving_average(r["losses"])
            ax.plot(range(20, 20 + len(ma)), ma, label=f"{r['preset']} (seed {r['seed']}, {r['seconds']} s)")
    ax.set_xlabel("step (batch 8)")
    ax.set_ylabel("training loss, 20-step moving average")
    ax.set_title(f"whisper-base LoRA r=32 q/v on {out['clips']} Marathi clips, {out['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
