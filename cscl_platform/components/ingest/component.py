"""ingest: cohort manifest on S3 → resolved slide index (`Dataset`) + shard plan for fan-out."""

from kfp.dsl import Dataset, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def ingest(
    manifest_uri: str,
    slide_index: Output[Dataset],
    s3_endpoint: str = "",
    num_shards: int = 4,
) -> list[int]:
    """Check every slide object (size, ETag) exists; write the slide index; return shard ids.

    One output only: kfp.local cannot fan out over one field of a multi-output task.
    """
    from cscl.ingest import ingest_cohort, write_index
    from cscl.io import storage
    from cscl.shards import shard_ids

    storage.configure_store(s3_endpoint or None)
    res = ingest_cohort(manifest_uri, progress=False)
    write_index(res.index, slide_index.path)
    slide_index.metadata.update(
        manifest_uri=manifest_uri,
        n_slides=res.n_slides,
        n_cases=res.n_cases,
        total_bytes=res.total_bytes,
    )
    shards = shard_ids(res.index, num_shards)
    print(f"ingested {res.n_slides} slides of {res.n_cases} cases from {manifest_uri}")
    print(f"{res.total_bytes / 1e6:.1f} MB in {len(shards)} shard(s)")
    return shards
