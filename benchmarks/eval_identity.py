"""`whispertune.inference.evaluate.evaluate()` with its defaults against unbatched bf16 greedy decoding, on real weights.

Random weights never emit the end token, so whether the product's batched, length-sorted, padded decoding
returns exactly what decoding one clip at a time returns can only be checked on a real checkpoint: here
the real whisper-base (`--model-dir`, a transformers copy of embedded:whisper-base). For each audio folder
(`--audio DIR:LANG`, split `test`), the reference is plain transformers: `from_pretrained(dtype=bfloat16)`,
one clip per `generate(language=..., task="transcribe")` call, greedy, with the batch-invariant kernels that
`evaluate()` uses by default on CUDA (`inference/batch_invariant.make_batch_invariant`); the row also counts how
many transcripts equal those of transformers' default kernels (SDPA), one clip per call, and those of
`evaluate()` itself at batch 1. The reference decodes each clip with its own duration-bounded token limit, as
evaluate() does; clips the repetition guard re-decodes (counted in the row) differ from greedy by design. Appends one JSON line per folder to
benchmarks/results/product_throughput.jsonl (kind `eval-identity`).
"""

from __future__ import annotations

import argparse
import copy
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
from whispertune.inference import batch_invariant  # noqa: E402
from whispertune.inference.batch_invariant import make_batch_invariant  # noqa: E402
from whispertune.inference.decode_guards import is_looping, token_limit  # noqa: E402
from whispertune.inference.evaluate import evaluate  # noqa: E402
from whispertune.inference.options import DecodingOptions, LoadOptions  # noqa: E402


def unbatched(model_dir: Path, data: DataConfig, language: str, max_new_tokens: int,
              invariant: bool) -> tuple[dict, float, int, dict]:
    """{id: text} decoded one clip at a time with plain transformers in bf16, the seconds it took, tokens made,
    and what `divergence` needs ({id: (features, token ids)}, the model, the processor). `invariant`: with the
    batch-invariant kernels evaluate() uses by default (`make_batch_invariant`), else transformers' defaults."""
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16).to(common.device()).eval()
    if invariant:
        make_batch_invariant(model)
    rows = prepare_split(load_examples(data, "test"), processor, data, language=language, task="transcribe")
    texts, tokens, kept = {}, 0, {}
    start = time.perf_counter()
    for row in rows.with_format("numpy"):
        feats = torch.as_tensor(row["input_features"][None], dtype=torch.bfloat16, device=common.device())
        with torch.inference_mode():
            # the clip's own duration-bounded limit, as evaluate() gives each clip (decode_guards.token_limit)
            out = model.generate(input_features=feats, language=language, task="transcribe",
                                 max_new_tokens=token_limit(float(row["duration"]), max_new_tokens), num_beams=1,
                                 do_sample=False)
        tokens += out.shape[1]  # one clip: no padding, every new token counts
        texts[str(row["id"])] = processor.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        kept[str(row["id"])] = (feats, out[0].tolist())
    return texts, time.perf_counter() - start, tokens, {"clips": kept, "model": model, "processor": processor}


def divergence(ref: dict, clip_id: str, hypothesis: str, language: str) -> dict:
    """Where the batched transcript leaves the unbatched one, and how close the model's top two tokens were there.

    The unbatched token ids are walked until their decoded text stops being a prefix of the batched text
    (re-tokenizing the batched text would not give the ids it was generated as); at that position the
    unbatched bf16 model and an fp32 copy score the next token given the shared prefix. A top-1/top-2 gap near
    bf16's resolution (~0.06 at logits of 8-16) is a numeric tie that batching's different GEMM order can
    flip, not a decoding bug.
    """
    feats, ids = ref["clips"][clip_id]
    tok, model = ref["processor"].tokenizer, ref["model"]
    tok.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)
    prompt, special = tok.prefix_tokens, set(tok.all_special_ids)
    text_ids = [i for i in ids if i not in special] + [tok.eos_token_id]
    target = hypothesis.strip()
    k = 0
    while k < len(text_ids) - 1 and target.startswith(tok.decode(text_ids[: k + 1], skip_special_tokens=True).strip()):
        k += 1
    out = {"position": k, "unbatched_token": tok.decode([text_ids[k]])}
    if "fp32" not in ref:
        ref["fp32"] = copy.deepcopy(model).float()
    for name, m, dtype in (("bf16", model, torch.bfloat16), ("fp32", ref["fp32"], torch.float32)):
        with torch.inference_mode():
            prefix = torch.tensor([prompt + text_ids[:k]], device=feats.device)
            last = m(input_features=feats.to(dtype), decoder_input_ids=prefix).logits[0, -1].float()
        top = torch.topk(last, 2)
        out[f"top2_{name}"] = [tok.decode([int(i)]) for i in top.indices]
        out[f"gap_{name}"] = round(float(top.values[0] - top.values[1]), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--audio", action="append", required=True, help="FOLDER:LANGUAGE, split test, column sentence")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/whispertune-identity"))
    parser.add_argument("--decoder-attention", choices=["eager", "efficient"], default=batch_invariant.DECODER_ATTENTION,
                        help="an A/B run: the batch-invariant mode's decoder attention (batch_invariant.DECODER_ATTENTION)")
    parser.add_argument("--run-id", default=uuid.uuid4().hex[:8], help="shared with the other rows of one suite run")
    args = parser.parse_args(argv)
    batch_invariant.DECODER_ATTENTION = args.decoder_attention  # reference and evaluate() alike
    common.quiet()
    env, run_id = common.environment(), args.run_id
    for item in args.audio:
        folder, language = item.rsplit(":", 1)
        data = DataConfig(source="folder", path=folder, text_column="sentence", cache_dir=str(args.work / "features"))
        common.free_memory()
        result = evaluate(str(args.model_dir), data=data, split="test", load=LoadOptions(language=language),
                          decoding=DecodingOptions(max_new_tokens=args.max_new_tokens), progress=False)  # every other setting: defaults
        # the same defaults one clip per batch: batching alone changes nothing (guard fallbacks included)
        one_by_one = evaluate(str(args.model_dir), data=data, split="test", load=LoadOptions(language=language),
                              decoding=DecodingOptions(batch_size=1, max_new_tokens=args.max_new_tokens), progress=False)
        alone = {p.id: p.hypothesis for p in one_by_one.predictions}
        reference, ref_seconds, ref_tokens, ref = unbatched(args.model_dir, data, language, args.max_new_tokens, True)
        vanilla, _, _, _ = unbatched(args.model_dir, data, language, args.max_new_tokens, False)
        same = [p.id for p in result.predictions if p.hypothesis == reference[p.id]]
        differ = [{"id": p.id, "whispertune": p.hypothesis, "unbatched": reference[p.id],
                   "first_divergence": divergence(ref, p.id, p.hypothesis, language)}
                  for p in result.predictions if p.hypothesis != reference[p.id]][:8]
        same_vanilla = [p.id for p in result.predictions if p.hypothesis == vanilla[p.id]]
        common.write_result("product_throughput", {
            "bench": "product", "kind": "eval-identity", "run_id": run_id, "label": f"identity-{language}",
            "path": "product", "weights": f"real: {args.model_dir.name}", "language": language, "folder": folder,
            "batch": result.info["batch_size"], "clips": result.n_utterances, "identical": len(same),
            "identical_share": round(len(same) / result.n_utterances, 4), "examples_differing": differ,
            "reference": "transformers generate, one clip per call, bf16, greedy, make_batch_invariant",
            "batch_invariant": result.info.get("batch_invariant"), "decoder_attention": args.decoder_attention,
            # the same clips against transformers' default kernels (SDPA), one clip per call
            "identical_to_default_kernels": len(same_vanilla),
            "identical_to_evaluate_batch_1": sum(p.hypothesis == alone[p.id] for p in result.predictions),
            # differing clips whose unbatched greedy transcript loops (decode_guards.is_looping): the guard replaced them
            "differing_reference_looping": sum(is_looping(reference[p.id]) for p in result.predictions
                                               if p.hypothesis != reference[p.id]),
            # clips the repetition guard re-decoded differ from plain greedy decoding by design
            "guard": result.info.get("guard"),
            "wer": result.wer, "cer": result.cer, "tokens_per_s": result.info["tokens_per_s"],
            "unbatched_tokens_per_s": round(ref_tokens / ref_seconds, 1), "max_new_tokens": args.max_new_tokens,
            "adapter_merged": result.info.get("adapter_merged"), "world_size": 1, **env}, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
