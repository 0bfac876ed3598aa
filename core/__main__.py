"""Command line: ``python -m core {info,segment,evaluate,train,report,measure} ...``.

Bad input exits with status 2 and a single ``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.cli.common import error_line, print_error
from core.errors import BratsViewerError

COMMANDS: tuple[str, ...] = ("info", "segment", "evaluate", "train", "report", "measure", "export", "convert", "preprocess", "compare", "export_seg")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with ``only`` (a command name) just that subcommand's module is imported, so a
    command does not pay for the others' imports (the whole list shows with ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m core", description="Brain-tumour MRI segmentation (research use only).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS if only not in COMMANDS else (only,):
        importlib.import_module(f"core.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = build_parser(args_in[0].replace("-", "_") if args_in else None)
    args = parser.parse_args(args_in)
    try:
        return int(args.run(args) or 0)
    except (BratsViewerError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print_error(error_line(err))
        return 2
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
