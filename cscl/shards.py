"""Fan-out of feature extraction: split the slide index into shards, extract one shard resumably.

Why here and not in `cscl.wsi.extract`: extraction of one slide is the WSI module's job; this
module owns what a Kubeflow fan-out task needs around it — a deterministic, size-balanced split
(every task of a rerun sees the same slides), download to scratch with checksum verification,
upload to `<prefix>/features/<extractor-hash>/<slide_id>.h5`, reuse of features already there
(a killed task resumes), and a per-slide report in which a failed slide is listed, never dropped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cscl.errors import CsclError, InputError, SlideError
from cscl.io import storage

REPORT_COLUMNS = (
    "case_id",
    "stain",
    "slide_id",
    "slide_uri",
    "features_uri",
    "status",  # extracted | reused | failed
    "seconds",
    "message",
)


def assign_shards(index: pd.DataFrame, n_shards: int) -> pd.Series:
    """Shard number per row: largest slides first onto the lightest shard (greedy balance).

    Deterministic for a given index (ties broken by slide_id), so a rerun splits identically.
    """
    if n_shards < 1:
        raise InputError(f"number of shards must be ≥ 1, got {n_shards}")
    n = min(int(n_shards), max(len(index), 1))
    sizes = index["size"] if "size" in index.columns else pd.Series(1, index=index.index)
    order = sorted(index.index, key=lambda i: (-int(sizes[i]), str(index.at[i, "slide_id"])))
    load = [0] * n
    shard = pd.Series(0, index=index.index, dtype=int)
    for i in order:
        k = min(range(n), key=lambda j: (load[j], j))
        shard[i] = k
        load[k] += int(sizes[i]) or 1
    return shard


def shard_ids(index: pd.DataFrame, n_shards: int) -> list[int]:
    """The shard numbers that actually hold slides (what `dsl.ParallelFor` iterates over)."""
    if len(index) == 0:
        return []
    return sorted(int(s) for s in assign_shards(index, n_shards).unique())


def select_shard(index: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """Rows of one shard, in slide_id order."""
    sel = index[assign_shards(index, n_shards) == int(shard)]
    return sel.sort_values("slide_id").reset_index(drop=True)


def features_prefix(prefix: str, extractor_hash: str) -> str:
    """`<prefix>/features/<extractor-hash>` (docs/CONTRACTS.md object-store layout)."""
    return f"{str(prefix).rstrip('/')}/features/{extractor_hash}"


def features_uri(prefix: str, extractor_hash: str, slide_id: str) -> str:
    return f"{features_prefix(prefix, extractor_hash)}/{slide_id}.h5"


# extract_one(local_slide_path, row, out_h5_path) -> None; raises on failure.
ExtractOne = Callable[[Path, "pd.Series", Path], None]


@dataclass
class ShardReport:
    """Per-slide outcome of one shard. `failed` lists slide ids that need attention."""

    table: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        return self.table.loc[self.table["status"] == "failed", "slide_id"].tolist()

    def counts(self) -> dict[str, int]:
        c = self.table["status"].value_counts()
        return {s: int(c.get(s, 0)) for s in ("extracted", "reused", "failed")}


def extract_shard(
    rows: pd.DataFrame,
    extract_one: ExtractOne,
    extractor_hash: str,
    prefix: str,
    scratch: str | Path,
    *,
    log: Callable[[str], None] = print,
) -> ShardReport:
    """Extract features of `rows` (one shard of the slide index) into the object store.

    Per slide: if `<prefix>/features/<hash>/<slide_id>.h5` exists it is reused; otherwise the
    slide is downloaded to `scratch` (size + MD5 verified against the store, and the ETag checked
    against the one ingestion recorded, so a slide replaced since ingestion is caught), extracted
    to a local file, uploaded, and the local copies removed. An error on one slide is logged with
    its reason and recorded; the other slides go on.
    """
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    out: list[dict] = []
    for _, row in rows.iterrows():
        target = features_uri(prefix, extractor_hash, row["slide_id"])
        rec = {c: row.get(c, "") for c in ("case_id", "stain", "slide_id", "slide_uri")}
        rec.update(features_uri=target, seconds=0.0, message="")
        t0 = time.perf_counter()
        if storage.exists(target):
            rec["status"] = "reused"
            log(f"[reuse] {row['slide_id']}: {target} exists (extractor {extractor_hash})")
            out.append(rec)
            continue
        work = scratch / str(row["slide_id"])
        try:
            slide_local = _fetch_slide(row, work)
            h5 = work / f"{row['slide_id']}.h5"
            extract_one(slide_local, row, h5)
            if not h5.exists():
                raise CsclError(f"extraction of {row['slide_id']} produced no file {h5}")
            storage.upload(h5, target)
            rec["status"] = "extracted"
            log(f"[done]  {row['slide_id']} → {target}")
        except Exception as exc:  # one bad slide must not lose the shard's other slides
            rec["status"] = "failed"
            rec["message"] = f"{type(exc).__name__}: {exc}"
            log(f"[FAIL]  {row['slide_id']} ({row['slide_uri']}): {rec['message']}")
            if not isinstance(exc, CsclError):
                log(traceback.format_exc())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        out.append(rec)
    return ShardReport(pd.DataFrame(out, columns=list(REPORT_COLUMNS)))


def _fetch_slide(row: pd.Series, work: Path) -> Path:
    """Local path of the slide; S3 slides are downloaded and verified against the ingest ETag."""
    uri = str(row["slide_uri"])
    if not storage.is_s3(uri):
        return storage.local_path(uri)
    expected = str(row.get("etag", "") or "")
    if expected and expected != "nan":
        now = storage.stat(uri).etag
        if now != expected:
            raise CsclError(
                f"{uri} changed since ingestion (ETag {now} != {expected})",
                hint="rerun the pipeline from ingestion",
            )
    return storage.download(uri, work / uri.rsplit("/", 1)[-1], verify=True)


def merge_reports(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate shard reports (CSV) into one feature index, sorted by slide_id."""
    frames = [pd.read_csv(p, dtype={"case_id": str, "slide_id": str}) for p in paths]
    if not frames:
        return pd.DataFrame(columns=list(REPORT_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    df["message"] = df["message"].fillna("")
    return df.sort_values("slide_id").reset_index(drop=True)


def fetch_features(feature_index: pd.DataFrame, dest: str | Path) -> Path:
    """The usable feature files of an index as `dest/<slide_id>.h5` (local training).

    Through the store's download-once cache (`storage.fetch`): training steps rerun without
    refetching, and a feature file replaced in the store is fetched again, never served stale.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ok = feature_index[feature_index["status"].isin(["extracted", "reused"])]
    for r in ok.itertuples(index=False):
        storage.fetch(r.features_uri, dest / f"{r.slide_id}.h5")
    return dest


def extract_shard_features(
    rows: pd.DataFrame,
    cfg,
    prefix: str,
    scratch: str | Path,
    *,
    log: Callable[[str], None] = print,
) -> tuple[str, ShardReport]:
    """`extract_shard` with cscl's extractor (`cscl.wsi.extract`): (extractor_hash, report).

    `cfg` is a `cscl.wsi.extract.ExtractConfig`. The backbone is loaded once per shard. (The
    WSI modules are imported here so the other steps that use this module never load torch.)
    """
    from cscl.wsi.encoders import load_encoder
    from cscl.wsi.extract import extract_slide, extractor_hash, prepare_run

    encoder = load_encoder(cfg.backbone, cfg.weights, cfg.allow_random, cfg.device, seed=cfg.seed)
    prepare_run(cfg, encoder)
    ehash = extractor_hash(cfg, encoder.weights_digest)

    def one(local: Path, row: pd.Series, h5: Path) -> None:
        mpp = row.get("mpp")
        res = extract_slide(
            str(local),
            h5.parent,
            cfg,
            encoder,
            slide_id=str(row["slide_id"]),
            stain=str(row["stain"]),
            mpp=None if mpp is None or pd.isna(mpp) else float(mpp),
        )
        if res.status == "failed":
            raise SlideError(res.error or f"extraction of {row['slide_id']} failed")
        log(f"        {row['slide_id']}: {res.n_patches} patches in {res.seconds:.1f}s")

    return ehash, extract_shard(rows, one, ehash, prefix, scratch, log=log)


def extract_to_store(
    index: pd.DataFrame,
    cfg,
    prefix: str,
    scratch: str | Path | None = None,
    *,
    shard: int = 0,
    num_shards: int = 1,
    log: Callable[[str], None] = print,
) -> tuple[str, ShardReport]:
    """Extract shard `shard` of `num_shards` of a slide index (`cscl.ingest`) into the project
    store, `<prefix>/features/<extractor-hash>/<slide_id>.h5`, reusing files already there.

    The one entry point of store extraction: the extract_features component (one shard per
    task) and `cscl extract --store PREFIX` (the whole index) both call it. Returns
    (extractor_hash, per-slide report); failed slides are in the report, not raised.
    """
    rows = select_shard(index, int(shard), int(num_shards))
    scratch = scratch or tempfile.mkdtemp(prefix="cscl-extract-")
    return extract_shard_features(rows, cfg, prefix, scratch, log=log)


def stored_features(
    slide_index: pd.DataFrame, feature_index: pd.DataFrame
) -> tuple[str, pd.DataFrame]:
    """(features folder in the store, manifest of the slides that have features there): the
    `features_dir`/`manifest` pair `cscl.embed.embed_cohort` and `cscl.data.load_cohort` read,
    found without downloading anything. Failed slides (allowed to fail) are left out."""
    ok = feature_index[feature_index["status"].isin(["extracted", "reused"])]
    if ok.empty:
        raise InputError(
            "no slide has features; nothing to embed",
            hint="see the collect-features report for why extraction failed",
        )
    dirs = sorted({str(u).rsplit("/", 1)[0] for u in ok["features_uri"]})
    if len(dirs) != 1:
        raise InputError(
            f"the feature index points at {len(dirs)} folders {dirs[:3]}; one extractor's "
            "folder was expected",
            hint="collect the shards of one extraction run (same extractor hash)",
        )
    usable = set(ok["slide_id"].astype(str))
    manifest = slide_index[slide_index["slide_id"].astype(str).isin(usable)]
    return dirs[0], manifest.reset_index(drop=True)


def training_inputs(
    slide_index: pd.DataFrame,
    feature_index: pd.DataFrame,
    dest: str | Path,
) -> tuple[Path, pd.DataFrame]:
    """(local features dir, manifest of the slides that have features) for the training steps.

    Slides whose extraction failed (and was allowed to) are left out of the manifest, so
    training never trips over a missing file; the collect step has already reported them.
    """
    usable = set(
        feature_index.loc[feature_index["status"].isin(["extracted", "reused"]), "slide_id"]
    )
    manifest = slide_index[slide_index["slide_id"].isin(usable)].reset_index(drop=True)
    if manifest.empty:
        raise InputError("no slide has features; nothing to train on")
    return fetch_features(feature_index, dest), manifest
