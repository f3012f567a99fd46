"""`whispertune data check`: flag rows whose transcript cannot belong to their audio (speaking rate, and with
a model its CER on each row); see whispertune.inference.data_check."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .arg_types import float_in


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check a data split for rows whose transcript looks wrong",
                                   description="Data tools. `whispertune data check --help` for the check.")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="flag rows with an implausible speaking rate (and, with --model/--adapter, an extreme CER)",
        description="Flag the rows of a data split whose speaking rate (letters and digits per second of audio) "
        "is outside data.min_chars_per_second..data.max_chars_per_second and, with --model and/or --adapter, "
        "rows on which that model's CER is above --max-cer. Data comes from --config and --section.key value "
        "overrides (e.g. --data.path DIR --data.source folder). The data is never changed: flagged rows are "
        "reported (data_report.json, flagged.jsonl, chars_per_second.png in --out).",
    )
    check.add_argument("--config", metavar="F", help="YAML config (the same file as for train)")
    check.add_argument("--split", metavar="S", help="split expression (default: data.train_split)")
    check.add_argument("--model", metavar="M", help="base model for the CER check: Hub id, directory or "
                       "embedded:whisper-base")
    check.add_argument("--adapter", metavar="A", help="LoRA adapter for the CER check (its base unless --model)")
    check.add_argument("--max-cer", type=float_in(0, lo_open=True), metavar="PCT",
                       help="flag rows whose normalized CER is above this many percent (default 75; needs "
                       "--model or --adapter)")
    check.add_argument("--drop-flagged", action="store_true",
                       help="count the flagged rows as skipped in the report: the split as training would see it "
                       "without them (default: data.drop_flagged)")
    check.add_argument("--device", help="cpu, cuda, cuda:1 for the CER check (default: cuda when available)")
    check.add_argument("--out", metavar="DIR", default="data_check",
                       help="where the report, flagged.jsonl and the plot go (default: ./data_check)")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..inference.data_check import DEFAULT_MAX_CER, check_data, print_check

    if args.max_cer is not None and not (args.model or args.adapter):
        raise UserError("--max-cer sets the CER check, which needs a model: add --model M and/or --adapter DIR")
    cfg = load_config(args.config, args.overrides)
    result = check_data(cfg, split=args.split, model=args.model, adapter=args.adapter,
                        max_cer=DEFAULT_MAX_CER if args.max_cer is None else args.max_cer,
                        drop_flagged=True if args.drop_flagged else None, device=args.device, out_dir=args.out)
    print_check(result)
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0
