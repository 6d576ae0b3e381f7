"""register: H&E → IHC rigid registration per case (location pairing for pretraining)."""

from kfp.dsl import Dataset, Input, Metrics, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def register(
    slide_index: Input[Dataset],
    registration: Output[Dataset],
    metrics: Output[Metrics],
    transforms_uri: str = "",
    affine: bool = False,
    s3_endpoint: str = "",
) -> int:
    """Register every IHC slide to its case's H&E; `registration` is a folder holding
    registration.csv (+ overlays/). Returns the number of usable pairs."""
    from cscl.io import storage
    from cscl.registration.batch import RegisterParams, register_manifest

    storage.configure_store(s3_endpoint or None)
    df = register_manifest(
        slide_index.path,
        registration.path,
        transforms_uri or None,
        params=RegisterParams(affine=affine),
        progress=False,
    )
    ok = df[df["ok"].astype(bool)] if len(df) else df
    metrics.log_metric("pairs", float(len(df)))
    metrics.log_metric("pairs_ok", float(len(ok)))
    if len(df):
        metrics.log_metric("score_mean", float(df["score"].astype(float).mean()))
        err = df["error_um"].astype(float)
        if err.notna().any():
            metrics.log_metric("error_um_mean", float(err.mean()))
    for r in df[~df["ok"].astype(bool)].itertuples() if len(df) else []:
        print(f"pair not usable: {r.case_id} {r.stain}: {r.message}")
    print(f"{len(ok)}/{len(df)} pairs registered")
    registration.metadata["pairs_ok"] = len(ok)
    return int(len(ok))
