"""Markdown tables of benchmarks/results/product_throughput.jsonl, one per run (what the README shows).

    python benchmarks/render_product_table.py [--results FILE] [--run RUN_ID ...]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "product_throughput.jsonl"


def _num(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def row_text(r: dict) -> str:
    kind = r.get("kind", "train")
    if r.get("error"):
        result = "failed: " + r["error"].splitlines()[0][:70]
    elif kind in ("train", "harness", "e2e"):
        result = f"{_num(r.get('samples_per_s'))} samples/s, {_num(r.get('median_step_s'), 3)} s/step"
        if r.get("loss_first") is not None:
            result += f", loss {_num(r['loss_first'])} -> {_num(r.get('loss_last'))}"
        if kind == "e2e":
            result += f", wall {_num(r.get('wall_min'))} min"
    elif kind == "eval-identity":
        result = f"{r['identical']}/{r['clips']} identical to unbatched bf16, WER {_num(r.get('wer'), 1)}"
        if "identical_to_default_kernels" in r:  # the reference then runs the batch-invariant kernels too
            result += (f" (batch-invariant kernels both sides; vs transformers' default kernels one clip at a "
                       f"time: {r['identical_to_default_kernels']}/{r['clips']})")
        if "differing_reference_looping" in r:
            result += (f"; {r['identical_to_evaluate_batch_1']}/{r['clips']} identical to evaluate() at batch 1; "
                       f"{r['differing_reference_looping']} of the differing clips loop greedily (the guard's fallback)")
    else:
        result = f"{_num(r.get('tokens_per_s'), 1)} tokens/s"
        guard = r.get("guard")
        if guard:
            result += (f" ({guard['looping_greedy']}/{r.get('clips')} clips loop greedily: {guard['fallback_decodes']} "
                       f"fallback decodes" + (f", {_num(guard['fallback_seconds'], 1)} of {_num(r.get('seconds'), 1)} s"
                                              if "fallback_seconds" in guard else "") + ")")
        elif r.get("s_per_batch_spread"):
            low, high = r["s_per_batch_spread"]
            result += f" ({r.get('batches_timed')} batches, {_num(low)}-{_num(high)} s each)"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else ""
    return (f"| {r['label']} | {r.get('path', '')} | {r.get('batch', '')} | {result} | "
            f"{_num(r.get('train_peak_gib') or r.get('peak_gib'), 2)} | {mfu} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--run", action="append", default=[])
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = defaultdict(list)
    for line in args.results.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            runs[record["run_id"]].append(record)
    for run_id, rows in runs.items():
        if args.run and run_id not in args.run:
            continue
        first = rows[0]
        print(f"Run `{run_id}`, {first.get('date', '')}, {first.get('device', '')}, torch {first.get('torch')}, "
              f"transformers {first.get('transformers')}, peft {first.get('peft')}, bitsandbytes {first.get('bitsandbytes')}, "
              f"{first.get('arch')} ({first.get('weights')} weights)\n")
        print("| row | path | batch | result | peak GiB | MFU |\n|---|---|---|---|---|---|")
        for r in rows:
            print(row_text(r))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
