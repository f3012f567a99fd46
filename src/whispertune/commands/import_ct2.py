"""`whispertune import-ct2 SRC --out DIR`: a CTranslate2/faster-whisper directory -> transformers checkpoint."""

from __future__ import annotations

import argparse
import time

from ..pretrained.embedded import PREFIX


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-ct2",
        help="convert a CTranslate2 (faster-whisper) Whisper model into a transformers checkpoint",
        description="Convert a CTranslate2 Whisper directory (model.bin + config.json + tokenizer.json, float16 "
        "or float32) into a transformers checkpoint. SRC may be `embedded:whisper-base` or `embedded:tiny.en`.",
    )
    parser.add_argument("src", metavar="SRC", help="CTranslate2 model directory, or embedded:NAME")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (must not hold files)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="weight dtype written")
    parser.add_argument("--force", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pretrained.ct2_import import import_ct2
    from ..pretrained.embedded import resolve_embedded_ct2

    src = args.src
    if src.startswith(PREFIX):
        src = resolve_embedded_ct2(src[len(PREFIX):])
    start = time.perf_counter()
    out = import_ct2(src, args.out, dtype=args.dtype, overwrite=args.force)
    print(f"wrote {out} ({args.dtype}) in {time.perf_counter() - start:.1f} s")
    return 0
