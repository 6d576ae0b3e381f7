"""Training pipeline: ingest → validate → extract (fan-out) → register → pretrain (2 stages) →
embed → evaluate → quality gate → package → deploy.

`build_training_pipeline(cluster=...)` returns the pipeline. `cluster=True` adds what only a
Kubernetes cluster can honour (GPU requests, node placement, tolerations, S3 credentials from a
Secret via kfp-kubernetes); `cluster=False` leaves them out so `kfp.local` can run it.
"""

from kfp import dsl

from cscl_platform.components.common import (
    GPU_ACCELERATOR,
    GPU_NODE_SELECTOR,
    S3_SECRET_KEYS,
    S3_SECRET_NAME,
)

PIPELINE_NAME = "cscl-training"
DEFAULT_TASKS = "subtype,er_status,her2_status,os"


def on_cluster(task: dsl.PipelineTask, *, gpu: bool = False, s3: bool = True) -> dsl.PipelineTask:
    """Cluster-only settings of one task: S3 credentials from the Secret; GPU + placement."""
    from kfp import kubernetes

    if s3:
        kubernetes.use_secret_as_env(
            task, secret_name=S3_SECRET_NAME, secret_key_to_env=dict(S3_SECRET_KEYS)
        )
    if gpu:
        task.set_accelerator_type(GPU_ACCELERATOR)
        task.set_accelerator_limit(1)
        kubernetes.add_node_selector(
            task, label_key=GPU_NODE_SELECTOR[0], label_value=GPU_NODE_SELECTOR[1]
        )
        kubernetes.add_toleration(task, key=GPU_ACCELERATOR, operator="Exists", effect="NoSchedule")
    return task


def feature_stages(cluster: bool, manifest_uri, labels_uri, s3_endpoint, num_shards, min_pass_rate):
    """ingest → validate; on a failed gate a `stop_run` task fails the run (after the report is
    stored, so the UI shows why). Shared by both pipelines; returns (ingest, validate) tasks.
    The caller opens `dsl.If(validate == True)` around everything after validation."""
    from cscl_platform.components.ingest.component import ingest
    from cscl_platform.components.validate.component import stop_run, validate

    setup = on_cluster if cluster else (lambda t, **_: t)
    ing = setup(ingest(manifest_uri=manifest_uri, s3_endpoint=s3_endpoint, num_shards=num_shards))
    ing.set_caching_options(False)  # the store may have changed since the last run
    ing.set_display_name("ingest cohort")
    val = setup(
        validate(
            slide_index=ing.outputs["slide_index"],
            labels_uri=labels_uri,
            s3_endpoint=s3_endpoint,
            min_pass_rate=min_pass_rate,
        )
    )
    val.set_display_name("validate data (Great Expectations)")
    with dsl.If(val.outputs["Output"] == False, name="validation-failed"):  # noqa: E712
        stop_run(
            message="data validation failed: see the 'validate' task's report (HTML) and log; "
            "fix the cohort or lower min_pass_rate"
        ).set_display_name("stop: validation failed")
    return ing, val


def extraction_fanout(
    cluster, ing, project_prefix, s3_endpoint, num_shards, backbone, weights, allow_random,
    target_mpp, patch_size, min_tissue, skip_failed_slides, seed,
):  # fmt: skip
    """One extract_features task per shard (dsl.ParallelFor), then collect_features."""
    from cscl_platform.components.extract_features.component import (
        collect_features,
        extract_features,
    )

    with dsl.ParallelFor(ing.outputs["Output"], name="shards") as shard:
        ex = extract_features(
            slide_index=ing.outputs["slide_index"],
            shard=shard,
            num_shards=num_shards,
            project_prefix=project_prefix,
            backbone=backbone,
            weights=weights,
            allow_random=allow_random,
            target_mpp=target_mpp,
            patch_size=patch_size,
            min_tissue=min_tissue,
            seed=seed,
            skip_failed_slides=skip_failed_slides,
            s3_endpoint=s3_endpoint,
        )
        ex.set_display_name("extract features (shard)")
        ex.set_retry(num_retries=2, backoff_duration="30s")  # resumes: finished slides reused
        if cluster:
            on_cluster(ex, gpu=True)
            ex.set_cpu_limit("8").set_memory_limit("32G")
    col = collect_features(shard_reports=dsl.Collected(ex.outputs["shard_report"]))
    col.set_display_name("collect features")
    return col


def model_stages(
    setup, index, feats, transforms_uri, s3_endpoint, adapter_epochs, adapter_batch_size,
    pairs_per_case, slide_epochs, slide_batch_size, n_tokens, small_encoder, seed,
):  # fmt: skip
    """register → pretrain stage 1 → pretrain stage 2 → embed; shared by both pipelines.

    Returns the (register, adapter, slide encoder, embed) tasks."""
    from cscl_platform.components.embed.component import embed
    from cscl_platform.components.pretrain_adapter.component import pretrain_adapter
    from cscl_platform.components.pretrain_slide_encoder.component import pretrain_slide_encoder
    from cscl_platform.components.register.component import register

    reg = setup(register(slide_index=index, transforms_uri=transforms_uri, s3_endpoint=s3_endpoint))
    reg.set_display_name("register H&E → IHC")
    ad = setup(
        pretrain_adapter(
            slide_index=index,
            features=feats,
            registration=reg.outputs["registration"],
            epochs=adapter_epochs,
            batch_size=adapter_batch_size,
            pairs_per_case=pairs_per_case,
            seed=seed,
            s3_endpoint=s3_endpoint,
        ),
        gpu=True,
    )
    ad.set_display_name("pretrain stage 1: adapter")
    se = setup(
        pretrain_slide_encoder(
            slide_index=index,
            features=feats,
            registration=reg.outputs["registration"],
            adapter=ad.outputs["adapter"],
            epochs=slide_epochs,
            batch_size=slide_batch_size,
            n_tokens=n_tokens,
            small=small_encoder,
            seed=seed,
            s3_endpoint=s3_endpoint,
        ),
        gpu=True,
    )
    se.set_display_name("pretrain stage 2: slide encoder")
    em = setup(
        embed(slide_index=index, features=feats, model=se.outputs["model"], s3_endpoint=s3_endpoint)
    )
    em.set_display_name("embed H&E slides")
    return reg, ad, se, em


def build_training_pipeline(cluster: bool = False):
    """The training pipeline; `cluster` adds kfp-kubernetes settings (see module docstring)."""
    from cscl_platform.components.embed.component import embed_baseline
    from cscl_platform.components.evaluate.component import evaluate

    setup = on_cluster if cluster else (lambda t, **_: t)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="CSCL: paired H&E/IHC cohort on S3 → features → pretrained slide encoder → "
        "evaluation → quality-gated TorchServe model.",
    )
    def training(
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
        min_score: float = 0.6,
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
            reg, ad, se, em = model_stages(
                setup, index, feats, transforms_uri, s3_endpoint, adapter_epochs,
                adapter_batch_size, pairs_per_case, slide_epochs, slide_batch_size, n_tokens,
                small_encoder, seed,
            )  # fmt: skip
            em.set_display_name("embed H&E slides")
            bl = setup(embed_baseline(slide_index=index, features=feats, s3_endpoint=s3_endpoint))
            bl.set_display_name("embed baseline (mean-pool)")
            ev = setup(
                evaluate(
                    embeddings=em.outputs["embeddings"],
                    baseline_embeddings=bl.outputs["embeddings"],
                    labels_uri=labels_uri,
                    tasks=tasks,
                    protocols=protocols,
                    folds=folds,
                    n_boot=n_boot,
                    ks=ks,
                    seed=seed,
                    s3_endpoint=s3_endpoint,
                )
            )
            ev.set_display_name("evaluate vs baseline")
            with dsl.If(ev.outputs["Output"] >= min_score, name="quality-gate"):
                release_stages(
                    setup, se, em, ev, feats, index, project_prefix, labels_uri, tasks,
                    model_name, weights, seed, min_tissue, deploy_target,
                    torchserve_management_url, torchserve_model_store, s3_endpoint,
                )  # fmt: skip

    return training


def release_stages(
    setup, se, em, ev, feats, index, project_prefix, labels_uri, tasks, model_name, weights,
    seed, min_tissue, deploy_target, torchserve_management_url, torchserve_model_store,
    s3_endpoint,
):  # fmt: skip
    """package (bundle + .mar → `<prefix>/models/<name>/<version>/`) → deploy."""
    from cscl_platform.components.deploy.component import deploy
    from cscl_platform.components.package.component import package

    pk = setup(
        package(
            model=se.outputs["model"],
            embeddings=em.outputs["embeddings"],
            features=feats,
            slide_index=index,
            eval_results=ev.outputs["results"],
            project_prefix=project_prefix,
            labels_uri=labels_uri,
            tasks=tasks,
            model_name=model_name,
            weights=weights,
            seed=seed,
            min_tissue=min_tissue,
            s3_endpoint=s3_endpoint,
        )
    )
    pk.set_display_name("package model (bundle + .mar)")
    dp = setup(
        deploy(
            model_uri=pk.outputs["Output"],
            model_name=model_name,
            target=deploy_target,
            torchserve_management_url=torchserve_management_url,
            torchserve_model_store=torchserve_model_store,
            s3_endpoint=s3_endpoint,
        )
    )
    dp.set_display_name("deploy")
    dp.set_caching_options(False)
    return pk, dp


training_pipeline = build_training_pipeline(cluster=False)
