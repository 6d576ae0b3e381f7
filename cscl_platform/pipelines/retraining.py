"""Retraining pipeline: a new or grown cohort + the current released model → candidate model;
both are evaluated on the same cohort and tasks; the candidate is packaged and deployed only if
it is better (`compare_models`, whose Markdown report shows in the UI).

Extraction reuses every feature file already stored under the same extractor hash, so a grown
cohort only extracts its new slides.
"""

from kfp import dsl

from cscl_platform.pipelines.training import (
    DEFAULT_TASKS,
    extraction_fanout,
    feature_stages,
    model_stages,
    on_cluster,
    release_stages,
)

PIPELINE_NAME = "cscl-retraining"


def build_retraining_pipeline(cluster: bool = False):
    """The retraining pipeline; `cluster` adds kfp-kubernetes settings (see training.py)."""
    from cscl_platform.components.embed.component import embed_released
    from cscl_platform.components.evaluate.component import compare_models, evaluate

    setup = on_cluster if cluster else (lambda t, **_: t)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="CSCL retraining: new/grown cohort + current model → candidate; promoted "
        "only if better on the same evaluation.",
    )
    def retraining(
        current_model_uri: str = "s3://cscl/models/cscl/current/",
        manifest_uri: str = "s3://cscl/cohorts/default/manifest.csv",
        labels_uri: str = "s3://cscl/cohorts/default/labels.csv",
        project_prefix: str = "s3://cscl",
        s3_endpoint: str = "",
        transforms_uri: str = "",
        num_shards: int = 4,
        min_pass_rate: float = 1.0,
        backbone: str = "resnet18",
        weights: str = "",
        allow_random: bool = False,
        target_mpp: float = 1.0,
        patch_size: int = 224,
        min_tissue: float = 0.25,
        skip_failed_slides: bool = False,
        adapter_epochs: int = 120,
        adapter_batch_size: int = 8,
        pairs_per_case: int = 256,
        slide_epochs: int = 120,
        slide_batch_size: int = 24,
        n_tokens: int = 2048,
        small_encoder: bool = False,
        tasks: str = DEFAULT_TASKS,
        protocols: str = "fewshot,kfold,survival",
        folds: int = 5,
        n_boot: int = 1000,
        ks: str = "1,5,10,25",
        score_metric: str = "kfold_auc",
        min_improvement: float = 0.0,
        model_name: str = "cscl",
        deploy_target: str = "none",
        torchserve_management_url: str = "",
        torchserve_model_store: str = "",
        seed: int = 0,
    ):
        ing, val = feature_stages(
            cluster, manifest_uri, labels_uri, s3_endpoint, num_shards, min_pass_rate
        )
        with dsl.If(val.outputs["Output"] == True, name="validation-passed"):  # noqa: E712
            col = extraction_fanout(
                cluster, ing, project_prefix, s3_endpoint, num_shards, backbone, weights,
                allow_random, target_mpp, patch_size, min_tissue, skip_failed_slides, seed,
            )  # fmt: skip
            index, feats = ing.outputs["slide_index"], col.outputs["features"]
            _, _, se, em = model_stages(
                setup, index, feats, transforms_uri, s3_endpoint, adapter_epochs,
                adapter_batch_size, pairs_per_case, slide_epochs, slide_batch_size, n_tokens,
                small_encoder, seed,
            )  # fmt: skip
            em.set_display_name("embed with candidate")
            cur = setup(
                embed_released(
                    slide_index=index,
                    features=feats,
                    model_uri=current_model_uri,
                    s3_endpoint=s3_endpoint,
                )
            )
            cur.set_display_name("embed with current model")
            ev = setup(
                evaluate(
                    embeddings=em.outputs["embeddings"],
                    baseline_embeddings=cur.outputs["embeddings"],
                    labels_uri=labels_uri,
                    tasks=tasks,
                    protocols=protocols,
                    method_name="candidate",
                    baseline_name="current",
                    score_metric=score_metric,
                    folds=folds,
                    n_boot=n_boot,
                    ks=ks,
                    seed=seed,
                    s3_endpoint=s3_endpoint,
                )
            )
            ev.set_display_name("evaluate candidate vs current")
            cmp = compare_models(
                eval_results=ev.outputs["results"],
                score_metric=score_metric,
                min_improvement=min_improvement,
            )
            cmp.set_display_name("compare: promote?")
            with dsl.If(cmp.outputs["Output"] == True, name="promote"):  # noqa: E712
                release_stages(
                    setup, se, em, ev, feats, index, project_prefix, labels_uri, tasks,
                    model_name, weights, seed, min_tissue, deploy_target,
                    torchserve_management_url, torchserve_model_store, s3_endpoint,
                )  # fmt: skip

    return retraining
