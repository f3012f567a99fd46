"""Accuracy of the product path: `train()` on a corpus, then `evaluate()` of its adapter on each test condition.

Each `--spec` is a comma-separated list of `label=NAME` and config overrides (`section.key=value`, as the CLI's
flags) applied on top of `--config`; the corpus (benchmarks/build_accuracy_corpus.sh) is read as an audio folder
with splits train / dev / test / test_noisy / test_voice. One JSON line per spec goes to
`<results-dir>/accuracy_runs.jsonl`: device, versions, date, run id, the exact overrides, steps, wall seconds by
stage, samples/s, peak GPU memory, and raw + normalized WER/CER per condition (greedy decoding, the product's
evaluate() defaults).

    python benchmarks/accuracy_runs.py --model-dir WB --corpus CORPUS --config configs/best-whisper-base-marathi.yaml \
        --spec label=noaug-s0,augment.enabled=false,train.seed=0 --spec label=aug-s0,augment.enabled=true,train.seed=0
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import traceback
import uuid
from pathlib import Path

import torch

import common
from whispertune.config import load_config
from whispertune.inference.evaluate import evaluate
from whispertune.inference.options import DecodingOptions, LoadOptions
from whispertune.training.trainer import train

CONDITIONS = ("test", "test_noisy", "test_voice")


def run_spec(args, spec: str, run_id: str, env: dict) -> dict:
    items = [item for item in spec.split(",") if item]
    label = next((i.split("=", 1)[1] for i in items if i.startswith("label=")), spec)
    overrides = [i for i in items if not i.startswith("label=")]
    out = args.work / label
    shutil.rmtree(out, ignore_errors=True)
    record = {"bench": "accuracy", "run_id": run_id, "label": label, "config": str(args.config),
              "overrides": overrides, "model": str(args.model_dir), "corpus": str(args.corpus), **env}
    cfg = load_config(args.config, [f"model.name_or_path={args.model_dir}", f"data.path={args.corpus}",
                                    f"train.output_dir={out}", f"data.cache_dir={args.work / 'features'}",
                                    *overrides])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(cfg, overwrite=True)
    record["train_wall_s"] = round(time.perf_counter() - start, 1)
    done = load_config(out / "config.yaml")  # as the run resolved it (preset applied)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    record.update(
        steps=result.global_step, stage_seconds=result.seconds, preset=done.train.speed_preset,
        batch=done.train.per_device_batch_size, epochs=done.train.num_epochs,
        samples_per_s=metrics["train"].get("train_samples_per_second"), loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None, eval=result.eval_metrics,
        train_peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None)
    scores, eval_seconds = {}, 0.0
    for condition in CONDITIONS:
        if not (args.corpus / condition / "metadata.csv").is_file():
            continue
        res = evaluate(adapter=str(result.adapter_dir), data=cfg.data, split=condition,
                       load=LoadOptions(), decoding=DecodingOptions(max_new_tokens=cfg.generation.max_new_tokens),
                       progress=False)
        eval_seconds += res.seconds
        scores[condition] = {k: round(getattr(res, k), 2) for k in ("wer", "cer", "wer_normalized", "cer_normalized")}
        scores[condition]["clips"] = res.n_utterances
    record.update(scores=scores, eval_seconds=round(eval_seconds, 1),
                  total_wall_s=round(time.perf_counter() - start, 1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a Whisper checkpoint directory")
    parser.add_argument("--corpus", type=Path, required=True, help="audio folder (build_accuracy_corpus.sh)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--spec", action="append", default=[])
    parser.add_argument("--work", type=Path, default=Path("/tmp/whispertune-accuracy"))
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    common.quiet()
    args.work.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    env, run_id = common.environment(), uuid.uuid4().hex[:8]
    for spec in args.spec or ["label=default"]:
        common.free_memory()
        try:
            record = run_spec(args, spec, run_id, env)
        except Exception as exc:  # noqa: BLE001 - one failing spec must not end the run
            traceback.print_exc()
            record = {"bench": "accuracy", "run_id": run_id, "spec": spec, "error": f"{type(exc).__name__}: {exc}"[:500],
                      **env}
        with open(args.results_dir / "accuracy_runs.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(json.dumps({k: record.get(k) for k in ("label", "steps", "train_wall_s", "scores", "error")},
                         ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
