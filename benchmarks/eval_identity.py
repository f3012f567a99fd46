"""`whispertune.inference.evaluate.evaluate()` with its defaults against unbatched bf16 greedy decoding, on real weights.

Random weights never emit the end token, so whether the product's batched, length-sorted, padded decoding
returns exactly what decoding one clip at a time returns can only be checked on a real checkpoint: here
the real whisper-base (`--model-dir`, a transformers copy of embedded:whisper-base). For each audio folder
(`--audio DIR:LANG`, split `test`), the reference is plain transformers: `from_pretrained(dtype=bfloat16)`,
one clip per `generate(language=..., task="transcribe")` call, greedy. Appends one JSON line per folder to
benchmarks/results/product_throughput.jsonl (kind `eval-identity`).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from whispertune.config import DataConfig  # noqa: E402
from whispertune.data.features import prepare_split  # noqa: E402
from whispertune.data.sources import load_examples  # noqa: E402
from whispertune.inference.evaluate import evaluate  # noqa: E402


def unbatched(model_dir: Path, data: DataConfig, language: str, max_new_tokens: int) -> tuple[dict[str, str], float, int]:
    """{id: text} decoded one clip at a time with plain transformers in bf16, the seconds it took, tokens made."""
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16).to(common.device()).eval()
    rows = prepare_split(load_examples(data, "test"), processor, data, language=language, task="transcribe")
    texts, tokens = {}, 0
    start = time.perf_counter()
    for row in rows.with_format("numpy"):
        feats = torch.as_tensor(row["input_features"][None], dtype=torch.bfloat16, device=common.device())
        with torch.inference_mode():
            out = model.generate(input_features=feats, language=language, task="transcribe",
                                 max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
        tokens += out.shape[1]  # one clip: no padding, every new token counts
        texts[str(row["id"])] = processor.tokenizer.decode(out[0], skip_special_tokens=True).strip()
    return texts, time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--audio", action="append", required=True, help="FOLDER:LANGUAGE, split test, column sentence")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/whispertune-identity"))
    args = parser.parse_args(argv)
    common.quiet()
    env, run_id = common.environment(), uuid.uuid4().hex[:8]
    for item in args.audio:
        folder, language = item.rsplit(":", 1)
        data = DataConfig(source="folder", path=folder, text_column="sentence", cache_dir=str(args.work / "features"))
        common.free_memory()
        result = evaluate(str(args.model_dir), data=data, split="test", language=language,
                          max_new_tokens=args.max_new_tokens, progress=False)  # every other setting: defaults
        reference, ref_seconds, ref_tokens = unbatched(args.model_dir, data, language, args.max_new_tokens)
        same = [p.id for p in result.predictions if p.hypothesis == reference[p.id]]
        differ = [{"id": p.id, "whispertune": p.hypothesis, "unbatched": reference[p.id]}
                  for p in result.predictions if p.hypothesis != reference[p.id]][:5]
        common.write_result("product_throughput", {
            "bench": "product", "kind": "eval-identity", "run_id": run_id, "label": f"identity-{language}",
            "path": "product", "weights": f"real: {args.model_dir.name}", "language": language, "folder": folder,
            "batch": result.info["batch_size"], "clips": result.n_utterances, "identical": len(same),
            "identical_share": round(len(same) / result.n_utterances, 4), "examples_differing": differ,
            "wer": result.wer, "cer": result.cer, "tokens_per_s": result.info["tokens_per_s"],
            "unbatched_tokens_per_s": round(ref_tokens / ref_seconds, 1), "max_new_tokens": args.max_new_tokens,
            "adapter_merged": result.info.get("adapter_merged"), "world_size": 1, **env}, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
