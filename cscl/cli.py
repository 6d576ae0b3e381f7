"""`cscl` command line. Each subcommand is one module, found here two ways.

- Library commands live in `cscl/commands/<name>.py`.
- Platform commands (pipelines, serving, monitoring, packaging for TorchServe) live in the optional
  `cscl_platform` layer and register through the `cscl.commands` entry-point group, so `cscl`
  never imports the platform: the dependency points one way (docs/ARCHITECTURE.md).

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and
keeps heavy imports inside `run` so `cscl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pkgutil
import sys
import types

from cscl import __version__
from cscl.errors import CsclError, InputError

ENTRY_POINT_GROUP = "cscl.commands"


def _command_modules():
    import cscl.commands as pkg

    found = {
        info.name.replace("_", "-"): f"cscl.commands.{info.name}"
        for info in pkgutil.iter_modules(pkg.__path__)
        if not info.name.startswith("_")
    }
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    for name in sorted(found):
        try:
            yield name, importlib.import_module(found[name])
        except ImportError as exc:  # a platform extra that is not installed
            yield name, _unavailable(name, exc)


def _unavailable(name: str, exc: ImportError) -> types.SimpleNamespace:
    """A stand-in command that says which extra to install, instead of breaking every command."""

    def run(args) -> int:
        raise InputError(
            f"`cscl {name}` is part of the platform layer, which is not installed ({exc})",
            hint="pip install 'cscl[platform]' (or the one extra it needs)",
        )

    return types.SimpleNamespace(
        HELP=f"(not installed: pip install 'cscl[platform]') {name}",
        add_arguments=lambda p: p.add_argument("rest", nargs=argparse.REMAINDER),
        run=run,
    )


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
