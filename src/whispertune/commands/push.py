"""`whispertune push --adapter A | --path DIR --repo-id ID`: upload with a generated model card."""

from __future__ import annotations

import argparse

from ..errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload an adapter, merged model or CTranslate2 export to the Hugging Face Hub with a model card",
        description="Write README.md (base model, language, task, data, training config, metrics of the run, usage "
        "with whispertune, peft and faster-whisper) into the directory, then upload it. The token comes from "
        "--token, HF_TOKEN or `hf auth login`.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--adapter", metavar="A", help="adapter directory (its run directory supplies config/metrics)")
    where.add_argument("--path", metavar="DIR", help="merged or exported directory")
    parser.add_argument("--repo-id", required=True, metavar="ID", help="owner/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the cached login)")
    parser.add_argument("--message", metavar="TEXT", help="commit message")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..interop.hub import push

    if args.repo_id.count("/") > 1 or not args.repo_id.strip("/"):
        raise UserError(f"--repo-id {args.repo_id!r}: expected owner/name")
    url = push(args.adapter or args.path, args.repo_id, token=args.token, private=args.private,
               commit_message=args.message)
    print(f"pushed to {url}")
    return 0
