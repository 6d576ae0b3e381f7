"""One batch delay everywhere `cscl package` writes one (chosen in docs/PERFORMANCE.md)."""

import argparse
import inspect

from cscl_platform.commands import package as package_cmd
from cscl_platform.serving import archive, package


def test_cli_archive_and_cluster_config_ship_the_same_batch_delay():
    p = argparse.ArgumentParser()
    package_cmd.add_arguments(p)
    cli = p.parse_args(["--model", "m", "--out", "o"]).max_batch_delay
    defaults = {
        "cli": cli,
        "package_model": inspect.signature(package.package_model).parameters["max_batch_delay"],
        "build_mar": inspect.signature(archive.build_mar).parameters["max_batch_delay"],
    }
    defaults = {k: getattr(v, "default", v) for k, v in defaults.items()}
    assert set(defaults.values()) == {archive.DEFAULT_MAX_BATCH_DELAY_MS}, defaults
    cfg = archive.cluster_config("cscl", "cscl.mar")
    assert f'"maxBatchDelay":{archive.DEFAULT_MAX_BATCH_DELAY_MS},' in cfg
