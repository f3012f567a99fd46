"""`whispertune merge --adapter A --out DIR`: fold a LoRA adapter into its unquantized base."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="merge a LoRA adapter into its base and save a standalone transformers checkpoint",
        description="Re-load the adapter's base model unquantized (merging into int8/nf4 weights would round the "
        "update away), apply the adapter, merge it and save safetensors + processor + generation config; "
        "language and task are recorded in whispertune.json.",
    )
    parser.add_argument("--adapter", required=True, metavar="A", help="LoRA adapter directory or Hub id")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (must not hold files)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="weight dtype written")
    parser.add_argument("--model", metavar="M", help="base model (default: the adapter's own base)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..interop.merge import merge

    start = time.perf_counter()
    out = merge(args.adapter, args.out, dtype=args.dtype, model=args.model, overwrite=args.force)
    print(f"merged {args.adapter} into {out} ({args.dtype}) in {time.perf_counter() - start:.1f} s")
    return 0
