"""embed: H&E slide embeddings (Parquet `Dataset`) from a trained model, the mean-pool baseline
or a released model. Each calls `cscl.embed.embed_stored`: `cscl.embed.embed_cohort` (what
`cscl embed` runs) on the store's feature folder; slides that cannot be embedded are listed in the
log and in the artifact's metadata (`failed`)."""

from kfp.dsl import Dataset, Input, Model, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def embed(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    model: Input[Model],
    embeddings: Output[Dataset],
    s3_endpoint: str = "",
) -> int:
    """Embed every H&E slide with the trained model; returns the number of rows."""
    from cscl.embed import embed_stored
    from cscl.io import storage

    storage.configure_store(s3_endpoint or None)
    _, info = embed_stored(model.path, slide_index.path, features.path, embeddings.path)
    embeddings.metadata.update(info)
    return info["n_slides"]


@cscl_component
def embed_baseline(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    embeddings: Output[Dataset],
    baseline: str = "mean-pool",
    s3_endpoint: str = "",
) -> int:
    """Embeddings of a training-free baseline (mean-pooled patch features) for evaluation."""
    from cscl.embed import embed_stored
    from cscl.io import storage

    storage.configure_store(s3_endpoint or None)
    _, info = embed_stored(baseline, slide_index.path, features.path, embeddings.path)
    embeddings.metadata.update(info, baseline=baseline)
    return info["n_slides"]


@cscl_component
def embed_released(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    model_uri: str,
    embeddings: Output[Dataset],
    s3_endpoint: str = "",
) -> str:
    """Embeddings of a released model (`<prefix>/models/<name>/<version>/`, its `bundle/`) on
    the same features: the 'current' side of a retraining comparison. Returns its version."""
    import json
    import tempfile
    from pathlib import Path

    from cscl.embed import embed_stored
    from cscl.errors import InputError
    from cscl.io import storage

    storage.configure_store(s3_endpoint or None)
    bundle = Path(tempfile.mkdtemp(prefix="cscl-current-")) / "bundle"
    prefix = f"{model_uri.rstrip('/')}/bundle/"
    files = storage.list_uris(prefix)
    if not files:
        raise InputError(f"no released model under {prefix}", hint="check current_model_uri")
    for uri in files:
        storage.download(uri, bundle / uri[len(prefix) :])
    version = json.loads((bundle / "bundle.json").read_text()).get("version", "")
    _, info = embed_stored(bundle, slide_index.path, features.path, embeddings.path)
    embeddings.metadata.update(info, model_uri=model_uri, version=version)
    print(f"embedded the cohort with released model {version} ({model_uri})")
    return version
