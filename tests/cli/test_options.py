"""Option names are the same across commands, and `cscl pretrain --help` documents every option
with the default the objective really uses."""

from __future__ import annotations

import argparse

import pytest

from cscl import cli
from cscl.commands import pretrain as pretrain_cmd
from cscl.train import objective_config

FIELD = {"n_tokens": "n_tokens", "scales": "scales"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_store_endpoint_is_the_global_option_only():
    """`--s3-endpoint` is cli.py's (before or after the command); only `cscl pipeline` has its own
    (a pipeline parameter for the cluster, not this process's store)."""
    for name, sub in _subparsers().items():
        flags = {f for a in sub._actions for f in a.option_strings}
        assert "--endpoint-url" not in flags, name
        owners = [a for a in sub._actions if "--s3-endpoint" in a.option_strings]
        assert len(owners) == 1, name
        if name != "pipeline":
            assert owners[0].dest == "store_endpoint", name


@pytest.mark.parametrize(
    "name", ["synth", "extract", "register", "pretrain", "embed", "evaluate", "monitor"]
)
def test_long_commands_take_quiet(name):
    args = cli.build_parser().parse_args([name, "--help"][:1] + _required(name) + ["--quiet"])
    assert args.quiet is True


def _required(name: str) -> list[str]:
    sub = _subparsers()[name]
    argv: list[str] = []
    for a in sub._actions:
        if a.required and a.option_strings:
            argv += [a.option_strings[0], a.choices[0] if a.choices else "x"]
    for g in sub._mutually_exclusive_groups:
        if g.required:
            argv += [g._group_actions[0].option_strings[0], "x"]
    return argv


def test_old_no_progress_flag_still_means_quiet():
    args = cli.build_parser().parse_args(
        [
            "evaluate",
            "--embeddings",
            "e",
            "--labels",
            "l",
            "--tasks",
            "t",
            "--out",
            "o",
            "--no-progress",
        ]  # fmt: skip
    )
    assert args.quiet is True


def test_every_pretrain_option_has_help_with_its_default():
    sub = _subparsers()["pretrain"]
    for a in sub._actions:
        if not a.option_strings or a.dest in ("help", "store_endpoint"):
            continue
        assert a.help and a.help != argparse.SUPPRESS, a.option_strings
        if not a.required:
            assert "default" in a.help, a.option_strings
    text = sub.format_help()
    assert "--preset" in text and "quick" in text


@pytest.mark.parametrize("setting", sorted(pretrain_cmd.SHOWN_DEFAULTS))
def test_shown_defaults_are_the_objectives_defaults(setting):
    shown = pretrain_cmd.SHOWN_DEFAULTS[setting]
    for objective in ("adapter", "cscl", "madeleine", "histostainalign", "supervised"):
        if objective not in shown and (objective == "adapter" or "cscl" not in shown):
            continue  # not a setting of this objective
        want = shown.get(objective, shown.get("cscl"))
        got = getattr(objective_config(objective), FIELD.get(setting, setting))
        got = ",".join(got) if isinstance(got, tuple) else got
        assert got == want, (setting, objective)


def test_quick_preset_fills_only_what_was_not_given(monkeypatch, tmp_path):
    seen = {}

    def fake_pretrain(objective, **kw):  # the boundary under test is the flag → config mapping
        seen.update(kw["config"], objective=objective)
        return tmp_path

    import cscl.train

    monkeypatch.setattr(cscl.train, "pretrain", fake_pretrain)
    rc = cli.main(["pretrain", "--features", "f", "--manifest", "m", "--out", str(tmp_path),
                   "--stage", "slide", "--preset", "quick", "--epochs", "7"])  # fmt: skip
    assert rc == 0
    from cscl.train.presets import PRESETS

    quick = PRESETS["quick"]["slide"]
    assert seen["epochs"] == 7 and seen["n_tokens"] == quick["n_tokens"]
    assert seen["abmil"] and seen["objective"] == "cscl"
