"""The ``sknet`` command line: parses arguments and delegates to the task modules."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence


class UserError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _profile(args: argparse.Namespace) -> int:
    from sknet.profile import format_derivations, format_table, report

    rows = report(args.rows)
    if not rows:
        raise UserError(f"no paper row matches {args.rows!r}; run `sknet profile` to list them")
    print(format_table(rows))
    notes = format_derivations(rows)
    if notes:
        print("\nDocumented gaps (ours vs the paper's printed figure):\n" + notes)
    off = [item.row.label for item in rows if not item.ok]
    if args.check and off:
        print(f"\nsknet profile --check: {len(off)} row(s) off: {', '.join(off)}", file=sys.stderr)
        return 1
    if args.check:
        print(f"\nsknet profile --check: all {len(rows)} rows match the paper or its derivation")
    return 0


def _models(args: argparse.Namespace) -> int:
    from sknet.models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sknet", description="Selective Kernel Networks: models, profiling, training."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser(
        "profile", help="parameters and multiply-adds of every paper row, beside the paper's"
    )
    profile.add_argument(
        "--check", action="store_true",
        help="exit 1 if a row misses the paper's printed precision without a documented derivation",
    )
    profile.add_argument("--rows", default="", help="only rows whose label contains this text")
    profile.set_defaults(func=_profile)

    models = commands.add_parser("models", help="list registered model names")
    models.add_argument("pattern", nargs="?", default="", help="only names containing this text")
    models.set_defaults(func=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exc()
        message = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
        print(f"sknet {args.command}: error: {message}", file=sys.stderr)
        return 130 if isinstance(error, KeyboardInterrupt) else 2
