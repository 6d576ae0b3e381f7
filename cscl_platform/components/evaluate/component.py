"""evaluate: the method's evaluation against baselines → Metrics, ClassificationMetrics, HTML
(the report and the IHC triage);
compare_models: candidate vs current model → promote?"""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def evaluate(
    embeddings: Input[Dataset],
    baseline_embeddings: Input[Dataset],
    labels_uri: str,
    metrics: Output[Metrics],
    classification_er_status: Output[ClassificationMetrics],
    classification_pgr_status: Output[ClassificationMetrics],
    classification_her2_status: Output[ClassificationMetrics],
    classification_ki67_status: Output[ClassificationMetrics],
    classification_subtype: Output[ClassificationMetrics],
    report: Output[HTML],
    triage: Output[HTML],
    results: Output[Dataset],
    tasks: str = "subtype,er_status,her2_status,os",
    protocols: str = "fewshot,kfold,survival",
    method_name: str = "cscl",
    baseline_name: str = "mean-pool",
    score_metric: str = "kfold_auc",
    folds: int = 5,
    n_boot: int = 1000,
    ks: str = "1,5,10,25",
    seed: int = 0,
    min_score: float = -1.0,
    min_gain_over_baseline: float = 0.0,
    s3_endpoint: str = "",
) -> bool:
    """Evaluate (cscl.eval.evaluate); return the packaging gate's verdict. The quality score
    (cscl.eval.quality: mean `score_metric` of the method over the tasks that have a finite
    value; 0.0 when none has) is `quality_score` in `metrics`. (One bool `Output`, not a
    NamedTuple: kfp.local cannot resolve a named output in a `dsl.If` condition.) `min_score` ≥ 0 makes a gated run (training): it passes when
    the score reaches `min_score` AND beats the baseline's score (mean-pool) by more than
    `min_gain_over_baseline` — a model no better than averaging patch features is not released.
    The verdict and its reasons are in `metrics` and the report's headline. `min_score` < 0: no
    gate follows (retraining compares models itself) and the return is True."""
    import shutil
    from pathlib import Path

    from cscl.eval.headline import QualityGate, ReportOptions, gate_verdict
    from cscl.eval.metrics import headline_metrics, reference_classification_artifacts
    from cscl.eval.quality import check_score_metric, score_summary
    from cscl.eval.run import evaluate as run_evaluation
    from cscl.eval.triage_report import render_triage_html
    from cscl.io import storage

    storage.configure_store(s3_endpoint or None)
    check_score_metric(score_metric)  # a typo fails now, not after the evaluation
    gate = None
    if min_score >= 0:
        gate = QualityGate(min_score=min_score, baseline=baseline_name,
                           min_improvement=min_gain_over_baseline)  # fmt: skip
    m = run_evaluation(
        {method_name: embeddings.path, baseline_name: baseline_embeddings.path},
        labels_uri,
        tasks,
        results.path,
        protocols,
        folds=folds,
        n_boot=n_boot,
        ks=[int(k) for k in ks.split(",") if k.strip()],
        seed=seed,
        report_options=ReportOptions(  # the report's headline shows the gate's verdict
            score_metric=score_metric,
            gate=gate,
        ),
    )
    shutil.copyfile(f"{results.path}/report.html", report.path)
    Path(triage.path).write_text(render_triage_html(m), encoding="utf-8")  # IHC triage
    score = score_summary(m, method_name, score_metric)
    verdict = gate_verdict(m, gate, score_metric) if gate else None
    for k, v in headline_metrics(m, score, gate, verdict).items():
        metrics.log_metric(k, v)
    outputs = {
        "er_status": classification_er_status,
        "pgr_status": classification_pgr_status,
        "her2_status": classification_her2_status,
        "ki67_status": classification_ki67_status,
        "subtype": classification_subtype,
    }
    for task, art in reference_classification_artifacts(m, method_name).items():
        out = outputs[task]
        out.metadata["task"] = task
        if "note" in art:
            out.metadata["note"] = art["note"]
            continue
        if "roc" in art:
            r = art["roc"]
            out.log_roc_curve(r["fpr"], r["tpr"], r["threshold"])
        c = art["confusion"]
        out.log_confusion_matrix(c["categories"], c["matrix"])
    for note in m.get("notes", []):
        print("note:", note)
    print(f"quality score: {score.describe()}")
    if verdict:
        print(
            f"quality gate {'PASSED' if verdict.passed else 'FAILED'}: "
            + "; ".join(verdict.reasons)
        )
    return verdict.passed if verdict else True


@cscl_component
def compare_models(
    eval_results: Input[Dataset],
    comparison: Output[Markdown],
    metrics: Output[Metrics],
    candidate_name: str = "candidate",
    current_name: str = "current",
    score_metric: str = "kfold_auc",
    min_improvement: float = 0.0,
) -> bool:
    """Decide promotion from one evaluation of both models (cscl.eval.quality.compare_models);
    the Markdown report shows in the UI."""
    import json
    from pathlib import Path

    from cscl.eval.quality import compare_models as decide

    m = json.loads(Path(eval_results.path, "metrics.json").read_text())
    result = decide(m, candidate_name, current_name, score_metric, min_improvement)
    Path(comparison.path).write_text(result.markdown())
    for k, v in result.numbers().items():
        metrics.log_metric(k, v)
    print(result.markdown())
    return result.promote
