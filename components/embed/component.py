"""embed: H&E slide embeddings (Parquet `Dataset`) from a trained model or the mean-pool baseline."""

from kfp.dsl import Dataset, Input, Model, Output

from components.common import cscl_component


@cscl_component
def embed(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    model: Input[Model],
    embeddings: Output[Dataset],
    s3_endpoint: str = "",
) -> int:
    """Embed every H&E slide with the trained model (cscl.embed); returns the number of rows."""
    import tempfile

    import pandas as pd

    from cscl.embed import embed_cohort
    from cscl.embeddings import read_embeddings
    from cscl.ingest import read_index
    from cscl.shards import training_inputs

    feats, manifest = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        tempfile.mkdtemp(prefix="cscl-features-"),
        s3_endpoint or None,
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
    import tempfile

    import pandas as pd

    from cscl.embed import embed_cohort
    from cscl.embeddings import read_embeddings
    from cscl.ingest import read_index
    from cscl.shards import training_inputs

    feats, manifest = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        tempfile.mkdtemp(prefix="cscl-features-"),
        s3_endpoint or None,
    )
    embed_cohort(baseline, feats, manifest, embeddings.path, quiet=True)
    meta, X = read_embeddings(embeddings.path)
    embeddings.metadata.update(n_slides=len(meta), dim=int(X.shape[1]), baseline=baseline)
    return len(meta)
