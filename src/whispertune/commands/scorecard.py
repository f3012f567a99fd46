"""`whispertune scorecard`: what an adapter gained and what it cost, base vs tuned on the same inputs."""

from __future__ import annotations

import argparse

from ..errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..inference.scorecard_report import ALIASES, THRESHOLD_EXIT_CODE
    from ..inference.scorecard_settings import ScorecardSettings

    d = ScorecardSettings()
    parser = subparsers.add_parser(
        "scorecard",
        help="base vs tuned: test WER/CER, forgetting, language ID, translate, hallucination, loops, long form, "
        "timestamps",
        description="Run the base model and base + adapter on the same inputs and write scorecard.json, "
        "scorecard.md and scorecard.png to --out. Test data comes from --config / --data.path DIR (like "
        "evaluate); the English control set and the other languages' clips are synthesized with espeak-ng "
        f"unless given. Exit code {THRESHOLD_EXIT_CODE} when a --fail-on threshold is crossed (files are written "
        "first), 2 on bad input. See docs/scorecard.md.",
    )
    parser.add_argument("adapter", metavar="ADAPTER", help="LoRA adapter directory, or a training run directory "
                        "with adapter/ inside")
    parser.add_argument("--model", metavar="M", help="base model (default: the adapter's base)")
    parser.add_argument("--config", metavar="F", help="YAML config with the data section (as for evaluate)")
    parser.add_argument("--split", metavar="S", help="test split (default: data.eval_split, else test)")
    parser.add_argument("--language", help="target language (default: the adapter's)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the scorecard files go")
    parser.add_argument("--fail-on", metavar="NAME=LIMIT,...", help="exit non-zero when the tuned model is worse "
                        "than the base by more than LIMIT on a row, e.g. forgetting=5,loop_rate=2 (names: row keys "
                        f"of scorecard.json or {', '.join(ALIASES)})")
    parser.add_argument("--clips", type=int, default=d.clips, metavar="N", help=f"clips per probe (default {d.clips})")
    parser.add_argument("--test-clips", type=int, default=d.test_clips, metavar="N",
                        help=f"test-split clips scored and joined for long form (default {d.test_clips})")
    parser.add_argument("--long-form-seconds", type=float, default=d.long_form_seconds, metavar="S",
                        help=f"length of each long-form file (default {d.long_form_seconds:g})")
    parser.add_argument("--long-form-files", type=int, default=d.long_form_files, metavar="N")
    parser.add_argument("--english", metavar="DIR", help="English control set: audio folder with a test split "
                        "(default: the shipped English test sentences, synthesized)")
    parser.add_argument("--translations", metavar="TSV", help="source sentence<TAB>English translation, for chrF "
                        "(default: shipped for Marathi)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N")
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, metavar="N")
    parser.add_argument("--no-guard", action="store_true", help="decode without the repetition guard")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..inference.scorecard import scorecard
    from ..inference.scorecard_report import parse_thresholds
    from ..inference.scorecard_settings import ScorecardSettings

    thresholds = parse_thresholds(args.fail_on)  # a typo fails before minutes of decoding
    if min(args.clips, args.test_clips, args.batch_size, args.max_new_tokens) < 1 or args.long_form_files < 0 \
            or args.long_form_seconds <= 0:
        raise UserError("--clips, --test-clips, --batch-size and --max-new-tokens must be at least 1, "
                        "--long-form-files at least 0 and --long-form-seconds positive")
    cfg = load_config(args.config, args.overrides)
    if not cfg.data.path:
        raise UserError("no test data: give --config with a data section, or --data.path DIR "
                        "(and --data.source folder|manifest|disk|hub)")
    settings = ScorecardSettings(
        clips=args.clips, test_clips=args.test_clips, long_form_seconds=args.long_form_seconds,
        long_form_files=args.long_form_files, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        guard=not args.no_guard, english_dir=args.english, translations=args.translations,
    )
    card = scorecard(args.adapter, data=cfg.data, model=args.model, split=args.split or cfg.data.eval_split or "test",
                     language=args.language, quantization=cfg.quantization.mode, device=args.device,
                     settings=settings)
    return finish(card, thresholds, args.out)


def finish(card, thresholds: dict[str, float], out: str) -> int:
    """Mark the thresholds, write the files, print the table; THRESHOLD_EXIT_CODE when one is crossed."""
    from ..inference.scorecard_report import THRESHOLD_EXIT_CODE, apply_thresholds, write_scorecard

    failed = apply_thresholds(card, thresholds)
    paths = write_scorecard(card, out)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if failed:
        print(f"whispertune: scorecard: thresholds crossed: {', '.join(r.key for r in failed)}")
        return THRESHOLD_EXIT_CODE
    return 0
