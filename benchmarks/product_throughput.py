"""Throughput of the product path: `whispertune.training.trainer.train()` and `whispertune.inference.evaluate.evaluate()` themselves.

Unlike train_throughput.py / eval_throughput.py (the kernel-level harness: its own loop, synthetic tensors),
this runs what `whispertune train` and `whispertune evaluate` run, on real audio files: the config is
configs/reference-large-v2-marathi-int8.yaml with the data pointed at a local Common-Voice-shaped audio folder
(`--audio`, made by ../shared/tools/make_cv_like.sh) and the model at random weights of `--arch` (or a real
checkpoint, `--model-dir`). Each `--spec` is one row of benchmarks/results/product_throughput.jsonl:

    kind=train,preset=recipe,steps=100      the reference config as written (speed_preset recipe)
    kind=train,preset=auto,batch=12         the default preset (batch: train.speed_batch_size)
    kind=train,preset=auto,memory=1         ... and what its peak memory is made of (memory_peak.py; memory=stages
                                            without allocator history: weights, LoRA, optimizer, step)
    kind=harness,preset=lean,batch=12       the harness (train_throughput.py) at the same settings, same run
    kind=train,...,compile_options=a:1;b:x  an A/B row: inductor options of the compiled layers changed
    kind=train,...,fp8_products=all         an A/B row: FP8 in both products of every frozen layer
    kind=train,...,preset_fields=a:0;b:1    an A/B row: fields of the named SpeedPreset changed (0/1, integers)
    kind=train,...,profile=1                ... and the GPU kernels of 2 steps after warm-up (profile_*.txt)
    kind=eval,batch=0,clips=512             evaluate() with its defaults (batch 0 = auto), random weights
    kind=eval,...,attention=efficient       an A/B row: the batch-invariant mode's decoder attention
                                            (inference.batch_invariant.DECODER_ATTENTION)
    kind=eval-recipe,batch=8                the guide's evaluation loop (eval_throughput.py loop=recipe)
    kind=e2e,train_clips=4000,eval_clips=500,epochs=3   `train` end to end with evaluation by generation

Timing: a callback synchronizes the GPU at the begin and end of every optimizer step; the median over the
steps after `--warmup` (compilation and warm-up excluded) is `median_step_s`. Peak = max_memory_allocated
over the whole call. The label length used for MFU is the mean real label length of the audio folder.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import time
import traceback
import uuid
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab_patches  # noqa: E402
import common  # noqa: E402
import eval_throughput  # noqa: E402
import train_throughput  # noqa: E402
from memory_peak import MemoryStages, PeakBreakdown  # noqa: E402
from profile_train_step import ProfileSteps  # noqa: E402
from whispertune.atomic_files import write_file_atomically  # noqa: E402
from whispertune.config import load_config  # noqa: E402
from whispertune.inference import batch_invariant  # noqa: E402
from whispertune.inference.evaluate import evaluate  # noqa: E402
from whispertune.inference.options import DecodingOptions, LoadOptions  # noqa: E402
from whispertune.training.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "configs" / "reference-large-v2-marathi-int8.yaml"
MFU_FORMULA = "samples_per_s * flops_per_sample / peak_tflops; flops_per_sample = common.train_flops_per_sample(arch, label_len)"


class StepTimer(TrainerCallback):
    """Synchronized wall time of each optimizer step, and the peak memory of the steps before any evaluation."""

    def __init__(self):
        self.times: list[float] = []
        self.train_peak_gib: float | None = None
        self._start = 0.0
        self._evaluated = False

    def on_step_begin(self, args, state, control, **kwargs):
        common.sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        common.sync()
        self.times.append(time.perf_counter() - self._start)
        if torch.cuda.is_available() and not self._evaluated:
            self.train_peak_gib = round(torch.cuda.max_memory_allocated() / 2**30, 3)

    def on_evaluate(self, args, state, control, **kwargs):
        self._evaluated = True

    def summary(self, warmup: int, batch: int, arch: str, label_len: float, peak_tflops: float | None) -> dict:
        timed = self.times[warmup:] or self.times
        median = statistics.median(timed)
        flops = common.train_flops_per_sample(arch, round(label_len), False)["total"]
        out = {"steps": len(self.times), "median_step_s": round(median, 4), "samples_per_s": round(batch / median, 3),
               "step_spread_s": [round(min(timed), 4), round(max(timed), 4)], "mean_step_s": round(statistics.mean(timed), 4),
               "step_s": [round(t, 3) for t in self.times], "label_len_mean": round(label_len, 2),
               "flops_per_sample": flops, "mfu_formula": MFU_FORMULA}
        if peak_tflops:
            out["mfu"] = round(batch / median * flops / (peak_tflops * 1e12), 4)
        return out


def replicate(audio: Path, split: str, rows: int, out: Path) -> Path:
    """A folder whose `split` has `rows` rows cycling over `audio/split`'s clips (each row decoded on its own)."""
    with open(audio / split / "metadata.csv", newline="", encoding="utf-8") as fh:
        source = list(csv.DictReader(fh))
    (out / split).mkdir(parents=True, exist_ok=True)
    with open(out / split / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "id", "sentence"])
        for i in range(rows):
            row = source[i % len(source)]
            writer.writerow([str((audio / split / row["file_name"]).resolve()), f"{split}-{i}", row["sentence"]])
    return out


def label_length(processor_dir: Path, audio: Path) -> float:
    """Mean label length (prefix + text + end token, minus the start token the collator drops) of the train split."""
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(processor_dir).tokenizer
    tok.set_prefix_tokens(language="mr", task="transcribe", predict_timestamps=False)
    with open(audio / "train" / "metadata.csv", newline="", encoding="utf-8") as fh:
        lengths = [len(tok(r["sentence"]).input_ids) - 1 for r in csv.DictReader(fh)]
    return statistics.mean(lengths)


def overrides(ctx, spec: dict, out: Path, audio: Path) -> list[str]:
    batch = int(spec.get("batch", 0))
    items = [f"model.name_or_path={ctx.model_dir}", "data.source=folder", f"data.path={audio}",
             "data.train_split=train", "data.eval_split=null", "data.text_column=sentence",
             f"data.num_proc={ctx.args.num_proc}", f"data.cache_dir={ctx.work / 'features'}",
             f"train.output_dir={out}", "train.save_strategy=no", "train.eval_strategy=no", "train.report_to=[]",
             "train.logging_steps=1", f"train.speed_preset={spec.get('preset', 'auto')}",
             f"train.max_steps={int(spec.get('steps', ctx.args.steps))}"]
    if batch:
        items += [f"train.speed_batch_size={batch}", f"train.per_device_batch_size={batch}"]
    if not torch.cuda.is_available():  # CPU smoke test: presets do not apply, the reference's fp16/int8 cannot run
        items += ["train.precision=fp32", "quantization.mode=none"]
    return items + [x.replace(";", ",") for x in spec.get("set", "").split("|") if x]


def train_row(ctx, spec: dict) -> dict:
    out = ctx.work / f"run-{spec['label']}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(REFERENCE, overrides(ctx, spec, out, ctx.args.audio))
    timer = StepTimer()
    # memory=1: allocator history by source line (not on compiled checkpointed layers with torch 2.11);
    # memory=stages: the step's peak split by owner from the allocator's counters (works everywhere)
    memory = spec.get("memory")
    breakdown = (MemoryStages(step=ctx.args.warmup + 2) if memory == "stages"
                 else PeakBreakdown(start=ctx.args.warmup + 2) if memory else None)
    profiler = ProfileSteps(ctx.args.warmup + 2, f"{spec['label']} (run {ctx.run_id})") if spec.get("profile") else None
    result = train(cfg, extra_callbacks=[timer] + [c for c in (breakdown, profiler) if c])
    done = load_config(out / "config.yaml")  # the config as the preset left it
    batch = done.train.per_device_batch_size
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    row = {"batch": batch, "preset": done.train.speed_preset, "quantization": done.quantization.mode,
           "precision": done.train.precision, "gradient_checkpointing": done.train.gradient_checkpointing,
           **timer.summary(ctx.args.warmup, batch, ctx.args.arch, ctx.label_len, ctx.peak_tflops),
           "loss_first": losses[0] if losses else None, "loss_last": statistics.mean(losses[-5:]) if losses else None,
           "stage_seconds": result.seconds}
    row["nonfinite_skipped"] = max([h.get("nonfinite_skipped", 0) for h in result.log_history] or [0])
    if breakdown:  # the recorded steps are slower: the row's timing comes from the other steps' median
        row["memory_breakdown"] = breakdown.result
    if profiler:  # two profiled steps (slower) are inside the median's steps: marked in the row
        path = ctx.args.results_dir / f"profile_{ctx.run_id}_{spec['label']}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, "\n".join(profiler.table) + "\n")
        row.update(profile_file=path.name, profiled_steps=[ctx.args.warmup + 3, ctx.args.warmup + 4])
    return row


def harness_row(ctx, spec: dict) -> dict:
    batch = int(spec.get("batch", 0)) or train_throughput.presets.get_preset(spec.get("preset", "lean")).batch_size
    text = f"preset={spec.get('preset', 'lean')},batch={batch},label={spec['label']}"
    args = argparse.Namespace(arch=ctx.args.arch, model_dir=None, label_len=ctx.padded_len, warmup=ctx.args.warmup,
                              steps=ctx.args.harness_steps, peak_tflops=ctx.peak_tflops or 0,
                              results_dir=str(ctx.work / "harness"))
    record = train_throughput.run_spec(text, args, ctx.model_dir, ctx.env, ctx.run_id)
    keep = ("samples_per_s", "peak_gib", "loss_first", "loss_last", "mfu", "error", "label_len")
    return {"batch": batch, "median_step_s": round(record["ms_per_step"] / 1000, 4) if "ms_per_step" in record else None,
            **{k: record[k] for k in keep if k in record}}


def eval_row(ctx, spec: dict) -> dict:
    folder = replicate(ctx.args.audio, "test", int(spec.get("clips", 512)), ctx.work / "eval-audio")
    cfg = load_config(REFERENCE, [f"data.path={folder}", "data.source=folder", "data.text_column=sentence",
                                  f"data.num_proc={ctx.args.num_proc}", f"data.cache_dir={ctx.work / 'features'}"])
    # invariant=0: transformers' default kernels instead of the batch-invariant ones (LoadOptions.batch_invariant)
    load = LoadOptions(language="mr", batch_invariant=spec.get("invariant", "1") == "1")
    result = evaluate(str(ctx.model_dir), data=cfg.data, split="test", load=load,
                      decoding=DecodingOptions(batch_size=int(spec.get("batch", 0)),
                                               max_new_tokens=int(spec.get("new_tokens", 40))), progress=False)
    return {"batch": result.info["batch_size"], "clips": result.n_utterances, "seconds": round(result.seconds, 3),
            "tokens_per_s": result.info["tokens_per_s"], "generated_tokens": result.info["generated_tokens"],
            "utterances_per_s": round(result.n_utterances / result.seconds, 2), "wer": result.wer, "cer": result.cer,
            "adapter_merged": result.info.get("adapter_merged"), "batch_invariant": result.info.get("batch_invariant"),
            "guard": result.info.get("guard"), "decoder_attention": batch_invariant.DECODER_ATTENTION if result.info.get("batch_invariant") else None}


def eval_recipe_row(ctx, spec: dict) -> dict:
    batch = int(spec.get("batch", 8))
    args = argparse.Namespace(arch=ctx.args.arch, new_tokens=int(spec.get("new_tokens", 40)), warmup=1,
                              batches=int(spec.get("batches", 8)), check=0, results_dir=str(ctx.work / "harness"))
    feats = torch.randn(batch * 2, common.ARCHS[ctx.args.arch]["mels"], common.ENCODER_FRAMES,
                        generator=torch.Generator().manual_seed(1)).to(common.device())
    record = eval_throughput.run_spec(f"loop=recipe,batch={batch},label={spec['label']}", args, ctx.model_dir,
                                      ctx.env, ctx.run_id, feats)
    keep = ("batch", "tokens_per_s", "utterances_per_s", "peak_gib", "batches_timed", "s_per_batch", "s_per_batch_spread",
            "error")
    return {k: record[k] for k in keep if k in record}


def e2e_row(ctx, spec: dict) -> dict:
    folder = ctx.work / "e2e-audio"
    replicate(ctx.args.audio, "train", int(spec.get("train_clips", 4000)), folder)
    replicate(ctx.args.audio, "test", int(spec.get("eval_clips", 500)), folder)
    out = ctx.work / "run-e2e"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ctx.work / "features-e2e", ignore_errors=True)  # preprocessing is part of the measurement
    items = overrides(ctx, {**spec, "steps": -1}, out, folder) + [
        "data.eval_split=test", f"data.cache_dir={ctx.work / 'features-e2e'}", "train.eval_strategy=epoch",
        # the product's evaluation batch (auto), not the reference YAML's recipe value 8: run e289b4fa spent
        # 557 of its 1225 s in three evaluations at batch 8
        "eval.batch_size=0",
        "train.predict_with_generate=true", f"train.num_epochs={spec.get('epochs', 3)}", "train.logging_steps=25"]
    cfg = load_config(REFERENCE, items)
    timer = StepTimer()
    start = time.perf_counter()
    result = train(cfg, extra_callbacks=[timer])
    wall = time.perf_counter() - start
    done = load_config(out / "config.yaml")
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    steady = timer.summary(ctx.args.warmup, done.train.per_device_batch_size, ctx.args.arch, ctx.label_len,
                           ctx.peak_tflops)
    return {"wall_s": round(wall, 1), "wall_min": round(wall / 60, 2), "stage_seconds": result.seconds,
            **steady, "train_peak_gib": timer.train_peak_gib, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "preset": done.train.speed_preset, "batch": done.train.per_device_batch_size,
            "train_clips": int(spec.get("train_clips", 4000)), "eval_clips": int(spec.get("eval_clips", 500)),
            "unique_audio_files": len(list((ctx.args.audio / "train").glob("*.mp3"))),
            "epochs": done.train.num_epochs, "global_step": result.global_step, "eval": result.eval_metrics,
            "evaluations": sum(1 for h in result.log_history if "eval_loss" in h)}


KINDS = {"train": train_row, "harness": harness_row, "eval": eval_row, "eval-recipe": eval_recipe_row, "e2e": e2e_row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, required=True, help="Common-Voice-shaped folder (make_cv_like.sh)")
    parser.add_argument("--processor", type=Path, required=True, help="Whisper processor files for random weights")
    parser.add_argument("--arch", default="tiny-random", choices=sorted(common.ARCHS))
    parser.add_argument("--model-dir", type=Path, help="a real checkpoint instead of random weights of --arch")
    parser.add_argument("--spec", action="append", default=[])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per train row")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the median")
    parser.add_argument("--harness-steps", type=int, default=20)
    parser.add_argument("--num-proc", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/whispertune-product"))
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--run-id", default=uuid.uuid4().hex[:8],
                        help="shared by several invocations of one suite run (run_product_suite.sh allrows)")
    args = parser.parse_args(argv)
    common.quiet()
    ctx = argparse.Namespace(args=args, work=args.work, env=common.environment(), run_id=args.run_id,
                             peak_tflops=args.peak_tflops if torch.cuda.is_available() else None)
    args.work.mkdir(parents=True, exist_ok=True)
    ctx.model_dir = args.model_dir or common.random_checkpoint(args.arch, args.work)
    for path in args.processor.iterdir():  # processor files next to the random weights, as in a Hub checkpoint
        if path.is_file() and path.suffix in (".json", ".txt") and not (ctx.model_dir / path.name).exists():
            shutil.copy(path, ctx.model_dir / path.name)
    ctx.label_len = label_length(ctx.model_dir, args.audio)
    ctx.padded_len = 8 * round((ctx.label_len + 12) / 8)  # ~ a batch's longest label rounded up to 8
    for text in args.spec or ["kind=train,preset=auto"]:
        spec = dict(item.split("=", 1) for item in text.split(",") if item)
        spec.setdefault("label", text)
        record = {"bench": "product", "run_id": ctx.run_id, "kind": spec.get("kind", "train"), "label": spec["label"],
                  "spec": text, "arch": args.arch, "weights": f"real: {args.model_dir}" if args.model_dir else "random",
                  "path": "harness" if spec.get("kind") in ("harness", "eval-recipe") else "product",
                  "world_size": 1, **ctx.env}
        common.free_memory()
        torch._dynamo.reset()
        try:
            with ab_patches.all_patches(spec):
                record.update(KINDS[spec.get("kind", "train")](ctx, spec))
        except Exception as exc:  # noqa: BLE001 - one failing row must not end the run
            record["error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
        if torch.cuda.is_available():
            record.setdefault("peak_gib", round(torch.cuda.max_memory_allocated() / 2**30, 3))
            # a row that failed while PeakBreakdown was recording must not leave the recording on for the next
            # rows (run a8fd17be: torch 2.11's recorder + compiled checkpointed layers fail, pytorch#179536)
            torch.cuda.memory._record_memory_history(enabled=None)
        common.write_result("product_throughput", record, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
