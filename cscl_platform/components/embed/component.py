"""embed: H&E slide embeddings (Parquet `Dataset`) from a trained model, the mean-pool baseline
or a released model. Each calls `cscl.embed.embed_cohort`, as `cscl embed` does, on the store's
feature folder (`cscl.shards.stored_features`)."""

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
    import pandas as pd

    from cscl.embed import embed_cohort
    from cscl.embeddings import read_embeddings
    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import stored_features

    storage.configure_store(s3_endpoint or None)
    feats, manifest = stored_features(
        read_index(slide_index.path), pd.read_csv(features.path, dtype={"slide_id": str})
    )
    embed_cohort(model.path, feats, manifest, embeddings.path, quiet=True)
    meta, X = read_embeddings(embeddings.path)
    embeddings.metadata.update(n_slides=len(meta), dim=int(X.shape[1]))
    print(f"{len(meta)} H&E slide embeddings of dimension {X.shape[1]}")
    return len(meta)


@cscl_component
def embed_baseline(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    embeddings: Output[Dataset],
    baseline: str = "mean-pool",
    s3_endpoint: str = "",
) -> int:
    """Embeddings of a training-free baseline (mean-pooled patch features) for evaluation."""
    import pandas as pd

    from cscl.embed import embed_cohort
    from cscl.embeddings import read_embeddings
    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import stored_features

    storage.configure_store(s3_endpoint or None)
    feats, manifest = stored_features(
        read_index(slide_index.path), pd.read_csv(features.path, dtype={"slide_id": str})
    )
    embed_cohort(baseline, feats, manifest, embeddings.path, quiet=True)
    meta, X = read_embeddings(embeddings.path)
    embeddings.metadata.update(n_slides=len(meta), dim=int(X.shape[1]), baseline=baseline)
    return len(meta)


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

    import pandas as pd

    from cscl.embed import embed_cohort
    from cscl.errors import InputError
    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import stored_features

    storage.configure_store(s3_endpoint or None)
    bundle = Path(tempfile.mkdtemp(prefix="cscl-current-")) / "bundle"
    prefix = f"{model_uri.rstrip('/')}/bundle/"
    files = storage.list_uris(prefix)
    if not files:
        raise InputError(f"no released model under {prefix}", hint="check current_model_uri")
    for uri in files:
        storage.download(uri, bundle / uri[len(prefix) :])
    version = json.loads((bundle / "bundle.json").read_text()).get("version", "")
    feats, manifest = stored_features(
        read_index(slide_index.path), pd.read_csv(features.path, dtype={"slide_id": str})
    )
    embed_cohort(bundle, feats, manifest, embeddings.path, quiet=True)
    embeddings.metadata.update(model_uri=model_uri, version=version)
    print(f"embedded the cohort with released model {version} ({model_uri})")
    return version
