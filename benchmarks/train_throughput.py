"""Training throughput of LoRA on a Whisper architecture: ms/step, samples/s, peak memory, MFU.

Each `--spec` is one configuration: a speed preset (src/whispertune/training/presets.py) with optional field
overrides, e.g.

    python benchmarks/train_throughput.py --arch large-v2 \
        --spec preset=recipe --spec preset=plain,batch=24 --spec preset=fast,sdpa=cudnn

Spec keys: preset, label, batch, quant (none/int8/nf4), precision (bf16/fp16/fp32), prepare_kbit,
ckpt (none/all/encoder/alternate), reentrant, compile (0/1), freeze_encoder (0/1), fp8 (0/1: frozen weights
in float8), attn
(sdpa/eager/flash_attention_2), sdpa (default/flash/efficient/cudnn/math: SDPA backend priority).
Specs run one after another in this process (the previous model freed, peak memory reset); a
failing spec (OOM, missing kernel) is recorded with its error and the rest go on. Every result is a
JSON line in benchmarks/results/train_throughput.jsonl. Random weights, random 80x3000 features and
random labels of `--label-len` tokens; 3 warm-up + `--steps` timed AdamW steps, synchronized.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import statistics
import sys
import time
import traceback
import uuid
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from whispertune.training import preset_surgery, presets  # noqa: E402

BOOL_KEYS = {"prepare_kbit", "reentrant", "compile", "freeze_encoder", "fp8"}
FIELD_OF = {"quant": "quantization", "ckpt": "checkpointing", "compile": "compile_layers", "batch": "batch_size",
            "attn": "attn_implementation", "fp8": "fp8_weights"}
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "math": "MATH"}


def parse_spec(text: str) -> tuple[presets.SpeedPreset, dict[str, str]]:
    """'preset=fast,batch=16' -> (the preset with batch_size=16, the raw key/values)."""
    raw = dict(item.split("=", 1) for item in text.split(",") if item)
    preset = presets.get_preset(raw.get("preset", "plain"))
    changes = {}
    for key, value in raw.items():
        if key in ("preset", "label", "sdpa"):
            continue
        field = FIELD_OF.get(key, key)
        if field not in {f.name for f in dataclasses.fields(presets.SpeedPreset)}:
            raise SystemExit(f"unknown spec key {key!r} in {text!r}")
        changes[field] = value in ("1", "true", "yes") if key in BOOL_KEYS else int(value) if key == "batch" else value
    return dataclasses.replace(preset, **changes), raw


def sdpa_context(name: str):
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    first = getattr(SDPBackend, SDPA_BACKENDS[name])
    others = [b for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if b != first]
    return sdpa_kernel([first, *others], set_priority=True)


def build(model_dir: Path, preset: presets.SpeedPreset):
    """The peft model configured like `preset`."""
    model = common.load_lora_model(model_dir, preset.quantization, preset.precision, preset.prepare_kbit,
                                   preset.freeze_encoder, attn=preset.attn_implementation)
    if preset.prepare_kbit and preset.quantization != "none":
        return model  # peft's preparation already set reentrant checkpointing of every layer (the recipe)
    return preset_surgery.prepare_model(model, preset)


def run_spec(spec: str, args, model_dir: Path, env: dict, run_id: str, results_name: str = "train_throughput",
             extra: dict | None = None) -> dict:
    """Measure one configuration, append its record to `<results_dir>/<results_name>.jsonl` and return it."""
    preset, raw = parse_spec(spec)
    label = raw.get("label") or spec
    record = {**(extra or {}), "bench": "train", "run_id": run_id, "label": label, "spec": spec, "arch": args.arch,
              "weights": f"real: {args.model_dir}" if args.model_dir else "random",
              "label_len": args.label_len, "warmup": args.warmup, "steps": args.steps,
              "sdpa_backend": raw.get("sdpa", "default"), **dataclasses.asdict(preset), **env}
    dev = common.device()
    common.free_memory()
    torch._dynamo.reset()
    try:
        model = build(model_dir, preset)
        record["trainable_params"], record["total_params"] = common.count_params(model)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[preset.precision]
        scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
        mels = common.ARCHS[args.arch]["mels"]
        gen = torch.Generator(device=dev).manual_seed(0)
        b = preset.batch_size
        batches = [(torch.randn(b, mels, common.ENCODER_FRAMES, device=dev, generator=gen),
                    torch.randint(0, common.EOT, (b, args.label_len), device=dev, generator=gen)) for _ in range(3)]
        losses, times = [], []
        for step in range(args.warmup + args.steps):
            feats, labels = batches[step % len(batches)]
            common.sync()
            start = time.perf_counter()
            with sdpa_context(record["sdpa_backend"]), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                loss = model(input_features=feats, labels=labels).loss
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            common.sync()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
            losses.append(loss.item())
        ms = statistics.median(times) * 1000
        flops = common.train_flops_per_sample(args.arch, args.label_len, preset.freeze_encoder)
        samples_s = b / (ms / 1000)
        record.update(
            ms_per_step=round(ms, 2), ms_spread=[round(min(times) * 1000, 2), round(max(times) * 1000, 2)],
            samples_per_s=round(samples_s, 3), loss_first=losses[0], loss_last=losses[-1],
            loss_finite=all(math.isfinite(x) for x in losses), flops_per_sample=flops["total"],
            achieved_tflops=round(samples_s * flops["total"] / 1e12, 1),
            peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3) if dev.type == "cuda" else None,
        )
        if dev.type == "cuda" and args.peak_tflops:
            record["mfu"] = round(samples_s * flops["total"] / (args.peak_tflops * 1e12), 4)
            record["peak_tflops"] = args.peak_tflops
            if preset.fp8_weights:  # the projections run at the FP8 rate: twice the dense bf16 peak
                record["mfu_vs_fp8_peak"] = round(record["mfu"] / 2, 4)
        del model, opt, params, batches, loss
    except Exception as exc:  # noqa: BLE001 - one failing configuration must not end the whole suite
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        traceback.print_exc()
    common.write_result(results_name, record, Path(args.results_dir))
    common.free_memory()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny-random", choices=sorted(common.ARCHS))
    parser.add_argument("--spec", action="append", default=[], help="one configuration (repeatable)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--label-len", type=int, default=40)
    parser.add_argument("--model-root", default="/tmp/whispertune-bench")
    parser.add_argument("--model-dir", default=None,
                        help="a real checkpoint (transformers layout) instead of random weights of --arch")
    parser.add_argument("--results-dir", default=str(common.RESULTS))
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="dense bf16 peak for MFU (H100 SXM datasheet: 989)")
    args = parser.parse_args(argv)
    common.quiet()
    model_dir = Path(args.model_dir) if args.model_dir else common.random_checkpoint(args.arch, Path(args.model_root))
    env, run_id = common.environment(), uuid.uuid4().hex[:8]
    for spec in args.spec or ["preset=plain"]:
        run_spec(spec, args, model_dir, env, run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
