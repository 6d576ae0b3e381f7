"""report.html a pathologist reads: headline first (quality score, gate verdict), the per-task
table, p-values that say what they can (actual folds and resamples, no number on a handful of
cases, never 0.000), Kaplan–Meier with a time unit and a number-at-risk table."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest

from cscl.eval.headline import QualityGate, ReportOptions, gate_verdict, task_rows
from cscl.eval.plots import km_figure, numbers_at_risk
from cscl.eval.pvalues import format_p, p_clause, smallest_exact_p
from cscl.eval.quality import score_summary
from cscl.eval.report import render_html
from cscl.eval.run import evaluate

FAST = dict(n_boot=100, n_iter=2, inner_folds=2, draws=2, ks=(1, 5))
OPTIONS = ReportOptions(gate=QualityGate(min_score=0.6), time_unit="days")


def _run(make_planted, meta_for, tmp_path_factory, n: int, folds: int) -> tuple[dict, str]:
    labels, X, N = make_planted(n=n)
    tables = {"cscl": (meta_for(labels.case_id), X), "noise": (meta_for(labels.case_id), N)}
    out = tmp_path_factory.mktemp(f"report{n}")
    m = evaluate(tables, labels, "er_status,os", out, "fewshot,kfold,survival", folds=folds,
                 report_options=OPTIONS, **FAST)  # fmt: skip
    return m, (out / "report.html").read_text()


@pytest.fixture(scope="module")
def medium(make_planted, meta_for, tmp_path_factory):
    """24 cases, 3 folds: enough cases for p-values, few folds for a visible bound."""
    return _run(make_planted, meta_for, tmp_path_factory, 24, 3)


@pytest.fixture(scope="module")
def tiny(make_planted, meta_for, tmp_path_factory):
    """12 cases, 2 folds: every p-value is a caveat."""
    return _run(make_planted, meta_for, tmp_path_factory, 12, 2)


def _text(html: str) -> str:
    """The visible text (images and tags dropped)."""
    return re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", html))


def test_format_p_rules():
    assert format_p(1.8e-6, n_cases=6) == "not interpretable (6 cases)"
    assert format_p(1e-40, n_cases=60, floor=1 / 200) == "< 0.005"
    assert format_p(0.0) == "< 0.001" and format_p(0.0004) == "< 0.001"
    assert format_p(0.0423) == "0.042" and format_p(1.0) == "1.000"
    assert format_p(None) == "–" and format_p(math.nan) == "–"
    assert p_clause(0.0423) == "p = 0.042" and p_clause(1e-9) == "p < 0.001"
    assert p_clause(0.2, n_cases=6) == "p not interpretable (6 cases)"
    assert smallest_exact_p(5) == pytest.approx(0.03125) and smallest_exact_p(2) == 0.25


def test_headline_comes_first_with_scores_and_gate(medium):
    m, html = medium
    score = score_summary(m, "cscl")
    assert score.defined and score.value >= 0.6  # the planted signal passes 0.6
    head = html.index("class=headline")
    assert (
        head < html.index("Results per task") < html.index("<h2>Dataset") < html.index("<h3>k-fold")
    )
    top = _text(html[head : html.index("Results per task")])
    assert "Evaluated cscl against noise on 24 cases and 2 task(s)" in " ".join(top.split())
    assert "Quality gate PASSED" in top and f"{score.value:.3f} ≥ the threshold 0.6" in top
    assert f"{score_summary(m, 'noise').value:.3f}" in top  # every method's score


def test_gate_failed_and_baseline_rule(medium):
    m, _ = medium
    value = score_summary(m, "cscl").value
    html = render_html(m, "/nonexistent", ReportOptions(gate=QualityGate(min_score=1.1)))
    assert f"Quality gate FAILED: cscl&#x27;s quality score {value:.3f} &lt; the threshold" in html
    v = gate_verdict(m, QualityGate(baseline="noise", min_improvement=0.05), "kfold_auc")
    assert v.passed and "cscl beats noise by more than 0.05" in v.reasons[0]
    v = gate_verdict(m, QualityGate(min_score=0.6, baseline="noise", min_improvement=0.9),
                     "kfold_auc")  # fmt: skip
    assert not v.passed and len(v.reasons) == 2
    no_gate = render_html(m, "/nonexistent", ReportOptions())
    assert "No quality gate was given" in no_gate and "Quality gate PASSED" not in no_gate


def test_best_method_per_task_is_highlighted(medium):
    m, html = medium
    rows = {r.task: r for r in task_rows(m, "kfold_auc")}
    assert rows["er_status"].best == ["cscl"] and rows["os"].metric == "cindex"
    table = html[html.index("Results per task") : html.index("<h2>Dataset")]
    v = rows["er_status"].values["cscl"][0]
    assert f"<span class=best>{v:.3f}" in table


def test_p_value_text_uses_actual_folds_draws_and_resamples(medium):
    _, html = medium
    text = " ".join(_text(html).split())
    assert "pair 3 folds, so their smallest possible p is 1/2^3 = 0.125" in text
    assert "few-shot tests pair 2 draws (smallest possible p = 0.25)" in text
    assert "shown no finer than 1/100 (= 0.01)" in text
    assert "5 folds" not in text and "0.031" not in text


def test_no_p_value_printed_as_zero(medium):
    m, _ = medium
    m = copy.deepcopy(m)
    for tests in m["tasks"]["er_status"]["comparisons"]["noise"].values():
        tests["p_value"] = 0.0
    m["tasks"]["os"]["results"]["cscl"]["survival"]["logrank"]["p_value"] = 1e-300
    cells = re.findall(r"<td>([^<]*)</td></tr>", render_html(m, "/nonexistent", OPTIONS))
    assert "&lt; 0.01" in cells and "&lt; 0.001" in cells  # bootstrap floor, plain floor
    assert not [c for c in cells if re.fullmatch(r"0\.0+|[\d.]+e-\d+", c)]


def test_small_cohort_p_values_carry_a_caveat(tiny):
    m, html = tiny
    text = " ".join(_text(html).split())
    assert "Only 12 cases: estimates are unstable and p-values are not interpretable" in text
    assert "1/2^2 = 0.25" in text
    n_tests = sum(len(t) for e in m["tasks"].values() for t in e["comparisons"].values())
    # every paired test, both log-rank tests and the headline p of both tasks
    assert n_tests > 4
    assert html.count("<td>not interpretable (12 cases)</td>") == n_tests + 2 + 2
    tampered = copy.deepcopy(m)
    for t in tampered["tasks"]["er_status"]["comparisons"]["noise"].values():
        t["p_value"] = 1.8e-6
    assert "1.8e-06" not in render_html(tampered, "/nonexistent", OPTIONS)


def test_numbers_at_risk_counts_cases_still_followed():
    time = np.array([1.0, 2.0, 5.0, 7.0, 12.0, 3.0])
    groups = np.array(["low", "low", "low", "high", "high", "high"])
    assert numbers_at_risk(time, groups, [0, 3, 6, 12]) == {
        "low": [3, 1, 0, 0],
        "high": [3, 3, 2, 1],
    }


def test_km_figure_draws_unit_legend_n_and_at_risk_table():
    rng = np.random.default_rng(1)
    time = rng.exponential(30, 40) + 0.5
    event = rng.random(40) < 0.7
    groups = np.where(np.arange(40) < 18, "low", "high")
    fig, ticks, at_risk = km_figure(time, event, groups, "os", "p = 0.2", "time (days)")
    try:
        curves, table = fig.axes
        assert table.get_xlabel() == "time (days)" and ticks[0] == 0
        legend = [t.get_text() for t in curves.get_legend().get_texts()]
        assert legend[0].startswith("low risk (n=18") and legend[1].startswith("high risk (n=22")
        drawn = {(round(t.get_position()[0], 6), t.get_position()[1], t.get_text())
                 for t in table.texts}  # fmt: skip
        expected = {(round(x, 6), row, str(c)) for row, counts in enumerate(at_risk.values())
                    for x, c in zip(ticks, counts, strict=True)}  # fmt: skip
        assert drawn == expected
        assert [t.get_text() for t in table.get_yticklabels()] == ["low", "high"]
        assert at_risk == numbers_at_risk(time, groups, ticks)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_report_has_km_at_risk_table_with_unit(medium):
    m, html = medium
    table = m["tasks"]["os"]["plots"]["km_at_risk"]["cscl"]
    groups = m["tasks"]["os"]["results"]["cscl"]["survival"]["logrank"]["groups"]
    assert {g: c[0] for g, c in table["at_risk"].items()} == groups  # everyone at risk at 0
    assert "cscl: number at risk at time (days)" in html
    row = "<tr><td>high risk</td>" + "".join(f"<td>{c}</td>" for c in table["at_risk"]["high"])
    assert row in html
    default = render_html(m, "/nonexistent", ReportOptions())
    assert "number at risk at time (<code>os_time</code>)" in default
