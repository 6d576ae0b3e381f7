"""evaluate: the method's evaluation against baselines → Metrics, ClassificationMetrics, HTML;
compare_models: candidate vs current model → promote?"""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def evaluate(
    embeddings: Input[Dataset],
    baseline_embeddings: Input[Dataset],
    labels_uri: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
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
    s3_endpoint: str = "",
) -> float:
    """Evaluate (cscl.eval.evaluate) and return the quality score the packaging gate compares
    with min_score (cscl.eval.quality: mean `score_metric` of the method over the tasks that
    have a finite value; 0.0 when none has)."""
    import shutil

    from cscl.eval.metrics import classification_artifacts, flat_metrics
    from cscl.eval.quality import check_score_metric, score_summary
    from cscl.eval.run import evaluate as run_evaluation
    from cscl.io import storage

    storage.configure_store(s3_endpoint or None)
    check_score_metric(score_metric)  # a typo fails now, not after the evaluation
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
    )
    for k, v in flat_metrics(m).items():
        metrics.log_metric(k, v)
    shutil.copyfile(f"{results.path}/report.html", report.path)
    arts = classification_artifacts(m, method_name)
    if arts:  # the UI shows one ROC + one confusion matrix per artifact: the first task's
        task, art = next(iter(arts.items()))
        if "roc" in art:
            r = art["roc"]
            classification.log_roc_curve(r["fpr"], r["tpr"], r["threshold"])
        c = art["confusion"]
        classification.log_confusion_matrix(c["categories"], c["matrix"])
        classification.metadata["task"] = task
    score = score_summary(m, method_name, score_metric)
    metrics.log_metric("quality_score", score.gate_value())
    for note in m.get("notes", []):
        print("note:", note)
    print(f"quality score: {score.describe()}")
    return score.gate_value()


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
