"""`cscl` command line. Each subcommand is one module, found here two ways.

- Library commands live in `cscl/commands/<name>.py`.
- Platform commands (pipelines, serving, monitoring, packaging for TorchServe) live in the optional
  `cscl_platform` layer and register through the `cscl.commands` entry-point group, so `cscl`
  never imports the platform: the dependency points one way (docs/ARCHITECTURE.md).

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and
keeps heavy imports inside `run` so `cscl --help` stays fast. Optionally `CONFIG`: which cohort
config key (cscl/config.py) fills which option, `{dest: key}`; a value may instead be a function
`args -> key` for an option whose key depends on another option (its default must be None).

Options every command shares live here, not in each module, and are accepted before or after the
command name: `--s3-endpoint URL` configures the process object store
(`cscl.io.storage.configure_store`) once, before the command runs; `--config FILE` (a cohort
config) fills the command's options from the file's keys — an option given on the command line
wins, and `--help` shows each option's default (the file's value when it sets one).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import pkgutil
import sys
import types

from cscl import __version__
from cscl.errors import CsclError, InputError
from cscl.options import DefaultsFormatter, bind_config, fill_from_config, show_defaults

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


def build_parser(cfg=None) -> argparse.ArgumentParser:
    """The whole `cscl` parser; with `cfg` (a CohortConfig) its keys are the options' defaults."""
    parser = argparse.ArgumentParser(
        prog="cscl",
        description="Cross-Stain Contrastive Learning: paired H&E/IHC slides → H&E slide embeddings.",
        formatter_class=DefaultsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cscl {__version__}")
    _add_store_option(parser, default=None)
    _add_config_option(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _command_modules():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        # After the command name too; SUPPRESS so an absent one keeps the value given before it.
        with contextlib.suppress(argparse.ArgumentError):  # a command still defining its own
            _add_store_option(p, default=argparse.SUPPRESS)
        for q in _with_nested(p):
            show_defaults(q)
            _add_config_option(q, default=argparse.SUPPRESS)
        p.set_defaults(_run=mod.run)
        if cfg is not None:
            bind_config(p, getattr(mod, "CONFIG", {}), cfg)
    return parser


def _with_nested(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`p` and the parsers of its own subcommands (`cscl pipeline compile|submit|…`)."""
    found = [p]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for q in dict.fromkeys(a.choices.values()):
                found += _with_nested(q)
    return found


def _add_store_option(p: argparse.ArgumentParser, default) -> None:
    p.add_argument(
        "--s3-endpoint",
        dest="store_endpoint",
        metavar="URL",
        default=default,
        help="S3 endpoint of the object store (MinIO, moto…); default $AWS_ENDPOINT_URL, else AWS",
    )


def _add_config_option(p: argparse.ArgumentParser, default) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="cohort config YAML (`cscl config init` writes one): fills options from its keys; "
        "options given here win (default: none)",
    )


def load_cohort_config(argv: list[str]):
    """The `--config FILE` of a command line (before or after the command), loaded; or None."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return None
    from cscl.config import load_config  # here: pydantic stays out of `cscl --help`

    return load_config(known.config)


def parse_args(argv: list[str], cfg=None) -> argparse.Namespace:
    """`argv` parsed as `cscl` does (config defaults applied); `args.cohort_config` = `cfg`."""
    args = build_parser(cfg).parse_args(argv)
    if cfg is not None:
        fill_from_config(args, cfg)
    args.cohort_config = cfg
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = load_cohort_config(argv)
        args = parse_args(argv, cfg)
    except CsclError as err:
        print(f"cscl: error: {err}", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        build_parser().print_help()
        return 2
    endpoint = args.store_endpoint or (cfg.s3_endpoint if cfg is not None else None)
    if endpoint:
        from cscl.io import storage  # here, not at the top: `cscl --help` stays fast (numpy)

        storage.configure_store(endpoint)
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
