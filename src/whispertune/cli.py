"""The `whispertune` command: a thin layer over the Python API.

Each subcommand lives in `whispertune/commands/<name>.py` with `register(subparsers)` (adds its
parser and sets `func`). Config-driven commands accept `--section.key value` overrides.

Errors: a `UserError`, a bad argument, or an OS/library failure the user caused (`errors.user_error_for`:
a read-only or full disk, a symlink loop, a corrupt safetensors file...) prints one line
`whispertune: error: ...` and exits 2; any other exception prints one line naming it and exits 1.
`--debug` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import UserError, user_error_for

# Subcommand modules, in the order `whispertune --help` lists them.
COMMANDS = [
    "demo",
    "synth",
    "data",
    "train",
    "evaluate",
    "scorecard",
    "transcribe",
    "import_ct2",
    "merge",
    "export",
    "push",
    "serve",
]


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate `--section.key value` / `--section.key=value` flags from ordinary arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in name and not name.startswith("."):
            if "=" in arg:
                overrides.append(arg[2:])
            elif i + 1 < len(argv):
                overrides.append(f"{name}={argv[i + 1]}")
                i += 1
            else:
                raise UserError(f"{arg}: missing value")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (usage is one `--help` away) and raise UserError."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="whispertune",
        description="Fine-tune Whisper with LoRA on a quantized base, evaluate, transcribe and export.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"whispertune.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"whispertune.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rest, overrides = split_overrides(argv)
        parser = build_parser()
        args = parser.parse_args(rest)
        args.overrides = overrides
        result = args.func(args)
        return int(result or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"whispertune: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("whispertune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - mapped to one line by the error boundary, else a bug
        if debug:
            raise
        mapped = user_error_for(exc)
        if mapped is not None:
            print(f"whispertune: error: {_one_line(str(mapped))}", file=sys.stderr)
            return mapped.exit_code
        print(f"whispertune: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
