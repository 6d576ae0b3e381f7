"""pretrain_slide_encoder: CSCL stage 2 (cross-stain slide encoder, MIL) → `Model` (run dir)."""

from kfp.dsl import Dataset, Input, Model, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def pretrain_slide_encoder(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    registration: Input[Dataset],
    adapter: Input[Model],
    model: Output[Model],
    objective: str = "cscl",
    epochs: int = 120,
    batch_size: int = 24,
    n_tokens: int = 2048,
    lr: float = 1e-4,
    pairing: str = "location",
    small: bool = False,
    seed: int = 0,
    s3_endpoint: str = "",
) -> None:
    """Train the slide encoder on the stage-1 adapter (cscl.train.stage2). `small` = a small
    ABMIL (CPU/tests)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from cscl.commands.pretrain import SMALL_ABMIL
    from cscl.data import load_cohort
    from cscl.ingest import read_index
    from cscl.registration import load_registrations
    from cscl.shards import training_inputs
    from cscl.train.stage2 import SlideConfig, objective_defaults, train_slide_encoder

    feats, manifest = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        tempfile.mkdtemp(prefix="cscl-features-"),
        s3_endpoint or None,
    )
    cohort = load_cohort(feats, manifest)
    regs = load_registrations(str(Path(registration.path) / "registration.csv"))
    cfg = SlideConfig(objective=objective, seed=seed, quiet=True)
    for k, v in objective_defaults(objective).items():
        setattr(cfg, k, v)
    cfg.epochs, cfg.batch_size, cfg.n_tokens, cfg.lr = epochs, batch_size, n_tokens, lr
    cfg.pairing = pairing
    cfg.warmup_epochs = min(cfg.warmup_epochs, max(epochs - 1, 0))
    cfg.rankme_after = min(cfg.rankme_after, max(epochs - 1, 0))
    if small:
        cfg.abmil = dict(SMALL_ABMIL)
    info = {"features": features.uri, "extractor_hash": features.metadata.get("extractor_hash")}
    use_adapter = adapter.path if objective == "cscl" else None
    train_slide_encoder(cohort, model.path, cfg, use_adapter, regs, info)
    model.metadata.update(stage="slide", objective=objective, epochs=epochs)
    print(f"slide encoder ({objective}) trained on {len(cohort.cases)} cases → {model.path}")
