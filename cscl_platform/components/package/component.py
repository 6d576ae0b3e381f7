"""package: trained run → model bundle + TorchServe .mar, uploaded to
`<project_prefix>/models/<model_name>/<version>/` (docs/CONTRACTS.md)."""

from kfp.dsl import Dataset, Input, Markdown, Model, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def package(
    model: Input[Model],
    embeddings: Input[Dataset],
    features: Input[Dataset],
    slide_index: Input[Dataset],
    eval_results: Input[Dataset],
    project_prefix: str,
    bundle: Output[Model],
    model_card: Output[Markdown],
    labels_uri: str = "",
    tasks: str = "er_status,pgr_status,her2_status,ki67_status,subtype,os",
    model_name: str = "cscl",
    model_version: str = "",
    weights: str = "",
    seed: int = 0,
    min_tissue: float = 0.25,
    triage_sensitivity: float = 0.95,
    s3_endpoint: str = "",
) -> str:
    """`package_model` (bundle, heads, reference set, .mar, release upload) + model card;
    returns the release URI `<project_prefix>/models/<model_name>/<version>/`."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.packaging import BundleSpec
    from cscl.shards import training_inputs
    from cscl_platform.components.package.card import model_card as card
    from cscl_platform.serving.package import package_model

    storage.configure_store(s3_endpoint or None)
    work = Path(tempfile.mkdtemp(prefix="cscl-package-"))
    feats, _ = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        work / "features",
    )
    local_weights = None
    if weights:  # the bundle holds a copy of the weights file
        local_weights = storage.download(weights, work / Path(weights).name)
    metrics = json.loads(Path(eval_results.path, "metrics.json").read_text())
    spec = BundleSpec(
        features_dir=feats,
        labels=labels_uri or None,
        embeddings=embeddings.path,
        tasks=tasks,
        name=model_name,
        version=model_version or None,  # None: cscl.packaging.default_version (weights hash)
        backbone_weights=local_weights,
        backbone_seed=seed,
        min_tissue=min_tissue,
        metrics=metrics,
        triage_sensitivity=triage_sensitivity or None,  # 0: no served IHC triage
    )
    done = package_model(
        model.path, work / "out", spec, upload=f"{project_prefix.rstrip('/')}/models/"
    )
    uri = done.release_uri
    shutil.copytree(done.bundle.path, bundle.path, dirs_exist_ok=True)
    Path(model_card.path).write_text(card(bundle.path, metrics, uri))
    storage.upload(Path(model_card.path), f"{uri}model_card.md")
    bundle.metadata.update(model_uri=uri, version=done.version, name=model_name)
    print(f"model {model_name} {done.version} → {uri}")
    return uri
