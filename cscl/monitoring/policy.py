"""The drift policy: which signals count, their thresholds, how much data a verdict needs, and how
often retraining may be started. Loaded from YAML (`policies/drift.yaml` is the default and is the
same as `DEFAULT_POLICY`, which a test checks).

Why these defaults (see docs/MONITORING.md):
- embedding: Evidently's domain classifier ("model" method). Its ROC-AUC has a known distribution
  when nothing drifted (that of random scores for the held-out class counts), so the threshold is
  a false-alarm rate (`false_alarm_rate`) instead of a magic number, plus an effect-size floor
  (`min_auc`) so huge windows do not alarm on negligible shifts.
- qc / predictions: per-column two-sample tests (KS for numbers, chi-square for the vendor) at a
  p-value of 0.01, and a group drifts only when `min_drifted_columns` columns drift or a
  `critical_columns` column (scanner, resolution) drifts — one of ~10 columns crossing 0.01 by
  chance is expected every few runs and must not start a retraining.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cscl.errors import InputError
from cscl.io import storage

SIGNALS = ("embedding", "qc", "predictions", "target")
NUM_METHODS = {"ks": "p", "wasserstein": "d", "psi": "d", "jensenshannon": "d", "mannw": "p"}
CAT_METHODS = {"chisquare": "p", "z": "p", "jensenshannon": "d", "psi": "d"}

DEFAULT_POLICY: dict[str, Any] = {
    "version": 1,
    "min_samples": 30,
    "min_reference": 30,
    "signals": {
        "embedding": {
            "enabled": True,
            "method": "model",
            "pca_components": 16,
            "false_alarm_rate": 0.01,
            "min_auc": 0.6,
        },
        "qc": {
            "enabled": True,
            "num_method": "ks",
            "cat_method": "chisquare",
            "threshold": 0.01,
            "min_drifted_columns": 2,
            "critical_columns": ["qc_vendor", "qc_mpp"],
        },
        "predictions": {
            "enabled": True,
            "num_method": "ks",
            "threshold": 0.01,
            "min_drifted_columns": 2,
            "critical_columns": [],
        },
        "target": {
            "enabled": True,
            "cat_method": "chisquare",
            "threshold": 0.01,
            "min_samples": 30,
        },
    },
    "retrain_on": ["embedding", "qc", "predictions", "target"],
    "retraining": {"cooldown_hours": 168},
}


@dataclass(frozen=True)
class Policy:
    """A validated policy; `raw` is the full dict (written into drift.json)."""

    raw: dict[str, Any]

    @property
    def min_samples(self) -> int:
        return int(self.raw["min_samples"])

    @property
    def min_reference(self) -> int:
        return int(self.raw["min_reference"])

    def signal(self, name: str) -> dict[str, Any]:
        return self.raw["signals"][name]

    def enabled(self, name: str) -> bool:
        return bool(self.raw["signals"][name].get("enabled", True))

    @property
    def retrain_on(self) -> list[str]:
        return list(self.raw["retrain_on"])

    @property
    def cooldown_hours(self) -> float:
        return float(self.raw["retraining"]["cooldown_hours"])


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check(raw: dict, src: str) -> None:
    def bad(msg: str) -> InputError:
        return InputError(f"policy {src}: {msg}", hint="see policies/drift.yaml for the format")

    unknown = set(raw) - set(DEFAULT_POLICY)
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}")
    unknown = set(raw["signals"]) - set(SIGNALS)
    if unknown:
        raise bad(f"unknown signals {sorted(unknown)} (known: {list(SIGNALS)})")
    for k in ("min_samples", "min_reference"):
        if not isinstance(raw[k], int) or raw[k] < 2:
            raise bad(f"{k} must be an integer >= 2")
    bad_retrain = set(raw["retrain_on"]) - set(SIGNALS)
    if bad_retrain:
        raise bad(f"retrain_on names unknown signals {sorted(bad_retrain)}")
    emb = raw["signals"]["embedding"]
    if emb["method"] != "model":
        raise bad("signals.embedding.method: only 'model' (domain classifier) is supported")
    if not 0 < float(emb["false_alarm_rate"]) < 0.5:
        raise bad("signals.embedding.false_alarm_rate must be in (0, 0.5)")
    if not 0.5 <= float(emb["min_auc"]) < 1:
        raise bad("signals.embedding.min_auc must be in [0.5, 1)")
    for name in ("qc", "predictions"):
        s = raw["signals"][name]
        if s.get("num_method", "ks") not in NUM_METHODS:
            raise bad(f"signals.{name}.num_method must be one of {sorted(NUM_METHODS)}")
        if int(s.get("min_drifted_columns", 1)) < 1:
            raise bad(f"signals.{name}.min_drifted_columns must be >= 1")
    for name in ("qc", "target"):
        if raw["signals"][name].get("cat_method", "chisquare") not in CAT_METHODS:
            raise bad(f"signals.{name}.cat_method must be one of {sorted(CAT_METHODS)}")
    if float(raw["retraining"]["cooldown_hours"]) < 0:
        raise bad("retraining.cooldown_hours must be >= 0")


def load_policy(source: str | Path | dict | None = None) -> Policy:
    """A policy from a YAML file (local or s3://), a dict, or None (the default).

    Keys left out take their default, so a policy file may hold only what it changes.
    """
    if source is None:
        return Policy(copy.deepcopy(DEFAULT_POLICY))
    if isinstance(source, dict):
        data, src = source, "<dict>"
    else:
        src = str(source)
        try:
            data = yaml.safe_load(storage.read_bytes(src)) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"policy {src} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"policy {src} must be a mapping", hint="see policies/drift.yaml")
    raw = _merge(DEFAULT_POLICY, data)
    try:
        _check(raw, src)
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"policy {src}: bad value ({exc})", hint="see policies/drift.yaml"
        ) from exc
    return Policy(raw)
