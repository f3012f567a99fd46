"""`whispertune synth`: build a synthetic speech corpus with espeak-ng / Festival."""

from __future__ import annotations

import argparse

from ..data.synth import synthesize_corpus
from ..errors import UserError
from .arg_types import COUNT, SEED, float_in, int_in


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="synthesize a speech corpus (audiofolder layout) with espeak-ng and Festival",
        description="Speak each sentence VARIANTS times with different voices, rates and pitches and write "
        "16 kHz mono wav files with OUT/<split>/metadata.csv. A finished corpus with the same settings is reused.",
    )
    parser.add_argument("--language", default="mr", help="language code (default: mr; shipped sentences: mr, en)")
    parser.add_argument(
        "--sentences",
        metavar="FILE",
        help="one sentence per line (all into the first split), or a .tsv of split<TAB>sentence "
        "(default: the shipped sentences for the language)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--splits", default="train,dev,test", help="comma-separated splits to build (default: train,dev,test)")
    parser.add_argument("--variants", type=COUNT, default=3, help="voices per sentence (default: 3)")
    parser.add_argument("--seed", type=SEED, default=0, help="seed for the voice settings and noise (default: 0)")
    parser.add_argument("--noise-snr", "--snr", type=float_in(-30.0, 100.0), metavar="DB",
                        help="mix white/pink noise at this SNR in dB (a noisy test condition)")
    parser.add_argument("--voices", metavar="NAMES", help="comma-separated voices to use only, e.g. mr+f4 (espeak-ng "
                        "voice+variant) or marathi_NSK_diphone (Festival): a held-out voice's test set")
    parser.add_argument("--exclude-voices", metavar="NAMES", default="",
                        help="comma-separated voices never to use, e.g. mr+f4: hold a voice out of a training corpus")
    parser.add_argument("--join", type=int_in(1, 10), default=1, metavar="N",
                        help="join N consecutive sentences (one voice, short pauses) into each clip and write each "
                        "sentence's start/end as the clip's segments in <split>/metadata.jsonl: a corpus for "
                        "timestamp-preserving training (train.timestamp_probability; default: 1, no joining)")
    parser.add_argument("--engines", default="espeak-ng,festival", help="comma-separated engines (default: espeak-ng,festival)")
    parser.add_argument("--jobs", type=int_in(1, 256), default=2, help="clips synthesized in parallel (default: 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.overrides:
        raise UserError(f"synth takes no config overrides (got {', '.join(args.overrides)})")
    report = synthesize_corpus(
        args.out,
        language=args.language,
        sentences=args.sentences,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        variants=args.variants,
        seed=args.seed,
        noise_snr_db=args.noise_snr,
        engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
        jobs=args.jobs,
        progress=not args.no_progress,
        voices=_names(args.voices) if args.voices else None,
        exclude_voices=_names(args.exclude_voices),
        join_sentences=args.join,
    )
    print(report.summary())
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
