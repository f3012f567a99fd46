"""Generation throughput: the reference recipe's evaluation loop vs whispertune's.

Every batch: the encoder pass plus greedy decoding of exactly `--new-tokens` tokens after the 4-token
prompt (start, language, task, no-timestamps), as the baseline measured. Loops:
- `recipe`: int8 base + LoRA adapter (unmerged), fp16 autocast, `generate` per batch of 8;
- `whispertune`: bf16 base with the LoRA merged into it, SDPA, large batches (the clips of one batch
  have similar lengths after sorting, so nothing is wasted on padding); optionally a static KV cache
  (`cache=static`), which lets transformers compile the decoder step.

    python benchmarks/eval_throughput.py --arch large-v2 --spec loop=recipe,batch=8 \
        --spec loop=whispertune,batch=64 --spec loop=whispertune,batch=256

`--check N` also decodes the first N inputs with a plain bf16 batch-8 `generate` (adapter unmerged)
and records how many of whispertune's sequences equal it token for token.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
import uuid
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def load(model_dir: Path, loop: str):
    model = common.load_lora_model(model_dir, "int8" if loop == "recipe" else "none",
                                   "fp16" if loop == "recipe" else "bf16", prepare_kbit=False, freeze_encoder=False)
    if loop != "recipe":
        model = model.merge_and_unload()  # one matmul per projection instead of three
    model.eval()
    model.config.use_cache = True
    return model


def generate(model, feats: torch.Tensor, loop: str, new_tokens: int, cache: str) -> torch.Tensor:
    kwargs = dict(language="mr", task="transcribe", max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  do_sample=False, num_beams=1)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    dev = feats.device.type
    with torch.inference_mode():
        if loop == "recipe":
            with torch.autocast(dev, dtype=torch.float16, enabled=dev == "cuda"):
                return model.generate(input_features=feats.half(), **kwargs)
        return model.generate(input_features=feats.to(torch.bfloat16), **kwargs)


def new_part(seqs: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return seqs[:, -new_tokens:]


def run_spec(spec: str, args, model_dir: Path, env: dict, run_id: str, feats_all: torch.Tensor,
             results_name: str = "eval_throughput", extra: dict | None = None) -> dict:
    """Measure one generation loop, append its record to `<results_dir>/<results_name>.jsonl` and return it."""
    raw = dict(item.split("=", 1) for item in spec.split(",") if item)
    loop, batch, cache = raw.get("loop", "whispertune"), int(raw.get("batch", 8)), raw.get("cache", "dynamic")
    record = {**(extra or {}), "bench": "eval", "run_id": run_id, "label": raw.get("label", spec), "spec": spec, "arch": args.arch,
              "loop": loop, "batch": batch, "cache": cache, "new_tokens": args.new_tokens,
              "prompt_tokens": len(common.PROMPT), "batches_timed": args.batches, **env}
    common.free_memory()
    torch._dynamo.reset()
    try:
        model = load(model_dir, loop)
        times = []
        for i in range(args.warmup + args.batches):
            feats = feats_all[(i * batch) % len(feats_all):][:batch]
            if len(feats) < batch:
                feats = feats_all[:batch]
            common.sync()
            start = time.perf_counter()
            seqs = generate(model, feats, loop, args.new_tokens, cache)
            common.sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        got = new_part(seqs, args.new_tokens).shape[1]
        s = statistics.median(times)
        record.update(s_per_batch=round(s, 4), s_per_batch_spread=[round(min(times), 4), round(max(times), 4)], tokens_per_s=round(batch * got / s, 1),
                      utterances_per_s=round(batch / s, 2), tokens_generated=got,
                      peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None)
        if args.check and loop != "recipe":
            record.update(check_equal(model, model_dir, feats_all[: args.check], args, cache, batch))
        del model
    except Exception as exc:  # noqa: BLE001 - record the failure, go on with the next spec
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        traceback.print_exc()
    common.write_result(results_name, record, Path(args.results_dir))
    common.free_memory()
    return record


def check_equal(model, model_dir: Path, feats: torch.Tensor, args, cache: str, batch: int) -> dict:
    """Token-for-token agreement of whispertune's batched outputs with a plain bf16 batch-8 generate."""
    fast = torch.cat([new_part(generate(model, feats[i:i + batch], "whispertune", args.new_tokens, cache),
                               args.new_tokens) for i in range(0, len(feats), batch)])
    ref_model = common.load_lora_model(model_dir, "none", "bf16", prepare_kbit=False, freeze_encoder=False).eval()
    ref_model.config.use_cache = True
    ref = torch.cat([new_part(generate(ref_model, feats[i:i + 8], "plain", args.new_tokens, "dynamic"),
                              args.new_tokens) for i in range(0, len(feats), 8)])
    del ref_model
    same = (fast == ref).all(dim=1)
    return {"check_n": len(feats), "check_identical_sequences": int(same.sum()),
            "check_token_agreement": round(float((fast == ref).float().mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny-random", choices=sorted(common.ARCHS))
    parser.add_argument("--spec", action="append", default=[], help="loop=recipe|whispertune,batch=N[,cache=static]")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--check", type=int, default=0, help="compare the first N outputs with a plain bf16 loop")
    parser.add_argument("--model-root", default="/tmp/whispertune-bench")
    parser.add_argument("--results-dir", default=str(common.RESULTS))
    args = parser.parse_args(argv)
    common.quiet()
    model_dir = common.random_checkpoint(args.arch, Path(args.model_root))
    largest = max(int(dict(i.split("=", 1) for i in s.split(",")).get("batch", 8)) for s in args.spec or ["batch=8"])
    gen = torch.Generator().manual_seed(1)
    feats_all = torch.randn(max(largest, args.check), common.ARCHS[args.arch]["mels"], common.ENCODER_FRAMES,
                            generator=gen).to(common.device())
    env, run_id = common.environment(), uuid.uuid4().hex[:8]
    for spec in args.spec or ["loop=whispertune,batch=8"]:
        run_spec(spec, args, model_dir, env, run_id, feats_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
