"""`whispertune export --adapter A | --model M --format ct2 --out DIR`: CTranslate2 export with a parity check."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ..interop.ct2_export import CT2_QUANTIZATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model or adapter to CTranslate2 (faster-whisper), checked for parity",
        description="Merge the adapter (if given) into its base, convert with CTranslate2's transformers converter "
        "and transcribe a few clips with both models (same features and prompt, greedy). Exit code 2 when their "
        "WERs differ by more than --margin points. Without --clips, a few espeak-ng sentences in the model's "
        "language (English or Marathi) are used.",
    )
    parser.add_argument("--adapter", metavar="A", help="LoRA adapter directory or Hub id")
    parser.add_argument("--model", metavar="M", help="model (Hub id, directory, embedded:NAME); with --adapter: its base")
    parser.add_argument("--format", choices=["ct2"], default="ct2", help="export format")
    parser.add_argument("--quantization", choices=CT2_QUANTIZATIONS, default="int8")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (must not hold files)")
    parser.add_argument("--margin", type=float, default=1.0, help="largest WER difference allowed, in points")
    parser.add_argument("--clips", metavar="DIR", help="folder with metadata.csv (file_name,text) and the audio")
    parser.add_argument("--force", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..interop.ct2_export import export_ct2

    if not args.adapter and not args.model:
        raise UserError("export: give --adapter or --model")
    result = export_ct2(args.out, adapter=args.adapter, model=args.model, quantization=args.quantization,
                        clips=args.clips, margin=args.margin, overwrite=args.force)
    print(result.parity.summary())
    print(f"exported {result.out_dir} ({result.quantization}) in {result.seconds:.1f} s; "
          f"load it with faster_whisper.WhisperModel({str(result.out_dir)!r})")
    return 0
