"""`whispertune train`: LoRA fine-tuning from a config file plus `--section.key value` overrides."""

from __future__ import annotations

import argparse

from ..config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune LoRA adapters on a (quantized) Whisper base",
        description="Fine-tune LoRA adapters. Any config key can be overridden: --train.learning_rate 1e-4.",
    )
    parser.add_argument("--config", help="YAML config file (defaults are used for anything it leaves out)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="count trainable parameters and estimate GPU memory without loading weights")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="continue from the newest complete checkpoint of the run, or from CHECKPOINT")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in train.output_dir (its checkpoints, adapter and logs) with a new one")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.dry_run:
        from ..model.dry_run import dry_run

        print(dry_run(cfg).summary())
        return 0
    from ..training.distributed import is_main
    from ..training.trainer import train

    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if not is_main():  # under torchrun rank 0 reports for the run
        return 0
    loss = "n/a" if result.final_train_loss is None else f"{result.final_train_loss:.4f}"
    print(f"trained {result.global_step} steps; final train loss {loss}; adapter: {result.adapter_dir}")
    for key, value in sorted(result.eval_metrics.items()):
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0
