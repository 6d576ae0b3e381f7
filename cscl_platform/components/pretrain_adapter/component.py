"""pretrain_adapter: CSCL stage 1 (patch-wise contrastive adapter) → `Model` (run dir)."""

from kfp.dsl import Dataset, Input, Model, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def pretrain_adapter(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    registration: Input[Dataset],
    adapter: Output[Model],
    epochs: int = 120,
    batch_size: int = 8,
    pairs_per_case: int = 256,
    lr: float = 1e-4,
    pairing: str = "location",
    seed: int = 0,
    s3_endpoint: str = "",
) -> None:
    """Fetch the cohort's feature files and train the adapter (cscl.train.stage1)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from cscl.data import load_cohort
    from cscl.ingest import read_index
    from cscl.registration import load_registrations
    from cscl.shards import training_inputs
    from cscl.train.stage1 import AdapterConfig, train_adapter

    feats, manifest = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        tempfile.mkdtemp(prefix="cscl-features-"),
        s3_endpoint or None,
    )
    cohort = load_cohort(feats, manifest)
    regs = load_registrations(str(Path(registration.path) / "registration.csv"))
    cfg = AdapterConfig(
        epochs=epochs,
        batch_size=batch_size,
        pairs_per_case=pairs_per_case,
        lr=lr,
        pairing=pairing,
        warmup_epochs=min(5, max(epochs - 1, 0)),
        seed=seed,
        quiet=True,
    )
    info = {"features": features.uri, "extractor_hash": features.metadata.get("extractor_hash")}
    train_adapter(cohort, adapter.path, cfg, regs, info)
    adapter.metadata.update(stage="adapter", epochs=epochs, n_cases=len(cohort.cases))
    print(f"adapter trained on {len(cohort.cases)} cases → {adapter.path}")
