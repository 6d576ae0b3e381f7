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


KM_GROUPS = {"low": "#1f77b4", "high": "#d62728"}  # risk group → colour, drawn in this order


def km_ticks(t_max: float, n: int = 5) -> list[float]:
    """Round time points from 0 to `t_max`: the KM x ticks and the columns of the at-risk table."""
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(0, max(float(t_max), 1e-9))
    return [float(t) for t in ticks if 0 <= t <= t_max]


def numbers_at_risk(time, groups, ticks) -> dict[str, list[int]]:
    """Cases of each risk group still under observation (time ≥ tick) at each tick."""
    time, groups = np.asarray(time, float), np.asarray(groups)
    return {
        g: [int(((groups == g) & (time >= t)).sum()) for t in ticks]
        for g in KM_GROUPS
        if (groups == g).any()
    }


def km_figure(time, event, groups, title: str, p_text: str, time_label: str):
    """Kaplan–Meier curves of the risk groups (legend with n, censoring ticks, log-rank p in the
    title) above a number-at-risk table; returns (figure, ticks, numbers at risk)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    plt = _plt()
    time, event, groups = np.asarray(time, float), np.asarray(event, bool), np.asarray(groups)
    ticks = km_ticks(time.max() if len(time) else 1.0)
    at_risk = numbers_at_risk(time, groups, ticks)
    fig, (ax, tab) = plt.subplots(
        2, 1, sharex=True, layout="constrained", figsize=(5.4, 5.0), height_ratios=[4, 1.1]
    )
    for g, color in KM_GROUPS.items():
        sel = groups == g
        if not sel.any():
            continue
        t, s = kaplan_meier_estimator(event[sel], time[sel])
        t, s = np.concatenate([[0.0], t]), np.concatenate([[1.0], s])
        n, ev = int(sel.sum()), int(event[sel].sum())
        ax.step(t, s, where="post", color=color, lw=2, label=f"{g} risk (n={n}, {ev} events)")
        cens = sel & ~event
        if cens.any():
            ct = time[cens]
            ax.plot(ct, s[np.searchsorted(t, ct, side="right") - 1], "|", color=color, ms=7)
    ax.set(ylim=(0, 1.02), ylabel="Survival probability")
    ax.set_title(f"{title}\nlog-rank {p_text}", fontsize=10)
    ax.legend(loc="best", fontsize=8, title="median split of risk", title_fontsize=8)
    ax.grid(alpha=0.3)
    rows = list(at_risk)
    for i, g in enumerate(rows):
        for x, count in zip(ticks, at_risk[g], strict=True):
            tab.text(x, i, str(count), ha="center", va="center", fontsize=8, color=KM_GROUPS[g])
    tab.set_yticks(range(len(rows)), rows, fontsize=8)
    tab.set_ylim(len(rows) - 0.5, -0.5)
    tab.set_title("Number at risk", fontsize=8, loc="left")
    tab.set_xticks(ticks)
    tab.set_xlim(-0.03 * ticks[-1] if ticks else 0, max(time.max(), ticks[-1]) * 1.03)
    tab.set_xlabel(time_label)
    tab.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        tab.spines[side].set_visible(False)
    return fig, ticks, at_risk


def km_png(
    time, event, groups, path: Path, title: str, p_text: str, time_label: str = "time"
) -> dict:
    """`km_figure` saved as PNG; returns what the table shows: {"times": ticks, "at_risk": …}."""
    fig, ticks, at_risk = km_figure(time, event, groups, title, p_text, time_label)
    _save(fig, path)
    return {"times": ticks, "at_risk": at_risk}


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
