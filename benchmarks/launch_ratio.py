"""Torchrun with one rank against the plain launch: samples/s ratios of product_throughput.jsonl rows.

    python benchmarks/launch_ratio.py benchmarks/results/product_throughput.jsonl --calls 2026-12-02T23:00:00

Rows are paired by label: `torchrun-NAME` against `plain-NAME` (run_product_suite.sh's `launches40`), among the rows
whose invocation started at or after `--calls` (one device call); `--launcher pgplain` pairs `pgplain-NAME`
rows (a plain launch with a one-rank process group, `pg18`) instead. Two ratios per pair, launcher over plain:
- `by_median`: samples/s from each row's median step (what the rows report);
- `paired_mean`: the mean of the same timed steps in both rows. Both launches read the data in the same order
  and a step's time follows its batch (the reference config's int8 steps vary 1.1-1.9 s), so comparing step for
  step removes most of that spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def pairs(rows: list[dict], since: str, warmup: int, launcher: str = "torchrun") -> list[dict]:
    """One dict per (`launcher` row, plain row) of the same NAME with both rows' run ids and the two ratios."""
    chosen = [r for r in rows if r.get("date", "") >= since and r.get("samples_per_s") and r.get("step_s")]
    by_name: dict[str, dict[str, list[dict]]] = {}
    for row in chosen:
        for prefix in ("plain-", f"{launcher}-"):
            if row["label"].startswith(prefix):
                by_name.setdefault(row["label"][len(prefix):], {}).setdefault(prefix, []).append(row)
    out = []
    for name, launches in sorted(by_name.items()):
        for ranked in launches.get(f"{launcher}-", []):
            for plain in launches.get("plain-", []):
                steps = min(len(ranked["step_s"]), len(plain["step_s"]))
                mean_ranked = statistics.mean(ranked["step_s"][warmup:steps])
                mean_plain = statistics.mean(plain["step_s"][warmup:steps])
                out.append({"config": name, "plain_run": plain["run_id"], f"{launcher}_run": ranked["run_id"],
                            "plain_samples_per_s": plain["samples_per_s"],
                            f"{launcher}_samples_per_s": ranked["samples_per_s"],
                            "by_median": round(ranked["samples_per_s"] / plain["samples_per_s"], 3),
                            "paired_mean": round(mean_plain / mean_ranked, 3), "timed_steps": steps - warmup})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--calls", default="", help="ISO date: only rows of invocations started at or after it")
    parser.add_argument("--warmup", type=int, default=6, help="steps left out (the suite's --warmup)")
    parser.add_argument("--launcher", default="torchrun", help="label prefix compared with plain- (torchrun, pgplain)")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    for pair in pairs(rows, args.calls, args.warmup, args.launcher):
        within = "within 5 %" if abs(pair["by_median"] - 1) <= 0.05 and abs(pair["paired_mean"] - 1) <= 0.05 else "NOT within 5 %"
        print(json.dumps(pair), within)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
