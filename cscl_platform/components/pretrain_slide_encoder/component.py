"""pretrain_slide_encoder: stage 2 (any registered slide objective) → `Model` (run dir)."""

from kfp.dsl import HTML, Dataset, Input, Model, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def pretrain_slide_encoder(
    slide_index: Input[Dataset],
    features: Input[Dataset],
    registration: Input[Dataset],
    adapter: Input[Model],
    model: Output[Model],
    training_curve: Output[HTML],
    objective: str = "cscl",
    epochs: int = 120,
    batch_size: int = 24,
    n_tokens: int = 2048,
    lr: float = 1e-4,
    pairing: str = "location",
    small: bool = False,
    labels_uri: str = "",
    label_task: str = "",
    seed: int = 0,
    s3_endpoint: str = "",
) -> None:
    """Train the slide encoder with `objective` (`cscl.train.pretrain`; any name in
    `cscl.train.list_objectives()`). The stage-1 adapter is used by the objectives that expect
    it (cscl); `labels_uri` + `label_task` feed the labelled ones (histostainalign, supervised).
    `small` = a small ABMIL (CPU/tests)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from cscl.errors import InputError
    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import training_inputs
    from cscl.train import (
        SMALL_ABMIL,
        clamp_schedule,
        list_objectives,
        objective_class,
        objective_config,
        pretrain,
    )
    from cscl.train.checkpoint import read_config
    from cscl.train.fit import curve_html

    storage.configure_store(s3_endpoint or None)
    feats, manifest = training_inputs(
        read_index(slide_index.path),
        pd.read_csv(features.path, dtype={"slide_id": str, "case_id": str}),
        tempfile.mkdtemp(prefix="cscl-features-"),
    )
    spec = objective_class(objective)
    if spec.stage != "slide":
        raise InputError(
            f"objective {objective!r} trains stage {spec.stage!r}, not a slide encoder",
            hint=f"use the pretrain_{spec.stage} component, or one of "
            f"{list_objectives(stage='slide')}",
        )
    cfg = clamp_schedule(
        objective_config(
            objective,
            epochs=epochs,
            batch_size=batch_size,
            n_tokens=n_tokens,
            lr=lr,
            pairing=pairing,
            seed=seed,
            abmil=dict(SMALL_ABMIL) if small else None,
            label_task=label_task or None,
        )  # fmt: skip
    )
    run = pretrain(objective, features=feats, manifest=manifest, out=model.path, config=cfg,
                   registration=str(Path(registration.path) / "registration.csv"),
                   adapter=adapter.path if spec.adapter_use == "expected" else None,
                   labels=labels_uri or None, info={"features": features.uri})  # fmt: skip
    model.metadata.update(stage="slide", objective=objective, epochs=epochs)
    curve = Path(training_curve.path)
    curve.parent.mkdir(parents=True, exist_ok=True)
    curve.write_text(curve_html(run))  # the loss curve, shown in the Kubeflow UI
    n_cases = read_config(run)["data"]["n_cases"]
    print(f"slide encoder ({objective}) trained on {n_cases} cases → {run}")
