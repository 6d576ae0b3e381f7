"""The cohort config (cscl/config.py): the template round-trips, command-line options win over
the file, bad files are errors naming the key, every command binding is consistent with the
schema and with the pipeline parameters, and every option's help shows its default."""

from __future__ import annotations

import argparse
import re

import pytest
import yaml

from cscl import cli, config
from cscl.errors import InputError
from cscl_platform.pipelines import params as pipeline_params

# Keys whose pipeline default points at the demo bucket; a local config must name its own.
PIPELINE_ONLY_DEFAULTS = {"manifest_uri", "labels_uri", "project_prefix"}
# (command, dest) whose own default is not the key's: package's heads default to every task.
OWN_DEFAULTS = {("package", "tasks")}
# (command, dest) named as a pipeline parameter but meaning something else: register's
# --min-score is the tissue-overlap (Dice) floor of a pair, not the quality gate.
HOMONYMS = {("register", "min_score")}


def _write(tmp_path, data, name="cohort.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def _parse(argv, path=None):
    cfg = config.load_config(path) if path else None
    return cli.parse_args(argv, cfg)


def _commands() -> dict[str, tuple[object, argparse.ArgumentParser]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    mods = dict(cli._command_modules())
    return {name: (mods[name], p) for name, p in sub.choices.items()}


# ---- the template -----------------------------------------------------------------------------


def test_template_round_trip(tmp_path):
    text = config.template()
    cfg = config.load_config(_write(tmp_path, text))
    defaults = config.parse_config({}).values()
    examples = {"manifest_uri": "data/cohort/manifest.csv", "labels_uri": "data/cohort/labels.csv"}
    assert cfg.values() == {**defaults, **examples}
    assert cfg.stated() == examples
    # every commented key, uncommented, is valid and is exactly the declared default
    keys = "|".join(config.keys())
    uncommented = re.sub(rf"^(\s*)# ((?:{keys}): )", r"\1\2", text, flags=re.M)
    full = config.load_config(_write(tmp_path, uncommented, "full.yaml"))
    assert set(full.stated()) == set(config.keys())
    assert full.values() == {**defaults, **examples}
    comments = " ".join(line.strip().removeprefix("# ") for line in text.splitlines())
    for key, (_, info) in config.keys().items():  # each key comes with its help
        assert info.description and info.description in comments, key


def test_config_init_and_show_commands(tmp_path, capsys):
    assert cli.main(["config", "init"]) == 0
    text = capsys.readouterr().out
    assert text == config.template()
    path = _write(tmp_path, {"data": {"min_tissue": 0.4}})
    assert cli.main(["config", "show", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "min_tissue: 0.4   (" + path + ")" in out and "patch_size: 224   (default)" in out


# ---- precedence ----------------------------------------------------------------------------


def test_config_fills_options_and_flags_win(tmp_path):
    path = _write(
        tmp_path,
        {"data": {"manifest_uri": "m.csv", "min_tissue": 0.4},
         "encoder": {"backbone": "test_resnet", "allow_random": True}, "seed": 3},
    )  # fmt: skip
    args = _parse(["extract", "--out", "o"], path)
    assert (args.manifest, args.min_tissue, args.backbone) == ("m.csv", 0.4, "test_resnet")
    assert args.random_init is True and args.seed == 3
    assert args.patch_size == 224  # not in the file: the command's default
    # explicit flags win, before or after the command name
    args = _parse(["--config", path, "extract", "--out", "o", "--min-tissue", "0.1"], path)
    assert args.min_tissue == 0.1 and args.manifest == "m.csv"
    args = _parse(["extract", "--manifest", "other.csv", "--out", "o", "--config", path], path)
    assert args.manifest == "other.csv"


def test_a_given_option_beats_the_configs_exclusive_partner(tmp_path):
    path = _write(tmp_path, {"data": {"manifest_uri": "m.csv", "project_prefix": "s3://b/p"}})
    assert _parse(["extract"], path).store == "s3://b/p"  # --store|--out: the file's --store
    args = _parse(["extract", "--out", "o"], path)
    assert args.out == "o" and args.store is None


def test_pretrain_takes_the_keys_of_its_stage(tmp_path):
    path = _write(tmp_path, {
        "data": {"manifest_uri": "m.csv"},
        "training": {"adapter_epochs": 7, "slide_epochs": 9, "slide_batch_size": 4,
                     "n_tokens": 64, "preset": "quick", "small_encoder": True},
    })  # fmt: skip
    base = ["pretrain", "--features", "f", "--out", "o"]
    adapter = _parse([*base, "--stage", "adapter"], path)
    assert adapter.epochs == 7 and adapter.batch_size is None and adapter.preset == "quick"
    slide = _parse([*base, "--stage", "slide"], path)
    assert (slide.epochs, slide.batch_size, slide.tokens, slide.small) == (9, 4, 64, True)
    assert _parse([*base, "--stage", "slide", "--epochs", "2"], path).epochs == 2


def test_values_are_typed_like_the_command_line(tmp_path):
    path = _write(tmp_path, {"evaluation": {"ks": [1, 5], "protocols": "kfold", "n_boot": 10}})
    args = _parse(["evaluate", "--embeddings", "e", "--labels", "l", "--out", "o"], path)
    assert args.ks == [1, 5] and args.protocol == "kfold" and args.bootstrap == 10
    assert args.tasks == config.DEFAULT_TASKS  # required by evaluate: the key's default fills it


def test_package_takes_encoder_and_tissue_from_the_config(tmp_path):
    path = _write(tmp_path, {"encoder": {"weights": "w.pt"}, "data": {"min_tissue": 0.5},
                             "seed": 2, "serving": {"model_name": "m"}})  # fmt: skip
    args = _parse(["package", "--model", "r", "--out", "o"], path)
    assert (args.backbone_weights, args.min_tissue, args.backbone_seed, args.name) == (
        "w.pt",
        0.5,
        2,
        "m",
    )


def test_help_shows_the_configs_value(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"data": {"min_tissue": 0.4}})
    with pytest.raises(SystemExit):
        cli.main(["--config", "cohort.yaml", "extract", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(from cohort.yaml: min_tissue = 0.4)" in out


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"data": {"min_tisue": 0.3}}, "unknown key 'data.min_tisue'; did you mean 'data.min_tissue'"),
        ({"trainig": {}}, "unknown key 'trainig'; did you mean 'training'"),
        ({"min_tissue": 0.3}, "unknown key 'min_tissue': min_tissue belongs under data"),
        ({"training": {"adapter_epochs": "many"}}, "training.adapter_epochs: expected an integer, got 'many'"),
        ({"data": {"min_tissue": "lots"}}, "data.min_tissue: expected a number, got 'lots'"),
        ({"encoder": {"allow_random": "perhaps"}}, "encoder.allow_random: expected true or false"),
        ({"data": 5}, "data: expected a block of data keys, got 5"),
    ],
)  # fmt: skip
def test_bad_files_name_the_key(tmp_path, capsys, data, said):
    path = _write(tmp_path, data)
    with pytest.raises(InputError, match=re.escape(said)):
        config.load_config(path)
    assert cli.main(["--config", path, "config", "show"]) == 2
    assert said in capsys.readouterr().err


def test_a_value_outside_the_options_choices_is_an_error(tmp_path, capsys):
    path = _write(tmp_path, {"training": {"preset": "quik"}})
    rc = cli.main(["--config", path, "pretrain", "--features", "f", "--manifest", "m",
                   "--stage", "slide", "--out", "o"])  # fmt: skip
    assert rc == 2 and "preset: 'quik' is not one of quick" in capsys.readouterr().err


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        config.load_config(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="must hold a mapping"):
        config.load_config(_write(tmp_path, "- a\n- b\n"))


# ---- one vocabulary --------------------------------------------------------------------------


def _bindings():
    for name, (mod, parser) in _commands().items():
        actions = {a.dest: a for a in parser._actions}
        for dest, key in getattr(mod, "CONFIG", {}).items():
            yield name, actions.get(dest), dest, key


def test_every_binding_names_a_key_and_an_option_of_its_type():
    keys = config.keys()
    for command, action, dest, key in _bindings():
        assert action is not None, f"{command}: CONFIG names no option {dest!r}"
        if callable(key):
            assert action.default is None, (command, dest)  # filled after parsing
            continue
        assert key in keys, f"{command}: CONFIG names no config key {key!r}"
        kind = keys[key][1].annotation
        if kind is bool:
            assert action.nargs == 0 and action.const is True, (command, dest)
        else:
            want = {int: int, float: float}.get(kind)
            assert action.type is want or (kind is str and callable(action.type)), (command, dest)


def test_commands_defaults_are_the_keys_defaults():
    keys = config.keys()
    for command, action, dest, key in _bindings():
        if callable(key) or action.default is None or (command, dest) in OWN_DEFAULTS:
            continue
        default = keys[key][1].default
        if isinstance(default, str) and callable(action.type):
            default = action.type(default)
        assert action.default == default, (command, dest, key)


def test_pipeline_parameter_names_are_the_config_keys():
    """A command option named as a pipeline parameter is filled by the config key of that name,
    and a config key named as a pipeline parameter has its type (and default)."""
    names = {p.name: p for p in pipeline_params.PARAMS}
    for command, _action, dest, key in _bindings():
        if dest in names:
            assert key == dest, f"{command} --{dest} is filled by {key!r}, not by {dest!r}"
    for name, (mod, parser) in _commands().items():
        bound = getattr(mod, "CONFIG", {})
        for a in parser._actions:
            if (name, a.dest) in HOMONYMS or name in ("pipeline", "synth", "import-features"):
                continue  # synth/import describe other data; pipeline maps the whole config
            if a.dest in names:
                assert bound.get(a.dest) == a.dest, f"{name} --{a.dest} takes no config key"
    shared = set(config.keys()) & set(names)
    assert len(shared) >= 25, sorted(shared)
    for key in shared:
        info = config.keys()[key][1]
        assert info.annotation is names[key].type, key
        if key not in PIPELINE_ONLY_DEFAULTS:
            assert info.default == names[key].default, key


def test_pipeline_parameters_from_a_cohort_config(tmp_path, capsys):
    from cscl_platform.commands.pipeline import parse_params
    from cscl_platform.pipelines import build

    path = _write(tmp_path, {"data": {"min_tissue": 0.5, "manifest_uri": "s3://b/m.csv"},
                             "training": {"preset": "quick", "adapter_epochs": 2},
                             "serving": {"min_score": 0.0}, "out": "runs/x"})  # fmt: skip
    cfg = config.load_config(path)
    mapped, local_only = pipeline_params.from_cohort_config(cfg.stated())
    assert local_only == ["out", "preset"]
    pipeline = build("retraining", cluster=False)  # takes no min_score: left out, said so
    got = parse_params(pipeline, ["adapter_epochs=3"], None, cfg)
    assert got == {"min_tissue": 0.5, "manifest_uri": "s3://b/m.csv", "adapter_epochs": 3}
    assert "left out: out, preset, min_score" in capsys.readouterr().err


# ---- help ------------------------------------------------------------------------------------


def test_every_option_has_help_that_shows_its_default():
    for _, parser in _commands().values():
        for p in cli._with_nested(parser):
            formatter = p._get_formatter()
            for a in p._actions:
                if not a.option_strings or a.dest in ("help", "version"):
                    continue
                assert a.help, f"{p.prog} {a.option_strings[0]} has no help"
                if a.help == argparse.SUPPRESS or a.required:
                    continue
                if getattr(a, "one_of_required", False):
                    continue
                shown = formatter._get_help_string(a)
                assert "default" in shown.lower(), f"{p.prog} {a.option_strings[0]}: {shown}"
