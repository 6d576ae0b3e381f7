"""argparse glue for `cscl`: cohort config keys as option defaults (explicit options win), and
help that shows every option's default.

Why a default and not a value set after parsing: argparse then does the precedence itself (a
given option replaces its default), `--help` shows the file's value, and a required option the
file fills stops being required. The marker `FromConfig` is resolved after parsing, so a value
also steps aside for a given option of its mutually exclusive group (`extract --out` vs the
file's project_prefix → `--store`).
"""

from __future__ import annotations

import argparse
from typing import Any

from cscl.errors import InputError


class FromConfig:
    """An option default that came from the cohort config: `--help` shows it with its key, and
    after parsing it is replaced by the value (typed like a command-line string) unless the user
    gave the option — or another option of its mutually exclusive group."""

    def __init__(self, value: Any, key: str, source: str, action: argparse.Action, partners):
        self.value, self.key, self.source, self.action = value, key, source, action
        self.partners = partners  # other actions of its mutually exclusive group

    def __str__(self) -> str:
        return f"{self.value} (from {self.source}: {self.key})"

    def resolve(self, args: argparse.Namespace) -> Any:
        for other in self.partners:
            got = getattr(args, other.dest, None)
            if not isinstance(got, FromConfig) and got != other.default:
                return self.action.default_before_config  # a partner was given: step aside
        value = self.value
        if isinstance(value, str) and callable(self.action.type):
            try:
                value = self.action.type(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                raise InputError(f"{self.source}: {self.key}: {exc}") from None
        return value


def bind_config(p: argparse.ArgumentParser, bindings: dict, cfg) -> None:
    """Make the keys `cfg` states the defaults of the options `bindings` maps them to.

    A required option is also filled from a key the file leaves out when that key has a real
    default (e.g. evaluation.tasks); an empty value ("" = none, as in the pipeline parameters)
    leaves the option alone. Keys that depend on other options are filled after parsing.
    """
    stated, every = cfg.stated(), cfg.values()
    actions = {a.dest: a for a in p._actions}
    groups = {a.dest: g for g in p._mutually_exclusive_groups for a in g._group_actions}
    late = []
    for dest, key in bindings.items():
        if callable(key):
            late.append((dest, key))
            continue
        action = actions[dest]
        value = stated.get(key, every[key] if action.required else "")
        if value == "" or value is None:
            continue
        if action.choices is not None and value not in action.choices:
            raise InputError(
                f"{cfg.source}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}"
            )
        group = groups.get(dest)
        partners = [a for a in group._group_actions if a is not action] if group else []
        action.default_before_config = action.default
        action.default = FromConfig(value, key, cfg.source, action, partners)
        action.required = False
        if group is not None:
            group.required = False
    if late:
        p.set_defaults(_late_config=late)


def fill_from_config(args: argparse.Namespace, cfg) -> argparse.Namespace:
    """After parsing: config defaults → values; keys that depend on other options filled in."""
    for dest, value in list(vars(args).items()):
        if isinstance(value, FromConfig):
            setattr(args, dest, value.resolve(args))
    stated = cfg.stated()
    for dest, key_of in getattr(args, "_late_config", ()):
        key = key_of(args)
        if getattr(args, dest) is None and stated.get(key, "") != "":
            setattr(args, dest, stated[key])
    return args


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: `(default: …)` unless the help already names
    it, `off` for a flag, and the config file's value and key when one fills the option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if isinstance(default, FromConfig):
            shown = f"from {default.source}: {default.key} = {default.value}"
            return f"{text} ({shown.replace('%', '%%')})"
        if text == argparse.SUPPRESS or default is argparse.SUPPRESS or action.required:
            return text
        if getattr(action, "one_of_required", False):
            return text
        if not action.option_strings or "default" in text.lower():
            return text
        return f"{text} (default: {_shown_default(action)})".strip()


def show_defaults(p: argparse.ArgumentParser) -> None:
    """Make `p`'s help show every default (a subcommand's parser does not inherit the format)."""
    p.formatter_class = DefaultsFormatter
    for g in p._mutually_exclusive_groups:  # "one of these is required": no default to show
        for a in g._group_actions:
            a.one_of_required = g.required


def _shown_default(action: argparse.Action) -> str:
    if action.nargs == 0:  # a flag: store_true/store_false/store_const/count
        return "off"
    if action.default is None or action.default == []:
        return "none"
    if isinstance(action.default, list | tuple):
        return ",".join(map(str, action.default))
    return str(action.default).replace("%", "%%")
