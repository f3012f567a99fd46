"""Render Markdown tables from benchmarks/results/*.jsonl (one table per benchmark and run).

    python benchmarks/render_table.py [--results-dir benchmarks/results] [--run RUN_ID ...]

Speed-ups are relative to the `recipe` row (training, evaluation), the fastest plain bf16 LoRA row
(training) or the `hf` row (preprocessing) of the same run: rows from different runs or devices are never
compared. Training's "loss ok" means every step's loss was finite and the last is below the first.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def read(results_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(results_dir.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}:{n}: not a JSON line ({exc})") from None
    return rows


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def header(rows: list[dict]) -> str:
    r = rows[0]
    return (f"{r['device']}; torch {r['torch']}, transformers {r['transformers']}, peft {r.get('peft')}, "
            f"bitsandbytes {r.get('bitsandbytes')}; {r['date'][:10]}; run `{r['run_id']}`")


def is_plain(r: dict) -> bool:
    """The plain bf16 LoRA baseline at any batch: bf16, no quantization, checkpointing, compile or FP8."""
    return (r["quantization"] == "none" and r["precision"] == "bf16" and r["checkpointing"] == "none"
            and not r["compile_layers"] and not r.get("fp8_weights") and not r["freeze_encoder"])


def train_table(rows: list[dict]) -> list[str]:
    base = next((r for r in rows if r.get("label") == "recipe" and "error" not in r), None)
    plain = max((r for r in rows if "error" not in r and is_plain(r)), key=lambda r: r["samples_per_s"], default=None)
    out = [f"Training, {rows[0]['arch']}, {rows[0].get('weights', 'random')} weights ({header(rows)}); LoRA r=32 q/v, {rows[0]['label_len']} label tokens, "
           f"{rows[0]['warmup']} warm-up + {rows[0]['steps']} timed AdamW steps, median",
           "", "| config | weights | batch | ckpt | compile | ms/step | samples/s | x recipe | x best plain | peak GiB "
           "| MFU | loss ok |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['label']} | {weights(r)} | {r['batch_size']} | {r['checkpointing']} | "
                       f"{'yes' if r['compile_layers'] else 'no'} | failed: {r['error'][:80].replace(chr(10), ' ')} | | | | | | |")
            continue
        speedup = r["samples_per_s"] / base["samples_per_s"] if base else None
        vs_plain = r["samples_per_s"] / plain["samples_per_s"] if plain else None
        out.append(f"| {r['label']} | {weights(r)} | {r['batch_size']} | {r['checkpointing']} | "
                   f"{'yes' if r['compile_layers'] else 'no'} | {_fmt(r['ms_per_step'], 0)} | "
                   f"{_fmt(r['samples_per_s'])} | {_fmt(speedup)} | {_fmt(vs_plain, 2)} | {_fmt(r['peak_gib'], 2)} | "
                   f"{_fmt(100 * r['mfu'] if r.get('mfu') is not None else None)}% | "
                   f"{'yes' if r['loss_finite'] and r['loss_last'] < r['loss_first'] else 'NO'} |")
    return out


def weights(r: dict) -> str:
    return "fp8" if r.get("fp8_weights") else {"none": r["precision"]}.get(r["quantization"], r["quantization"])


def eval_table(rows: list[dict]) -> list[str]:
    base = next((r for r in rows if r.get("loop") == "recipe" and "error" not in r), None)
    out = [f"Evaluation, {rows[0]['arch']} ({header(rows)}); greedy, {rows[0]['prompt_tokens']}-token prompt, "
           f"exactly {rows[0]['new_tokens']} new tokens, encoder pass included", "",
           "| loop | batch | cache | s/batch | tokens/s | utterances/s | x recipe | same as bf16 batch-8 loop |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['label']} | {r['batch']} | {r['cache']} | failed: {r['error'][:80].replace(chr(10), ' ')} | | | | |")
            continue
        speedup = r["tokens_per_s"] / base["tokens_per_s"] if base else None
        same = (f"{r['check_identical_sequences']}/{r['check_n']} sequences" if "check_n" in r else "-")
        out.append(f"| {r['label']} | {r['batch']} | {r['cache']} | {_fmt(r['s_per_batch'], 2)} | "
                   f"{_fmt(r['tokens_per_s'], 0)} | {_fmt(r['utterances_per_s'])} | {_fmt(speedup)} | {same} |")
    return out


def preprocess_table(rows: list[dict]) -> list[str]:
    out = [f"Feature extraction ({header(rows)}); {rows[0]['clips']} clips of 1-30 s, batch {rows[0]['batch']}", "",
           "| method | CPU threads | clips/s | x hf | max abs diff vs hf |", "|---|---|---|---|---|"]
    for r in rows:
        base = next((b for b in rows if b["method"] == "hf" and b["threads"] == r["threads"]), None)
        speedup = r["clips_per_s"] / base["clips_per_s"] if base else None
        out.append(f"| {r['method']} | {r['threads']} | {_fmt(r['clips_per_s'])} | {_fmt(speedup)} | "
                   f"{r['max_abs_diff_vs_hf']:.2e} |")
    return out


RENDER = {"train": train_table, "eval": eval_table, "preprocess": preprocess_table}


def render(rows: list[dict], runs: list[str] | None = None) -> str:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["bench"] not in RENDER or (runs and r.get("run_id") not in runs):
            continue
        # preprocessing runs twice per suite (all threads, one thread): group them by date instead
        key = r["date"][:13] if r["bench"] == "preprocess" else r["run_id"]
        groups[(r["bench"], key)].append(r)
    blocks = [RENDER[bench](group) for (bench, _), group in groups.items() if bench in RENDER]
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--run", action="append", help="only these run ids")
    args = parser.parse_args(argv)
    print(render(read(Path(args.results_dir)), args.run), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
