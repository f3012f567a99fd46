"""`whispertune transcribe FILES...`: text, JSON, SRT or WebVTT for audio files of any length."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from ..atomic_files import write_file_atomically
from ..config import QuantizationMode
from ..inference.subtitles import FORMATS, render
from .arg_types import BATCH_SIZE, NEW_TOKENS, float_in

DEFAULT_MODEL = "embedded:whisper-base"
SUBTITLE_FORMATS = ("srt", "vtt")  # decoded with timestamp tokens


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files (any format, rate, channels, length) to txt/json/srt/vtt",
        description="Transcribe audio files with a model, or a LoRA adapter on its base. Audio longer than 30 s "
        "is cut into overlapping 30 s windows whose texts are merged. A file that cannot be read is reported "
        "on stderr and the others go on; the exit code is 1 if any file failed. srt and vtt are decoded with "
        "Whisper's timestamp tokens: cues start and end where the model heard the speech (a window without valid "
        "timestamps is timed by an estimate, said on stderr).",
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
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=8, metavar="N", help="windows per forward pass")
    parser.add_argument("--max-new-tokens", type=NEW_TOKENS, default=255, metavar="N", help="per 30 s window")
    parser.add_argument("--chunk-seconds", type=float_in(1.0, 30.0), default=30.0, metavar="S",
                        help="window length, 1 to 30 s")
    parser.add_argument("--overlap-seconds", type=float_in(0.0, 15.0), default=5.0, metavar="S",
                        help="overlap of neighbouring windows, at most half of --chunk-seconds")
    parser.set_defaults(func=run)


def _output_paths(files: list[str], out_dir: Path, fmt: str) -> list[Path]:
    """DIR/STEM.FORMAT, with -2, -3 ... added when a name is taken (two inputs `a/x.wav`, `b/x.wav`; or
    `x.wav` twice and an `x-2.wav`): no output overwrites another."""
    taken: set[str] = set()
    paths = []
    for f in files:
        stem, n = Path(f).stem, 1
        name = f"{stem}.{fmt}"
        while name in taken:
            n += 1
            name = f"{stem}-{n}.{fmt}"
        taken.add(name)
        paths.append(out_dir / name)
    return paths


def run(args: argparse.Namespace) -> int:
    from ..inference.options import DecodingOptions, LoadOptions
    from ..inference.transcribe import transcribe

    model = args.model or (None if args.adapter else DEFAULT_MODEL)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)  # before hours of work: an unusable directory fails now
    transcripts = transcribe(
        args.files, model, args.adapter,
        load=LoadOptions(quantization=args.quantization, device=args.device, language=args.language, task=args.task),
        decoding=DecodingOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                 timestamps=args.format in SUBTITLE_FORMATS),
        chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds,
    )
    ok = [t for t in transcripts if t.error is None]
    for t in transcripts:
        if t.error is not None:
            print(f"whispertune: error: {t.error}", file=sys.stderr)
        elif t.untimed_windows:
            print(f"whispertune: {t.path}: {t.untimed_windows} window(s) without valid timestamp tokens; their cue "
                  "times are estimated from the characters spoken", file=sys.stderr)
    if out_dir is not None:
        for t, path in zip(ok, _output_paths([t.path for t in ok], out_dir, args.format)):
            write_file_atomically(path, render(t, args.format))
            print(f"wrote {path} ({t.path})", file=sys.stderr)
    elif args.format == "json" and len(ok) > 1:
        print(json.dumps([json.loads(render(t, "json")) for t in ok], ensure_ascii=False, indent=2))
    else:
        for t in ok:
            if len(ok) > 1:
                print(f"==> {t.path} <==")
            sys.stdout.write(render(t, args.format))
    return 1 if len(ok) < len(transcripts) else 0
