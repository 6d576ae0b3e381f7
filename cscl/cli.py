"""`cscl` command line. Each subcommand lives in `cscl/commands/<name>.py` and is found here.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and
keeps heavy imports inside `run` so `cscl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cscl import __version__
from cscl.errors import CsclError


def _command_modules():
    import cscl.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield info.name.replace("_", "-"), importlib.import_module(f"cscl.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cscl",
        description="Cross-Stain Contrastive Learning: paired H&E/IHC slides → H&E slide embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"cscl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _command_modules():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CsclError as err:
        print(f"cscl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
