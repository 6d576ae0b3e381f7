"""evaluate: the method's evaluation against baselines → Metrics, ClassificationMetrics, HTML."""

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
    """Evaluate (cscl.eval.run.evaluate) and return the quality score the packaging gate uses:
    the mean over tasks of `<task>.<method>.<score_metric>` (0.0 if no task produced it)."""
    import math
    import shutil

    from cscl.eval.run import classification_artifacts, evaluate, flat_metrics

    m = evaluate(
        {method_name: embeddings.path, baseline_name: baseline_embeddings.path},
        labels_uri,
        tasks,
        results.path,
        protocols,
        folds=folds,
        n_boot=n_boot,
        ks=[int(k) for k in ks.split(",") if k.strip()],
        seed=seed,
        endpoint_url=s3_endpoint or None,
    )
    flat = flat_metrics(m)
    for k, v in flat.items():
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
    vals = [v for k, v in flat.items() if k.endswith(f".{method_name}.{score_metric}")]
    score = float(sum(vals) / len(vals)) if vals else 0.0
    if not vals or math.isnan(score):
        print(f"no task produced {score_metric} for {method_name}; quality score 0")
        score = 0.0
    metrics.log_metric("quality_score", score)
    for note in m.get("notes", []):
        print("note:", note)
    print(f"quality score ({score_metric}, {method_name}) = {score:.4f}")
    return score


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
    """Decide promotion from one evaluation of both models; the report shows in the UI."""
    import json
    import math
    from pathlib import Path

    from cscl.eval.run import flat_metrics
    from cscl_platform.components.evaluate.compare import compare

    flat = flat_metrics(json.loads(Path(eval_results.path, "metrics.json").read_text()))
    promote, report, numbers = compare(
        flat, candidate_name, current_name, score_metric, min_improvement
    )
    Path(comparison.path).write_text(report)
    for k, v in numbers.items():
        if not math.isnan(v):
            metrics.log_metric(k, v)
    print(report)
    return promote
