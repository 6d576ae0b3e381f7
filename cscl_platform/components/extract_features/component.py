"""extract_features (one task per shard under dsl.ParallelFor) and collect_features (fan-in)."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def extract_features(
    slide_index: Input[Dataset],
    shard: int,
    num_shards: int,
    project_prefix: str,
    shard_report: Output[Dataset],
    backbone: str = "resnet18",
    weights: str = "",
    allow_random: bool = False,
    target_mpp: float = 1.0,
    patch_size: int = 224,
    min_tissue: float = 0.25,
    seed: int = 0,
    skip_failed_slides: bool = False,
    s3_endpoint: str = "",
) -> str:
    """Extract one shard into `<project_prefix>/features/<extractor-hash>/`; return the hash.

    Features already there are reused (a killed task resumes). A slide that fails is logged
    with its reason; the task fails after finishing the others unless `skip_failed_slides`.
    """
    from cscl.ingest import read_index
    from cscl.io import storage
    from cscl.shards import extract_to_store
    from cscl.wsi.extract import ExtractConfig

    storage.configure_store(s3_endpoint or None)
    cfg = ExtractConfig(
        backbone=backbone,
        weights=weights or None,
        allow_random=allow_random,
        seed=seed,
        target_mpp=target_mpp,
        patch_size=patch_size,
        min_tissue=min_tissue,
    )
    print(f"shard {int(shard)} of {int(num_shards)}")
    ehash, rep = extract_to_store(
        read_index(slide_index.path),
        cfg,
        project_prefix,
        shard=shard,
        num_shards=num_shards,
        log=lambda m: print(m, flush=True),
    )
    rep.table.to_csv(shard_report.path, index=False)
    shard_report.metadata.update(extractor_hash=ehash, **rep.counts())
    print(f"extractor {ehash}: {rep.counts()}")
    if rep.failed and not skip_failed_slides:
        raise RuntimeError(
            f"{len(rep.failed)} slide(s) failed extraction: {rep.failed}; the others are stored "
            "and will be reused on rerun — fix or remove the failed slides, or set "
            "skip_failed_slides=True"
        )
    return ehash


@cscl_component
def collect_features(
    shard_reports: Input[list[Dataset]],
    features: Output[Dataset],
    metrics: Output[Metrics],
) -> NamedTuple("Collected", [("extractor_hash", str), ("n_usable", int)]):
    """Merge the shard reports into one feature index (slide → features URI) for training."""
    from collections import namedtuple

    from cscl.errors import InputError
    from cscl.shards import merge_reports

    df = merge_reports([r.path for r in shard_reports])
    hashes = {r.metadata.get("extractor_hash") for r in shard_reports} - {None}
    if len(hashes) > 1:
        raise InputError(f"shards used different extractors {sorted(hashes)}")
    ehash = next(iter(hashes), "")
    df.to_csv(features.path, index=False)
    counts = df["status"].value_counts().to_dict()
    for status in ("extracted", "reused", "failed"):
        metrics.log_metric(f"slides_{status}", float(counts.get(status, 0)))
    usable = int(counts.get("extracted", 0) + counts.get("reused", 0))
    features.metadata.update(extractor_hash=ehash, n_usable=usable)
    for r in df[df["status"] == "failed"].itertuples():
        print(f"left out (extraction failed): {r.slide_id}: {r.message}")
    print(f"feature index: {usable} usable slide(s), extractor {ehash}")
    return namedtuple("Collected", ["extractor_hash", "n_usable"])(ehash, usable)
