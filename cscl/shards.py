"""Fan-out of feature extraction: split the slide index into shards, extract one shard resumably.

Why here and not in `cscl.wsi.extract`: extraction of one slide is the WSI module's job; this
module owns what a Kubeflow fan-out task needs around it — a deterministic, size-balanced split
(every task of a rerun sees the same slides), download to scratch with checksum verification,
upload to `<prefix>/features/<extractor-hash>/<slide_id>.h5`, reuse of features already there
(a killed task resumes), and a per-slide report in which a failed slide is listed, never dropped.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    prefetch: bool = True,
    stats: dict | None = None,
) -> ShardReport:
    """Extract features of `rows` (one shard of the slide index) into the object store.

    Per slide: if `<prefix>/features/<hash>/<slide_id>.h5` exists it is reused; otherwise the
    slide is downloaded to `scratch` (size + MD5 verified against the store, and the ETag checked
    against the one ingestion recorded, so a slide replaced since ingestion is caught), extracted
    to a local file, uploaded, and the local copies removed. An error on one slide is logged with
    its reason and recorded; the other slides go on.

    With `prefetch` the next slide that needs work is downloaded by one background thread while
    this one is extracted and uploaded (`SlideFetcher`; its features are asked for first, so a
    reused slide is never downloaded): a 1–3 GB slide takes 5–30 s to download, often more than
    its forward pass on a GPU. Same report either way (a failed download is that
    slide's failure, with the same message); `seconds` is the shard's wall time on the slide, so
    a download hidden behind the previous slide is not in it. `stats` (optional) receives
    `fetch_s` (download + verify, summed) and `fetch_wait_s` (the part the loop waited for).
    """
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    rows = rows.reset_index(drop=True)
    targets = [features_uri(prefix, extractor_hash, sid) for sid in rows["slide_id"]]
    reuse: dict[int, bool] = {}  # row → its features exist (asked once, before any fetch)

    def reused(i: int) -> bool:
        if i not in reuse:
            reuse[i] = storage.exists(targets[i])
        return reuse[i]

    def next_to_fetch(i: int) -> int | None:
        """The first row after `i` that needs its slide (rows in between are reused); none past
        a repeat of this slide id (its scratch folder, and its reuse, depend on this one)."""
        for j in range(i + 1, len(rows)):
            if rows.at[j, "slide_id"] == rows.at[i, "slide_id"]:
                return None
            if not reused(j):
                return j
        return None

    out: list[dict] = []
    with SlideFetcher(scratch, background=prefetch) as fetcher:
        for i, row in rows.iterrows():
            target = targets[i]
            rec = {c: row.get(c, "") for c in ("case_id", "stain", "slide_id", "slide_uri")}
            rec.update(features_uri=target, seconds=0.0, message="")
            t0 = time.perf_counter()
            if reused(i):
                rec["status"] = "reused"
                log(f"[reuse] {row['slide_id']}: {target} exists (extractor {extractor_hash})")
                out.append(rec)
                continue
            fetcher.want(i, row)
            ahead = next_to_fetch(i)  # one slide ahead: this one and the next on scratch disk
            if ahead is not None:
                fetcher.want(ahead, rows.iloc[ahead])
            work = fetcher.work_dir(row)
            try:
                slide_local = fetcher.take(i)  # raises this slide's download error
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
    if stats is not None:
        stats.update(fetcher.stats())
    return ShardReport(pd.DataFrame(out, columns=list(REPORT_COLUMNS)))


class SlideFetcher:
    """Slides of a shard downloaded (and verified) to `scratch/<slide_id>/`, at most one ahead.

    `want(i, row)` queues the download of row `i` for one background thread (when `background`;
    else it runs at `take(i)`); `take(i)` returns its local path or raises its error (the
    message the sequential path reports). The caller wants the slide after the current one
    only once the one before is removed, so scratch holds at most two slides; `close` waits for
    a download still running and removes its folder (a shard stopped by an error leaves no
    slide behind).

    Why a thread is safe here: the S3 client is per thread (`Store.client`, made under a lock;
    boto3 clients are thread-safe anyway), the thread writes only its own slide's folder, and
    its first use of the download path (imports, client) runs before the shard's first forward
    pass because the first slide is waited for. The DataLoader forks its workers while the
    thread may be downloading: a forked child has only the forking thread, and it touches only
    the slide reader, numpy, PIL and torch — never boto3, urllib3, sockets, hashlib or the
    store's locks, the only things the download thread may hold mid-call (malloc, the GIL and
    the import lock are reset across fork by glibc and CPython). The slide being downloaded is
    not opened by anyone until `take` returns it.
    """

    def __init__(self, scratch: Path, *, background: bool = True):
        self.scratch = Path(scratch)
        self.background = background
        self._pool = ThreadPoolExecutor(1, "cscl-slide-fetch") if background else None
        self._pending: dict[int, tuple[pd.Series, Future | None]] = {}
        self._fetch_s = 0.0
        self._wait_s = 0.0
        self._ready_when_taken = 0

    def work_dir(self, row: pd.Series) -> Path:
        return self.scratch / str(row["slide_id"])

    def want(self, i: int, row: pd.Series) -> None:
        if i in self._pending:
            return
        fut = None
        if self._pool is not None:
            fut = self._pool.submit(self._timed_fetch, row, self.work_dir(row))
        self._pending[i] = (row, fut)

    def take(self, i: int) -> Path:
        row, fut = self._pending[i]
        t0 = time.perf_counter()
        try:
            if fut is None:
                return self._timed_fetch(row, self.work_dir(row))
            self._ready_when_taken += fut.done()
            return fut.result()
        finally:
            self._wait_s += time.perf_counter() - t0
            if fut is None or fut.done():  # else (Ctrl-C while waiting) `close` waits for it
                del self._pending[i]

    def _timed_fetch(self, row: pd.Series, work: Path) -> Path:
        t0 = time.perf_counter()
        try:
            return _fetch_slide(row, work)
        finally:
            self._fetch_s += time.perf_counter() - t0

    def stats(self) -> dict:
        """`fetch_s`: download + verify time summed; `fetch_wait_s`: the part the loop waited
        for (the rest was hidden behind other slides); `fetched_ahead`: slides ready when taken."""
        return {
            "fetch_s": round(self._fetch_s, 3),
            "fetch_wait_s": round(self._wait_s, 3),
            "fetch_hidden_s": round(max(self._fetch_s - self._wait_s, 0.0), 3),
            "fetched_ahead": self._ready_when_taken,
        }

    def close(self) -> None:
        """Wait for a download still running, then remove the folders of slides not taken."""
        for row, fut in list(self._pending.values()):
            if fut is not None:
                with contextlib.suppress(Exception):  # its error belongs to a slide not reached
                    fut.result()
            shutil.rmtree(self.work_dir(row), ignore_errors=True)
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> SlideFetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    stats: dict | None = None,
) -> tuple[str, ShardReport]:
    """`extract_shard` with cscl's extractor (`cscl.wsi.extract`): (extractor_hash, report).

    `cfg` is a `cscl.wsi.extract.ExtractConfig`. The backbone is loaded once per shard;
    `cfg.prefetch` (overlap the next slide's preparation with this one) downloads the next slide
    while this one is extracted. (The WSI modules are imported here so the other steps that use
    this module never load torch.)
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

    return ehash, extract_shard(
        rows, one, ehash, prefix, scratch, log=log, prefetch=cfg.prefetch, stats=stats
    )


def extract_to_store(
    index: pd.DataFrame,
    cfg,
    prefix: str,
    scratch: str | Path | None = None,
    *,
    shard: int = 0,
    num_shards: int = 1,
    log: Callable[[str], None] = print,
    stats: dict | None = None,
) -> tuple[str, ShardReport]:
    """Extract shard `shard` of `num_shards` of a slide index (`cscl.ingest`) into the project
    store, `<prefix>/features/<extractor-hash>/<slide_id>.h5`, reusing files already there.

    The one entry point of store extraction: the extract_features component (one shard per
    task) and `cscl extract --store PREFIX` (the whole index) both call it. Returns
    (extractor_hash, per-slide report); failed slides are in the report, not raised.
    """
    rows = select_shard(index, int(shard), int(num_shards))
    scratch = scratch or tempfile.mkdtemp(prefix="cscl-extract-")
    return extract_shard_features(rows, cfg, prefix, scratch, log=log, stats=stats)


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
