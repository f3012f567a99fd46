"""`whispertune transcribe FILES...`: text, JSON, SRT or WebVTT for audio files of any length."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from ..config import QuantizationMode
from ..inference.subtitles import FORMATS, render

DEFAULT_MODEL = "embedded:whisper-base"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files (any format, rate, channels, length) to txt/json/srt/vtt",
        description="Transcribe audio files with a model, or a LoRA adapter on its base. Audio longer than 30 s "
        "is cut into overlapping 30 s windows whose texts are merged. A file that cannot be read is reported "
        "on stderr and the others go on; the exit code is 1 if any file failed.",
    )
    parser.add_argument("files", nargs="+", metavar="FILES", help="audio files (wav, flac, mp3, ogg, ...)")
    parser.add_argument("--model", metavar="M", help=f"Hub id, directory or embedded:NAME (default: the "
                        f"adapter's base, else {DEFAULT_MODEL})")
    parser.add_argument("--adapter", metavar="A", help="LoRA adapter directory or Hub id")
    parser.add_argument("--language", help="language name or code, e.g. mr (default: adapter's, else detected)")
    parser.add_argument("--task", choices=["transcribe", "translate"])
    parser.add_argument("--format", choices=FORMATS, default="txt")
    parser.add_argument("--output-dir", metavar="DIR", help="write FILE_STEM.FORMAT here instead of stdout")
    parser.add_argument("--quantization", choices=typing.get_args(QuantizationMode), default="none")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N")
    parser.add_argument("--max-new-tokens", type=int, default=255, metavar="N")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, metavar="S")
    parser.add_argument("--overlap-seconds", type=float, default=5.0, metavar="S")
    parser.set_defaults(func=run)


def _output_paths(files: list[str], out_dir: Path, fmt: str) -> list[Path]:
    """DIR/STEM.FORMAT, with -2, -3 ... added when two inputs share a stem."""
    seen: dict[str, int] = {}
    paths = []
    for f in files:
        stem = Path(f).stem
        seen[stem] = seen.get(stem, 0) + 1
        paths.append(out_dir / (f"{stem}.{fmt}" if seen[stem] == 1 else f"{stem}-{seen[stem]}.{fmt}"))
    return paths


def run(args: argparse.Namespace) -> int:
    from ..inference.options import DecodingOptions, LoadOptions
    from ..inference.transcribe import transcribe

    model = args.model or (None if args.adapter else DEFAULT_MODEL)
    transcripts = transcribe(
        args.files, model, args.adapter,
        load=LoadOptions(quantization=args.quantization, device=args.device, language=args.language, task=args.task),
        decoding=DecodingOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens),
        chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds,
    )
    ok = [t for t in transcripts if t.error is None]
    for t in transcripts:
        if t.error is not None:
            print(f"whispertune: error: {t.error}", file=sys.stderr)
    if args.output_dir:
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for t, path in zip(ok, _output_paths([t.path for t in ok], out_dir, args.format)):
            path.write_text(render(t, args.format), encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    elif args.format == "json" and len(ok) > 1:
        print(json.dumps([json.loads(render(t, "json")) for t in ok], ensure_ascii=False, indent=2))
    else:
        for t in ok:
            if len(ok) > 1:
                print(f"==> {t.path} <==")
            sys.stdout.write(render(t, args.format))
    return 1 if len(ok) < len(transcripts) else 0
