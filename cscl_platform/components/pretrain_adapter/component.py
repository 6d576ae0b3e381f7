"""pretrain_adapter: CSCL stage 1 (patch-wise contrastive adapter) → `Model` (run dir)."""

from kfp.dsl import HTML, Dataset, Input, Model, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def pretrain_adapter(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    registration: Input[Dataset],
    adapter: Output[Model],
    training_curve: Output[HTML],
    epochs: int = 120,
    batch_size: int = 8,
    pairs_per_case: int = 256,
    lr: float = 1e-4,
    pairing: str = "location",
    seed: int = 0,
    s3_endpoint: str = "",
) -> None:
    """Fetch the cohort's feature files and train the stage-1 adapter (`cscl.train.pretrain`
    with the "adapter" objective)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import training_inputs
    from cscl.train import clamp_schedule, objective_config, pretrain
    from cscl.train.checkpoint import read_config
    from cscl.train.fit import curve_html

    storage.configure_store(s3_endpoint or None)
    feats, manifest = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        tempfile.mkdtemp(prefix="cscl-features-"),
    )
    cfg = clamp_schedule(
        objective_config("adapter", epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         pairs_per_case=pairs_per_case, pairing=pairing)
    )  # fmt: skip
    run = pretrain("adapter", features=feats, manifest=manifest, out=adapter.path, config=cfg,
                   registration=str(Path(registration.path) / "registration.csv"),
                   info={"features": features.uri})  # fmt: skip
    curve = Path(training_curve.path)
    curve.parent.mkdir(parents=True, exist_ok=True)
    curve.write_text(curve_html(run))  # the loss curve, shown in the Kubeflow UI
    n_cases = read_config(run)["data"]["n_cases"]
    adapter.metadata.update(stage="adapter", epochs=epochs, n_cases=n_cases)
    print(f"adapter trained on {n_cases} cases → {run}")
