"""``wan-animate`` entry point: dispatches to one module per subcommand.

Each subcommand module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Exit codes: 0 ok, 1 error, 130 cancelled.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from wan_animate.errors import Cancelled, WanAnimateError

SUBCOMMANDS: tuple[str, ...] = (
    "wan_animate.cli.demo",
    "wan_animate.cli.generate",
    "wan_animate.cli.make_tiny",
    "wan_animate.cli.preprocess",
    "wan_animate.cli.setup",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wan-animate",
        description="Wan2.2-Animate-14B (animate / replace) on one GPU or sharded across many.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for modname in SUBCOMMANDS:
        mod = importlib.import_module(modname)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except WanAnimateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
