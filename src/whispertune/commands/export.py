"""`whispertune export --adapter A | --model M --format ct2|ggml --out DIR`: CTranslate2 (faster-whisper) or GGML
(whisper.cpp) export, checked for parity through that client."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ..interop.ct2_export import CT2_QUANTIZATIONS
from ..interop.ggml_format import FORMATS as GGML_FORMATS
from ..interop.parity import DEFAULT_MARGIN


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model or adapter to CTranslate2 (faster-whisper) or GGML (whisper.cpp), checked for parity",
        description="Merge the adapter (if given) into its base, convert it (ct2: CTranslate2's transformers "
        "converter; ggml: whispertune's GGML writer, one file per --ggml-formats entry) and transcribe a few clips "
        "with whispertune and with the export's own client (faster-whisper or whisper.cpp through pywhispercpp, "
        "each reading the audio itself; greedy). Exit code 2 when the clips show that their WERs differ by more than "
        "--margin points: the whole 95% paired bootstrap interval of the difference lies beyond it (docs/deploy.md). "
        "Without --clips, a few espeak-ng sentences in the model's language (English or Marathi) are used.",
    )
    parser.add_argument("--adapter", metavar="A", help="LoRA adapter directory or Hub id")
    parser.add_argument("--model", metavar="M", help="model (Hub id, directory, embedded:NAME); with --adapter: its base")
    parser.add_argument("--format", choices=["ct2", "ggml"], default="ct2", help="export format")
    parser.add_argument("--quantization", choices=CT2_QUANTIZATIONS, default="int8", help="ct2: weight type")
    parser.add_argument("--ggml-formats", default="f16,q8_0", metavar="LIST",
                        help=f"ggml: comma-separated files to write, of {', '.join(GGML_FORMATS)} (default f16,q8_0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (must not hold files)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="WER difference tolerated, in points, beyond what the clips' sampling explains (default 1)")
    parser.add_argument("--clips", metavar="DIR", help="folder with metadata.csv (file_name,text) and the audio")
    parser.add_argument("--force", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..interop.ct2_export import export_ct2
    from ..interop.ggml_export import export_ggml

    if not args.adapter and not args.model:
        raise UserError("export: give --adapter or --model")
    if args.format == "ggml":
        formats = [f.strip() for f in args.ggml_formats.split(",") if f.strip()]
        ggml = export_ggml(args.out, adapter=args.adapter, model=args.model, formats=formats, clips=args.clips,
                           margin=args.margin, overwrite=args.force)
        for fmt, report in ggml.parity.items():
            print(f"{fmt}: {report.summary()}")
        print(f"exported {', '.join(str(p) for p in ggml.files.values())} in {ggml.seconds:.1f} s; load one with "
              f"pywhispercpp.model.Model(path) or whisper.cpp's `whisper-cli -m PATH -f clip.wav`")
        return 0
    result = export_ct2(args.out, adapter=args.adapter, model=args.model, quantization=args.quantization,
                        clips=args.clips, margin=args.margin, overwrite=args.force)
    print(result.parity.summary())
    print(f"exported {result.out_dir} ({result.quantization}) in {result.seconds:.1f} s; "
          f"load it with faster_whisper.WhisperModel({str(result.out_dir)!r})")
    return 0
