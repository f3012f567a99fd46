"""`whispertune demo`: the main job on the embedded default (no network, no GPU needed)."""

from __future__ import annotations

import argparse

from .arg_types import BATCH_SIZE, COUNT, SEED, float_in, int_in


def register(sub: argparse._SubParsersAction) -> None:
    from whispertune.demo import DemoSettings

    d = DemoSettings()
    p = sub.add_parser("demo", help="adapt the embedded whisper-base to Marathi on synthesized speech, before/after",
                       description="Synthesize Marathi speech, measure zero-shot whisper-base, train a LoRA adapter, "
                                   "measure again. Runs offline on a CPU in about 20 minutes.")
    p.add_argument("--out", default=d.out_dir, help=f"run directory (default {d.out_dir})")
    p.add_argument("--corpus", default=None, help="corpus directory (default: in the user cache, reused)")
    p.add_argument("--model", default=d.model, help=f"base model (default {d.model})")
    p.add_argument("--variants", type=COUNT, default=d.variants, help="voices per sentence")
    p.add_argument("--train-sentences", type=COUNT, default=d.train_sentences, help="limit the training sentences")
    p.add_argument("--test-sentences", type=COUNT, default=d.test_sentences, help="test sentences to score")
    p.add_argument("--pack-utterances", type=int_in(1, 32), default=d.pack_utterances, metavar="N",
                   help=f"pack 1..N training clips into each 30 s window (default {d.pack_utterances}; 1: off)")
    p.add_argument("--epochs", type=float_in(0, None, lo_open=True), default=d.epochs)
    p.add_argument("--batch-size", type=BATCH_SIZE, default=d.batch_size)
    p.add_argument("--learning-rate", type=float_in(0, None, lo_open=True), default=d.learning_rate)
    p.add_argument("--lora-r", type=COUNT, default=d.lora_r)
    p.add_argument("--quantization", choices=["auto", "none", "int8", "nf4"], default=d.quantization,
                   help="base quantization (auto: int8 where bitsandbytes runs)")
    p.add_argument("--engines", default=",".join(d.engines), help="speech synthesizers, comma-separated")
    p.add_argument("--seed", type=SEED, default=d.seed)
    p.add_argument("--scorecard-clips", type=int_in(0), default=d.scorecard_clips, metavar="N",
                   help=f"clips per probe of the closing scorecard (default {d.scorecard_clips}; 0: none)")
    p.add_argument("--check", action="store_true",
                   help="exit 2 unless CER <= 35 %% and <= 1/3 of zero-shot, and WER <= 1/2 of zero-shot")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from whispertune.demo import DemoSettings, check_budget, run_demo

    settings = DemoSettings(
        out_dir=args.out, corpus_dir=args.corpus, model=args.model, variants=args.variants,
        train_sentences=args.train_sentences, test_sentences=args.test_sentences, pack_utterances=args.pack_utterances, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lora_r=args.lora_r,
        quantization=args.quantization, engines=tuple(e for e in args.engines.split(",") if e), seed=args.seed,
        scorecard_clips=args.scorecard_clips,
    )
    result = run_demo(settings)
    if args.check:
        check_budget(result)
    return 0


