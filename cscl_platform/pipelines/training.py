"""The training and retraining pipelines: one DAG, two endings.

    ingest → validate (gate) → extract_features ×shards → collect → register → pretrain_adapter
    → pretrain_slide_encoder → embed → …
      training:   embed_baseline (mean-pool) → evaluate → If(score ≥ min_score) → package → deploy
      retraining: embed_released (current model) → evaluate candidate vs current → compare_models
                  → If(promote) → package → deploy

The parameters come from `pipelines.params.PARAMS` (one declaration each); the stages below read
them from the `Params` object. `cluster=True` adds what only a Kubernetes cluster can honour (GPU
requests, node placement, tolerations, S3 credentials from a Secret via kfp-kubernetes);
`cluster=False` leaves them out so `kfp.local` can run the pipeline.

In a cluster build every task has CPU/memory requests and limits (`TASK_RESOURCES`: a task
parsing a hostile slide cannot starve the node), and only the deploy task holds credentials for
the Kubernetes API: the kubeconfig of the `cscl-deployer` service account, mounted from the
Secret `DEPLOYER_KUBECONFIG_SECRET` (docs/SECURITY.md). kfp-kubernetes 2.17 cannot give one task
its own service account, so the run's account (`cscl-pipeline-runner`) has no API rights.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl

from cscl_platform.components.common import (
    GPU_ACCELERATOR,
    GPU_NODE_SELECTOR,
    S3_SECRET_KEYS,
    S3_SECRET_NAME,
)
from cscl_platform.components.deploy.component import deploy
from cscl_platform.components.embed.component import embed, embed_baseline, embed_released
from cscl_platform.components.evaluate.component import compare_models, evaluate
from cscl_platform.components.extract_features.component import collect_features, extract_features
from cscl_platform.components.ingest.component import ingest
from cscl_platform.components.package.component import package
from cscl_platform.components.pretrain_adapter.component import pretrain_adapter
from cscl_platform.components.pretrain_slide_encoder.component import pretrain_slide_encoder
from cscl_platform.components.register.component import register
from cscl_platform.components.validate.component import stop_run, validate
from cscl_platform.pipelines.params import RETRAINING, TRAINING, Params, pipeline_function

PIPELINE_NAMES = {TRAINING: "cscl-training", RETRAINING: "cscl-retraining"}
DESCRIPTIONS = {
    TRAINING: "CSCL: paired H&E/IHC cohort on S3 → features → pretrained slide encoder → "
    "evaluation → quality-gated TorchServe model.",
    RETRAINING: "CSCL retraining: new/grown cohort + current model → candidate; promoted only if "
    "better on the same evaluation.",
}


# (cpu request, cpu limit, memory request, memory limit) per kind of task in a cluster build.
TASK_RESOURCES: dict[str, tuple[str, str, str, str]] = {
    "small": ("250m", "1", "512M", "2G"),  # gates, bookkeeping, deploy
    "medium": ("1", "4", "4G", "16G"),  # tables, embeddings, evaluation, packaging
    "gpu": ("4", "8", "16G", "32G"),  # training next to one GPU
    "extract": ("4", "8", "16G", "32G"),  # slide reading + backbone next to one GPU
}
DEPLOYER_KUBECONFIG_SECRET = "cscl-deployer-kubeconfig"
DEPLOYER_KUBECONFIG_DIR = "/var/run/cscl-deployer"


def set_resources(task: dsl.PipelineTask, size: str) -> dsl.PipelineTask:
    cpu_req, cpu_lim, mem_req, mem_lim = TASK_RESOURCES[size]
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim)
    return task.set_memory_request(mem_req).set_memory_limit(mem_lim)


def with_deployer_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The one task that talks to the Kubernetes API gets the deployer's kubeconfig."""
    from kfp import kubernetes

    kubernetes.use_secret_as_volume(
        task, secret_name=DEPLOYER_KUBECONFIG_SECRET, mount_path=DEPLOYER_KUBECONFIG_DIR
    )
    return task.set_env_variable("KUBECONFIG", f"{DEPLOYER_KUBECONFIG_DIR}/kubeconfig")


def on_cluster(
    task: dsl.PipelineTask, *, gpu: bool = False, s3: bool = True, size: str = "small"
) -> dsl.PipelineTask:
    """Cluster-only settings of one task: resources; S3 credentials from the Secret; GPU +
    placement."""
    from kfp import kubernetes

    set_resources(task, size)
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


@dataclass
class Stages:
    """Adds the stages of the pipeline to the graph being built; `p` holds its parameters."""

    p: Params
    cluster: bool

    def task(
        self,
        t: dsl.PipelineTask,
        name: str,
        *,
        gpu: bool = False,
        s3: bool = True,
        size: str | None = None,
    ) -> dsl.PipelineTask:
        """Name a task for the UI and add the cluster-only settings when compiling for one."""
        t.set_display_name(name)
        size = size or ("gpu" if gpu else "medium")
        return on_cluster(t, gpu=gpu, s3=s3, size=size) if self.cluster else t

    def ingest_and_validate(self) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
        """ingest → validate; on a failed gate a `stop_run` task fails the run (after the report
        is stored, so the UI shows why). The caller opens `dsl.If(validate == True)`."""
        p = self.p
        ing = self.task(
            ingest(manifest_uri=p.manifest_uri, s3_endpoint=p.s3_endpoint, num_shards=p.num_shards),
            "ingest cohort",
            size="small",
        )
        ing.set_caching_options(False)  # the store may have changed since the last run
        val = self.task(
            validate(
                slide_index=ing.outputs["slide_index"],
                labels_uri=p.labels_uri,
                s3_endpoint=p.s3_endpoint,
                min_pass_rate=p.min_pass_rate,
            ),
            "validate data (Great Expectations)",
        )
        with dsl.If(val.outputs["Output"] == False, name="validation-failed"):  # noqa: E712
            stop = stop_run(
                message="data validation failed: see the 'validate' task's report (HTML) and "
                "log; fix the cohort or lower min_pass_rate"
            )
            self.task(stop, "stop: validation failed", s3=False, size="small")
        return ing, val

    def extract(self, ing: dsl.PipelineTask) -> dsl.PipelineTask:
        """One extract_features task per shard (dsl.ParallelFor), then collect_features."""
        p = self.p
        with dsl.ParallelFor(ing.outputs["Output"], name="shards") as shard:
            ex = extract_features(
                slide_index=ing.outputs["slide_index"],
                shard=shard,
                num_shards=p.num_shards,
                project_prefix=p.project_prefix,
                backbone=p.backbone,
                weights=p.weights,
                allow_random=p.allow_random,
                target_mpp=p.target_mpp,
                patch_size=p.patch_size,
                min_tissue=p.min_tissue,
                seed=p.seed,
                skip_failed_slides=p.skip_failed_slides,
                s3_endpoint=p.s3_endpoint,
            )
            self.task(ex, "extract features (shard)", gpu=True, size="extract")
            ex.set_retry(num_retries=2, backoff_duration="30s")  # resumes: finished slides reused
        col = collect_features(shard_reports=dsl.Collected(ex.outputs["shard_report"]))
        return self.task(col, "collect features", s3=False, size="small")

    def pretrain(self, *, index, features) -> dsl.PipelineTask:
        """register → pretrain stage 1 → pretrain stage 2; returns the slide-encoder task."""
        p = self.p
        reg = self.task(
            register(slide_index=index, transforms_uri=p.transforms_uri, s3_endpoint=p.s3_endpoint),
            "register H&E → IHC",
        )
        inputs = dict(
            slide_index=index,
            features=features,
            registration=reg.outputs["registration"],
            seed=p.seed,
            s3_endpoint=p.s3_endpoint,
        )
        adapter = pretrain_adapter(
            **inputs,
            epochs=p.adapter_epochs,
            batch_size=p.adapter_batch_size,
            pairs_per_case=p.pairs_per_case,
        )
        self.task(adapter, "pretrain stage 1: adapter", gpu=True)
        slide = pretrain_slide_encoder(
            **inputs,
            adapter=adapter.outputs["adapter"],
            epochs=p.slide_epochs,
            batch_size=p.slide_batch_size,
            n_tokens=p.n_tokens,
            small=p.small_encoder,
        )
        return self.task(slide, "pretrain stage 2: slide encoder", gpu=True)

    def evaluate(self, *, embeddings, baseline, **names) -> dsl.PipelineTask:
        """Evaluate the new model's embeddings against `baseline` on the labels."""
        p = self.p
        return evaluate(
            embeddings=embeddings,
            baseline_embeddings=baseline,
            labels_uri=p.labels_uri,
            tasks=p.tasks,
            protocols=p.protocols,
            folds=p.folds,
            n_boot=p.n_boot,
            ks=p.ks,
            seed=p.seed,
            s3_endpoint=p.s3_endpoint,
            **names,
        )

    def release(self, *, model, embeddings, features, index, results) -> dsl.PipelineTask:
        """package (bundle + .mar → `<prefix>/models/<name>/<version>/`) → deploy."""
        p = self.p
        pk = package(
            model=model,
            embeddings=embeddings,
            features=features,
            slide_index=index,
            eval_results=results,
            project_prefix=p.project_prefix,
            labels_uri=p.labels_uri,
            tasks=p.tasks,
            model_name=p.model_name,
            weights=p.weights,
            seed=p.seed,
            min_tissue=p.min_tissue,
            s3_endpoint=p.s3_endpoint,
        )
        self.task(pk, "package model (bundle + .mar)")
        dp = deploy(
            model_uri=pk.outputs["Output"],
            model_name=p.model_name,
            target=p.deploy_target,
            torchserve_management_url=p.torchserve_management_url,
            torchserve_model_store=p.torchserve_model_store,
            s3_endpoint=p.s3_endpoint,
        )
        self.task(dp, "deploy", size="small").set_caching_options(False)
        if self.cluster:
            with_deployer_credentials(dp)
        return dp


def graph(p: Params, *, kind: str, cluster: bool) -> None:
    """The whole DAG of pipeline `kind` (training | retraining)."""
    s = Stages(p, cluster)
    ing, val = s.ingest_and_validate()
    with dsl.If(val.outputs["Output"] == True, name="validation-passed"):  # noqa: E712
        index = ing.outputs["slide_index"]
        features = s.extract(ing).outputs["features"]
        model = s.pretrain(index=index, features=features).outputs["model"]
        em = embed(slide_index=index, features=features, model=model, s3_endpoint=p.s3_endpoint)
        embeddings = em.outputs["embeddings"]
        release = dict(model=model, embeddings=embeddings, features=features, index=index)
        if kind == TRAINING:
            s.task(em, "embed H&E slides")
            bl = embed_baseline(slide_index=index, features=features, s3_endpoint=p.s3_endpoint)
            s.task(bl, "embed baseline (mean-pool)")
            ev = s.evaluate(embeddings=embeddings, baseline=bl.outputs["embeddings"],
                            min_score=p.min_score, min_gain_over_baseline=p.min_gain_over_baseline)  # fmt: skip
            s.task(ev, "evaluate vs baseline")
            # score ≥ min_score and better than mean-pool (the verdict is in the evaluate task)
            with dsl.If(ev.outputs["Output"] == True, name="quality-gate"):  # noqa: E712
                s.release(**release, results=ev.outputs["results"])
        else:
            s.task(em, "embed with candidate")
            cur = embed_released(
                slide_index=index,
                features=features,
                model_uri=p.current_model_uri,
                s3_endpoint=p.s3_endpoint,
            )
            s.task(cur, "embed with current model")
            ev = s.evaluate(
                embeddings=embeddings,
                baseline=cur.outputs["embeddings"],
                method_name="candidate",
                baseline_name="current",
                score_metric=p.score_metric,
            )
            s.task(ev, "evaluate candidate vs current")
            cmp = compare_models(
                eval_results=ev.outputs["results"],
                score_metric=p.score_metric,
                min_improvement=p.min_improvement,
            )
            s.task(cmp, "compare: promote?", s3=False, size="small")
            with dsl.If(cmp.outputs["Output"] == True, name="promote"):  # noqa: E712
                s.release(**release, results=ev.outputs["results"])


def build_pipeline(kind: str, cluster: bool = False):
    """Pipeline `kind` ("training" | "retraining"); `cluster` adds kfp-kubernetes settings."""
    func = pipeline_function(
        kind, DESCRIPTIONS[kind], lambda p: graph(p, kind=kind, cluster=cluster)
    )
    return dsl.pipeline(name=PIPELINE_NAMES[kind], description=DESCRIPTIONS[kind])(func)


def build_training_pipeline(cluster: bool = False):
    return build_pipeline(TRAINING, cluster)


def build_retraining_pipeline(cluster: bool = False):
    return build_pipeline(RETRAINING, cluster)
