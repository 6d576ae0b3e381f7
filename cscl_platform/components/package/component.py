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
    s3_endpoint: str = "",
) -> str:
    """Run `cscl package` (bundle, heads, reference set, .mar, upload); return the model URI."""
    import datetime as dt
    import json
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from cscl import __version__
    from cscl.cli import main as cscl_main
    from cscl.eval.metrics import flat_metrics
    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import training_inputs
    from cscl_platform.components.package.card import model_card as card

    ep = s3_endpoint or None
    work = Path(tempfile.mkdtemp(prefix="cscl-package-"))
    feats, _ = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        work / "features",
        ep,
    )
    version = model_version or f"{__version__}-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    prefix = f"{project_prefix.rstrip('/')}/models/"
    args = ["package", "--model", model.path, "--out", str(work / "out"),
            "--features", str(feats), "--embeddings", embeddings.path,
            "--metrics", f"{eval_results.path}/metrics.json", "--tasks", tasks,
            "--name", model_name, "--version", version, "--backbone-seed", str(seed),
            "--min-tissue", str(min_tissue), "--upload", prefix]  # fmt: skip
    if labels_uri:  # a local copy: the CLI reads labels with the default endpoint
        local_labels = work / Path(labels_uri).name
        storage.download(labels_uri, local_labels, ep)
        args += ["--labels", str(local_labels)]
    if weights:
        local_w = work / Path(weights).name
        storage.download(weights, local_w, ep)
        args += ["--backbone-weights", str(local_w)]
    if ep:
        args += ["--s3-endpoint", ep]
    rc = cscl_main(args)
    if rc != 0:
        raise RuntimeError(f"cscl package failed (exit {rc}); see the log above")
    shutil.copytree(work / "out" / model_name, bundle.path, dirs_exist_ok=True)
    uri = f"{prefix}{model_name}/{version.replace('+', '_')}/"
    metrics = json.loads(Path(eval_results.path, "metrics.json").read_text())
    Path(model_card.path).write_text(card(bundle.path, flat_metrics(metrics), uri))
    storage.upload(Path(model_card.path), f"{uri}model_card.md", ep)
    bundle.metadata.update(model_uri=uri, version=version, name=model_name)
    print(f"model {model_name} {version} → {uri}")
    return uri
