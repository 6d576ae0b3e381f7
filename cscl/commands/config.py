"""`cscl config init|show`: the cohort config file (cscl/config.py) — a commented template with
every key, or the values a file gives (checked: unknown keys and wrong types are errors)."""

from __future__ import annotations

import argparse

HELP = "cohort config: `init` prints a commented template (every key, default, help); `show` checks one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("init", help="print the template: cscl config init > cohort.yaml")
    sub.add_parser("show", help="check --config FILE and print every key's value and its origin")


def run(args: argparse.Namespace) -> int:
    from cscl.config import keys, template
    from cscl.errors import InputError

    if args.action == "init":
        print(template(), end="")
        return 0
    cfg = args.cohort_config
    if cfg is None:
        raise InputError("`cscl config show` needs a file", hint="cscl config show --config FILE")
    stated = cfg.stated()
    section = ""
    for key, value in cfg.values().items():
        where = keys()[key][0]
        if where != section:
            section = where
            print(f"{where}:")
        origin = cfg.source if key in stated else "default"
        print(f"{'  ' if where else ''}{key}: {value!r}   ({origin})")
    return 0
