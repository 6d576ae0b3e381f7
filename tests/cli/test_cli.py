"""The CLI finds library commands in cscl.commands and platform commands through entry points,
and a platform command whose extra is missing explains itself instead of breaking `cscl`."""

from __future__ import annotations

import importlib.metadata

import pytest

from cscl import cli

LIBRARY = {
    "config",
    "embed",
    "evaluate",
    "extract",
    "heatmap",
    "pretrain",
    "register",
    "run",
    "synth",
}
PLATFORM = {"package", "pipeline", "serve", "predict", "monitor"}


def test_every_command_is_found():
    names = {name for name, _ in cli._command_modules()}
    assert names >= LIBRARY | PLATFORM


def test_platform_commands_come_from_the_platform_layer():
    mods = dict(cli._command_modules())
    for name in PLATFORM:
        assert mods[name].__name__.startswith("cscl_platform.commands."), name
    for name in LIBRARY:
        assert mods[name].__name__.startswith("cscl.commands."), name


def test_missing_extra_is_explained(monkeypatch, capsys):
    real = importlib.metadata.entry_points

    def with_broken(*, group):
        eps = list(real(group=group))
        return [
            *eps,
            importlib.metadata.EntryPoint("ghost", "cscl_platform.no_such_module", group),
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", with_broken)
    rc = cli.main(["ghost", "x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "platform layer, which is not installed" in err and "cscl[platform]" in err


def test_other_commands_unaffected_by_a_missing_extra(monkeypatch):
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda *, group: [
            *real(group=group),
            importlib.metadata.EntryPoint("ghost", "cscl_platform.no_such_module", group),
        ],
    )
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "--help"])
    assert exc.value.code == 0
