"""S3 ingestion: turn a cohort manifest into a resolved slide index before anything heavy runs.

Why: a pipeline that finds a missing slide after an hour of feature extraction wastes the hour.
Ingestion reads the manifest (local or s3://), resolves relative slide URIs, asks the object store
for every slide's size and ETag (transient errors retried with backoff by `cscl.io.storage`) and
writes one table that the rest of the pipeline trusts. Slides are never copied here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cscl.errors import CsclError, StorageError
from cscl.io import storage
from cscl.io.manifest import load_manifest
from cscl.progress import track

INDEX_COLUMNS = ("case_id", "stain", "slide_id", "slide_uri", "mpp", "size", "etag")


@dataclass
class IngestResult:
    """What ingestion found: the index (one row per slide) and the objects it could not see."""

    index: pd.DataFrame
    manifest_uri: str
    missing: list[tuple[str, str]] = field(default_factory=list)  # (slide_uri, reason)

    @property
    def n_slides(self) -> int:
        return len(self.index)

    @property
    def n_cases(self) -> int:
        return int(self.index["case_id"].nunique()) if len(self.index) else 0

    @property
    def total_bytes(self) -> int:
        return int(self.index["size"].sum()) if len(self.index) else 0


def ingest_cohort(
    manifest_uri: str,
    *,
    allow_missing: bool = False,
    progress: bool = True,
) -> IngestResult:
    """Read and validate the manifest, check every slide object exists; return the slide index.

    A missing object is an error naming every missing key (not only the first), unless
    `allow_missing` is set, in which case missing slides are left out of the index and listed in
    `IngestResult.missing` so the caller can report them.
    """
    manifest = load_manifest(manifest_uri)
    rows: list[dict] = []
    missing: list[tuple[str, str]] = []
    iterator = track(manifest.itertuples(index=False), "checking slide objects",
                     total=len(manifest), quiet=not progress)  # fmt: skip
    for r in iterator:
        try:
            info = storage.stat(r.slide_uri)
        except StorageError as err:
            # Endpoint/credential/bucket problems are the same for every slide: stop at once.
            if "not found" not in err.message:
                raise
            missing.append((r.slide_uri, err.message))
            continue
        rows.append(
            {
                "case_id": r.case_id,
                "stain": r.stain,
                "slide_id": r.slide_id,
                "slide_uri": r.slide_uri,
                "mpp": r.mpp,
                "size": info.size,
                "etag": info.etag,
            }
        )
    if missing and not allow_missing:
        listed = "\n  ".join(u for u, _ in missing[:20])
        more = f"\n  … and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise StorageError(
            f"{len(missing)} of {len(manifest)} slide(s) in {manifest_uri} do not exist:\n  "
            f"{listed}{more}",
            hint="upload the missing slides or remove their rows from the manifest",
        )
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    return IngestResult(index=index, manifest_uri=str(manifest_uri), missing=missing)


def write_index(index: pd.DataFrame, path: str | Path) -> Path:
    """Write the slide index as CSV atomically (a KFP `Dataset` artifact is a plain file)."""
    path = Path(path)
    with storage.atomic_path(path) as tmp:
        index.to_csv(tmp, index=False)
    return path


def read_index(path: str | Path) -> pd.DataFrame:
    """Read a slide index written by `write_index`; a clear error when it is not one."""
    try:
        df = pd.read_csv(path, dtype={"case_id": str, "slide_id": str, "etag": str})
    except (OSError, ValueError) as exc:
        raise CsclError(f"cannot read slide index {path}: {exc}") from exc
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise CsclError(
            f"{path} is not a slide index: missing column(s) {missing}",
            hint="produce it with cscl.ingest.ingest_cohort / the ingest component",
        )
    return df


def upload_folder(folder: str | Path, prefix_uri: str) -> list[str]:
    """Upload a cohort folder (manifest, labels, slides/…) under an s3:// prefix as it is.

    Relative slide URIs in the manifest keep working after the upload (they resolve against the
    manifest's location). Creates the bucket when it does not exist; returns the object URIs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CsclError(f"cohort folder {folder} does not exist")
    if storage.is_s3(prefix_uri):
        bucket, _ = storage.parse_s3_uri(prefix_uri)
        storage.ensure_bucket(bucket)
    uris = []
    base = str(prefix_uri).rstrip("/")
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            uri = f"{base}/{p.relative_to(folder).as_posix()}"
            storage.upload(p, uri)
            uris.append(uri)
    return uris
