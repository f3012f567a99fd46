"""Loop rate and WER of `evaluate()` with and without the repetition guard (inference/decode_guards.py).

Zero-shot embedded whisper-base on a synthesized Marathi test split is where greedy decoding loops
("बाभी बाभी ..."); `--adapter` measures an adapted model the same way. Both runs have the token limit by
duration (it is not optional). Writes one JSON object to `--out` (default
benchmarks/results/guard_loops.json): per run, the share of greedy outputs that loop, the share still
looping after the guard, WER/CER raw and normalized, fallback decodes and seconds.

    whispertune synth --language mr --out /tmp/mr --splits test --variants 1
    python benchmarks/guard_loops.py --data /tmp/mr [--adapter runs/x/adapter] [--max-samples 70]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from whispertune.atomic_files import write_file_atomically
from whispertune.config import DataConfig
from whispertune.inference.evaluate import evaluate
from whispertune.inference.generation import load_for_inference
from whispertune.inference.options import DecodingOptions, LoadOptions

RESULTS = Path(__file__).resolve().parent / "results"


def measure(loaded, data: DataConfig, guard: bool, max_samples: int | None, max_new_tokens: int) -> dict:
    start = time.perf_counter()
    result = evaluate(loaded=loaded, data=data, split="test", guard=guard, max_samples=max_samples,
                      decoding=DecodingOptions(max_new_tokens=max_new_tokens), progress=False)
    stats, n = result.info["guard"], result.n_utterances
    return {
        "guard": guard, "n_utterances": n,
        "loop_rate_greedy": round(100 * stats["looping_greedy"] / n, 2),
        "loop_rate_kept": round(100 * stats["looping_kept"] / n, 2),
        "fallback_decodes": stats["fallback_decodes"],
        **{k: round(getattr(result, k), 2) for k in ("wer", "cer", "wer_normalized", "cer_normalized")},
        "generated_tokens": result.info["generated_tokens"], "seconds": round(time.perf_counter() - start, 1),
        "examples": [{"reference": p.reference, "hypothesis": p.hypothesis} for p in result.predictions[:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="audio folder with a test split (whispertune synth output)")
    parser.add_argument("--model", default="embedded:whisper-base")
    parser.add_argument("--adapter", help="measure this adapter on --model instead of the zero-shot base")
    parser.add_argument("--language", default="mr")
    parser.add_argument("--max-samples", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=255)
    parser.add_argument("--out", default=str(RESULTS / "guard_loops.json"))
    args = parser.parse_args()
    data = DataConfig(source="folder", path=args.data, eval_split="test")
    loaded = load_for_inference(args.model if not args.adapter else None, args.adapter,
                                LoadOptions(language=args.language, device="cpu" if not torch.cuda.is_available() else None))
    runs = [measure(loaded, data, guard, args.max_samples, args.max_new_tokens) for guard in (False, True)]
    record = {"model": args.model, "adapter": args.adapter, "language": args.language, "data": args.data,
              "max_new_tokens": args.max_new_tokens, "device": loaded.info["device"], "torch_threads":
              torch.get_num_threads(), "machine": platform.processor() or platform.machine(), "runs": runs}
    write_file_atomically(Path(args.out), json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    for run in runs:
        print(f"guard={run['guard']}: loops {run['loop_rate_greedy']} % greedy -> {run['loop_rate_kept']} % kept, "
              f"WER {run['wer']} CER {run['cer']} (normalized {run['wer_normalized']} / {run['cer_normalized']}), "
              f"{run['fallback_decodes']} fallback decodes, {run['seconds']} s")


if __name__ == "__main__":
    main()
