"""PNG figures of the evaluation report (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cscl.io.storage import atomic_path

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _plt().close(fig)
    return path


def roc_png(curves: dict[str, dict], path: Path, title: str) -> Path:
    """ROC curves of several methods on one axis: curves[name] = {fpr, tpr, auc, ci}."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(4.6, 4.4))
    for i, (name, c) in enumerate(curves.items()):
        label = f"{name}  AUC {c['auc']:.3f}"
        if c.get("ci"):
            label += f" [{c['ci'][0]:.3f}–{c['ci'][1]:.3f}]"
        ax.plot(c["fpr"], c["tpr"], color=_COLORS[i % len(_COLORS)], lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_png(matrix, classes: list[str], path: Path, title: str) -> Path:
    """Confusion matrix (rows = true class) with counts and row percentages."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    k = len(classes)
    size = max(3.2, 0.9 * k + 1.8)
    fig, ax = plt.subplots(layout="constrained", figsize=(size, size * 0.9))
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}\n{frac[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if frac[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=30, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="Predicted", ylabel="True")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def km_png(time, event, groups, path: Path, title: str, p_value: float | None) -> Path:
    """Kaplan–Meier curves of the risk groups, with numbers at risk and the log-rank p."""
    from sksurv.nonparametric import kaplan_meier_estimator

    plt = _plt()
    time, event, groups = np.asarray(time), np.asarray(event, bool), np.asarray(groups)
    fig, ax = plt.subplots(layout="constrained", figsize=(5.2, 4.2))
    colors = {"low": "#1f77b4", "high": "#d62728"}
    for g in ("low", "high"):
        sel = groups == g
        if not sel.any():
            continue
        t, s = kaplan_meier_estimator(event[sel], time[sel])
        t, s = np.concatenate([[0.0], t]), np.concatenate([[1.0], s])
        ax.step(t, s, where="post", color=colors[g], lw=2, label=f"{g} risk (n={int(sel.sum())})")
        cens = sel & ~event
        if cens.any():
            ct = time[cens]
            ax.plot(ct, s[np.searchsorted(t, ct, side="right") - 1], "|", color=colors[g], ms=7)
    ax.set(ylim=(0, 1.02), xlabel="Time", ylabel="Survival probability")
    ptxt = "log-rank p = n/a" if p_value is None else f"log-rank p = {p_value:.3g}"
    ax.set_title(f"{title}\n{ptxt}", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def fewshot_png(series: dict[str, dict], path: Path, title: str, metric: str = "AUC") -> Path:
    """Mean ± std of a few-shot metric against k for several methods: series[name] = {k, mean, std}."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(4.6, 3.6))
    for i, (name, s) in enumerate(series.items()):
        ks, mu, sd = (np.asarray(s[key], float) for key in ("k", "mean", "std"))
        c = _COLORS[i % len(_COLORS)]
        ax.errorbar(ks, mu, yerr=sd, marker="o", capsize=3, color=c, label=name)
    ax.set_xscale("log")
    ks_all = sorted({int(k) for s in series.values() for k in s["k"]})
    if ks_all:
        ax.set_xticks(ks_all, [str(k) for k in ks_all])
    ax.set(xlabel="k (training cases per class)", ylabel=metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
