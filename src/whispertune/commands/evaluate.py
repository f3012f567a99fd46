"""`whispertune evaluate`: WER/CER of a base model (+ adapter) on a data split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .arg_types import BATCH_SIZE, COUNT, NEW_TOKENS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="transcribe a data split and report WER/CER (raw and normalized)",
        description="Evaluate a model, or a LoRA adapter on its base, on a data split. Data, model, quantization "
        "and generation settings come from --config and --section.key value overrides (e.g. --data.path DIR "
        "--data.source folder); the flags below override them. Writes metrics.json, predictions.jsonl and "
        "data_report.json to --out.",
    )
    parser.add_argument("--config", metavar="F", help="YAML config (the same file as for train)")
    parser.add_argument("--model", metavar="M", help="base model: Hub id, directory or embedded:whisper-base")
    parser.add_argument("--adapter", metavar="A", help="LoRA adapter directory or Hub id (its base is used "
                        "unless --model is given)")
    parser.add_argument("--split", metavar="S", help="split expression (default: data.eval_split, else test)")
    parser.add_argument("--language", help="language name or code (default: adapter's, else model.language)")
    parser.add_argument("--task", choices=["transcribe", "translate"])
    parser.add_argument("--batch-size", type=BATCH_SIZE, metavar="N", help="default: eval.batch_size")
    parser.add_argument("--max-new-tokens", type=NEW_TOKENS, metavar="N", help="default: generation.max_new_tokens")
    parser.add_argument("--max-samples", type=COUNT, metavar="N", help="default: data.max_eval_samples")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--out", metavar="DIR", help="write metrics.json and predictions.jsonl here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..inference.evaluate import evaluate
    from ..inference.options import DecodingOptions, LoadOptions

    cfg = load_config(args.config, args.overrides)
    if not cfg.data.path:
        raise UserError("no evaluation data: give --config with a data section, or --data.path DIR "
                        "(and --data.source folder|manifest|disk|hub)")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # an unusable --out fails before the model loads
    if args.adapter:
        # the adapter's whispertune.json knows its language and task better than the config defaults
        model, language, task = args.model, args.language, args.task
    else:
        model = args.model or cfg.model.name_or_path
        language, task = args.language or cfg.model.language, args.task or cfg.model.task
    evaluate(
        model,
        args.adapter,
        data=cfg.data,
        split=args.split or cfg.data.eval_split or "test",
        load=LoadOptions(quantization=cfg.quantization.mode, device=args.device, language=language, task=task),
        decoding=DecodingOptions(batch_size=args.batch_size or cfg.eval.batch_size,
                                 max_new_tokens=args.max_new_tokens or cfg.generation.max_new_tokens,
                                 num_beams=cfg.generation.num_beams, autocast=cfg.eval.autocast),
        out_dir=args.out,
        normalizer=cfg.eval.normalizer,
        max_samples=args.max_samples or cfg.data.max_eval_samples,
        sort_by_length=cfg.eval.sort_by_length,
    )
    if args.out:
        print(f"wrote {args.out}/metrics.json and {args.out}/predictions.jsonl")
    return 0
