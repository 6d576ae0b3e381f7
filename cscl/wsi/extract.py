"""Whole-slide images → patch feature files (one HDF5 per slide, docs/CONTRACTS.md).

Per slide: open → segment tissue → patch grid (cscl.wsi.prepare; for the next slide in a helper
process while this one computes, cscl.wsi.prefetch) → stream patches through DataLoader workers
into the encoder → write atomically. Memory is bounded by the batches in flight, not the slide size.
A batch run goes on past a bad slide, reports it and writes nothing partial; a rerun reuses
files whose extractor hash matches the configuration.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cscl.errors import InputError, SlideError
from cscl.features import SlideFeatures, feature_path, write_features
from cscl.io import storage
from cscl.io.manifest import load_manifest, slide_id_from_uri
from cscl.progress import progress as progress_log
from cscl.runtime import pick_device
from cscl.wsi.dataset import PatchDataset, patch_loader
from cscl.wsi.encoders import Encoder, encoder_identity, load_encoder
from cscl.wsi.patching import PatchGrid
from cscl.wsi.prefetch import SlideJob, SlidePipeline
from cscl.wsi.prepare import (
    PreparedSlide,
    PrepareOptions,
    SlideResult,
    failure_message,
    plan_patches,
    prepare_slide,
    reusable,
)
from cscl.wsi.prepare import check_patch_count as check_patch_count  # re-exported: moved
from cscl.wsi.prepare import slide_source as slide_source
from cscl.wsi.prepare import tile_check_of as tile_check_of
from cscl.wsi.qc import slide_qc
from cscl.wsi.readers import SlideReader
from cscl.wsi.readers.tile_check import TileCheck
from cscl.wsi.tissue import TissueMask, TissueParams, save_qc_png

SUMMARY_NAME = "extract_summary.json"
PRECISIONS = ("auto", "fp32", "bf16")
# Patches per slide above which a slide fails instead of running for hours: a 20×15 mm section
# at 0.5 µm/px in 224-px patches is ~25,000; 100,000 leaves room for 0.25 µm/px targets.
MAX_PATCHES = 100_000


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 / amx_bf16 in /proc/cpuinfo: bf16 convs and matmuls run natively there
    (resnet18 2.5×, ViT-B 2.8× fp32; docs/PERFORMANCE.md). Elsewhere bf16 is emulated: slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_precision(precision: str, device: torch.device | str) -> str:
    """ "fp32" or "bf16": what `precision` ("auto" | "fp32" | "bf16") means on `device`.

    auto = bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere. The answer enters the
    extractor hash (when not fp32), so features of different precision never mix.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", hint=f"use one of {PRECISIONS}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda" or (dev.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


@dataclass
class ExtractConfig:
    """Everything that decides the features (and so the extractor hash), plus speed knobs."""

    backbone: str = "resnet18"
    weights: str | None = None  # local path or s3:// URI of a state dict
    allow_random: bool = False
    seed: int = 0  # random-init seed
    target_mpp: float = 1.0
    patch_size: int = 224
    min_tissue: float = 0.25
    tissue: TissueParams = field(default_factory=TissueParams)
    feature_dtype: str = "float32"  # CLAM/TRIDENT load it as is; float16 breaks CLAM training
    encoder_spec: dict | None = None  # recorded spec (bundle/feature file); None = the registry
    # speed only (not hashed)
    batch_size: int | None = None  # None: 16 on CPU (resnet18 there peaks at 8–16), 64 on GPU
    num_workers: int | None = None  # None: one per CPU
    device: str | None = None  # None: cuda if available else cpu
    torch_threads: int | None = None  # None: one per CPU
    reader: str = "auto"  # slide reader backend (cscl.wsi.readers); same pixels, not hashed
    # changes the features: hashed as effective_precision() when that is not fp32, so fp32
    # files written before precision existed keep their hash
    precision: str = "auto"
    # a bound, not hashed: a slide with more patches fails fast (a wrong mpp, a wrong target)
    max_patches: int | None = MAX_PATCHES
    # QC, not hashed: decode the JPEG tiles under the patches and flag corrupt ones (a few % of
    # extraction); a slide with more than `max_corrupt_tiles` fails (None: flagged, not failed)
    tile_check: bool = True
    max_corrupt_tiles: int | None = None
    # speed only, not hashed: prepare the next slide (open, tissue, grid, tile check) in a helper
    # process while this one runs its forward pass (cscl.wsi.prefetch); store extraction
    # (cscl.shards) downloads the next slide meanwhile; same outcomes either way
    prefetch: bool = True

    def hashed(self, weights_digest: str, precision: str = "fp32") -> dict:
        d = {
            "v": 1,
            "backbone": self.backbone,
            "weights": weights_digest,
            "target_mpp": float(self.target_mpp),
            "patch_size": int(self.patch_size),
            "min_tissue": float(self.min_tissue),
            "tissue": self.tissue.as_dict(),
            "dtype": self.feature_dtype,
        }
        if weights_digest.startswith("random"):
            d["seed"] = int(self.seed)
        if precision != "fp32":
            d["precision"] = precision
        spec = encoder_identity(self.backbone, self.encoder_spec)
        if spec is not None:  # architecture, pooling, normalisation (encoders with a spec)
            d["encoder_spec"] = spec
        return d


def extractor_hash(
    cfg: ExtractConfig, weights_digest: str, device: torch.device | str | None = None
) -> str:
    """Short sha256 of what decides the features: backbone, weights, mpp, patch, tissue params,
    and the precision they are computed in on `device` (None: the device `cfg` would pick)."""
    dev = pick_device(cfg.device) if device is None else device
    precision = effective_precision(cfg.precision, dev)
    blob = json.dumps(cfg.hashed(weights_digest, precision), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class ExtractSummary:
    out_dir: str
    extractor_hash: str
    results: list[SlideResult]

    def by_status(self, status: str) -> list[SlideResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[SlideResult]:
        return self.by_status("done")

    @property
    def skipped(self) -> list[SlideResult]:
        return self.by_status("skipped")

    @property
    def failed(self) -> list[SlideResult]:
        return self.by_status("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "extractor_hash": self.extractor_hash,
            "n_done": len(self.done),
            "n_skipped": len(self.skipped),
            "n_failed": len(self.failed),
            "n_flagged": sum(1 for r in self.results if r.warning),
            "results": [asdict(r) for r in self.results],
        }


def batch_size_for(cfg: ExtractConfig, device: torch.device) -> int:
    """The batch size to use: the configured one, else what suits the device (CPU caches favour
    small batches: resnet18 on 2 cores runs 21.5 patches/s at 8–16 and 19.1 at 32)."""
    if cfg.batch_size is not None:
        return int(cfg.batch_size)
    return 64 if device.type == "cuda" else 16


def _workers(cfg: ExtractConfig, n_batches: int) -> int:
    n = available_cpus() if cfg.num_workers is None else int(cfg.num_workers)
    return max(0, min(n, n_batches - 1 if n_batches > 1 else 0))


def prepare_run(cfg: ExtractConfig, encoder: Encoder) -> None:
    """Once per run, before the first slide: threads, kernel autotuning and the model's layout.

    CPU: the model's intra-op threads share the cores with the decoding workers. One thread per
    CPU is right only because idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE, set by
    `import cscl` before torch loads): with spinning threads the workers' decoding competes with
    busy-waits and a loaded run is ~2× slower (docs/PERFORMANCE.md).
    CUDA: cuDNN autotunes its convolution kernels (every batch has the same shape but the last).
    bf16 CNNs are converted to channels_last here (0.13 s for resnet18 on 2 cores) rather than
    inside the first slide.
    """
    if encoder.device.type == "cpu":
        torch.set_num_threads(max(1, cfg.torch_threads or available_cpus()))
    elif encoder.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    prepare_encoder(encoder, effective_precision(cfg.precision, encoder.device))


def _is_cnn(model: torch.nn.Module) -> bool:
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1


def prepare_encoder(encoder: Encoder, precision: str) -> None:
    """bf16 CNNs run in channels_last (oneDNN's / cuDNN's fast layout); converted once."""
    if precision == "bf16" and not encoder.channels_last and _is_cnn(encoder.model):
        encoder.model.to(memory_format=torch.channels_last)
        encoder.channels_last = True


def compute_features(
    wsi: SlideReader,
    grid: PatchGrid,
    cfg: ExtractConfig,
    encoder: Encoder,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, dim) float32 features of the grid's patches, in grid order; streams batches."""
    n = len(grid)
    feats = np.empty((n, encoder.dim), np.float32)
    precision = effective_precision(cfg.precision, encoder.device)
    prepare_encoder(encoder, precision)
    ds = PatchDataset(wsi, grid.coords, grid.level, grid.read_size, grid.patch_size)
    bs = batch_size_for(cfg, encoder.device)
    n_batches = -(-n // bs)
    loader = patch_loader(
        ds, bs, _workers(cfg, n_batches), pin_memory=encoder.device.type == "cuda"
    )
    pending = None  # (index, host features, copy-done event) of the batch still in flight
    try:
        for item in loader:
            if item["error"]:
                raise SlideError(item["error"])
            # on CUDA the forward and the copy back are queued asynchronously (pinned batch,
            # non-blocking copies); waiting for the PREVIOUS batch's copy only now keeps this
            # batch's forward queued on the GPU while Python fetches the next one
            out = encoder(item["images"], precision)
            ready = _copy_to_host(out)
            if pending is not None:
                _store(feats, *pending, on_batch)
            pending = (item["index"].numpy(), *ready)
        if pending is not None:
            _store(feats, *pending, on_batch)
    finally:
        del loader
    return feats


def _copy_to_host(out: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """Start the device→host copy of a batch's features without waiting for it.

    CUDA: into pinned memory, with an event recorded behind the copy in the stream, so the wait
    in `_store` covers this batch only. (`out.cpu()` waits for everything queued so far — the
    NEXT batch's forward too — and leaves the GPU idle while Python fetches the batch after.)
    CPU: the features themselves, nothing to wait for.
    """
    if out.device.type != "cuda":
        return out, None
    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host.copy_(out, non_blocking=True)
    done = torch.cuda.Event(blocking=True)  # the host sleeps in the wait: workers need the CPU
    done.record()
    return host, done


def _store(feats: np.ndarray, idx: np.ndarray, host: torch.Tensor, done, on_batch) -> None:
    if done is not None:
        done.synchronize()
    feats[idx] = host.numpy()
    if on_batch:
        on_batch(len(idx))


def _features_of(
    wsi: SlideReader,
    mask: TissueMask,
    grid: PatchGrid,
    tiles: TileCheck,
    cfg: ExtractConfig,
    encoder: Encoder,
    ehash: str,
    slide_id: str,
    stain: str,
    on_grid: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SlideFeatures:
    """The forward pass of a planned slide, with its QC and identity attrs."""
    if on_grid:
        on_grid(len(grid))
    feats = compute_features(wsi, grid, cfg, encoder, on_batch)
    sf = SlideFeatures(
        features=feats,
        coords=grid.coords,
        slide_id=slide_id,
        stain=stain,
        extractor_hash=ehash,
        encoder=encoder.name,
        coord_attrs=grid.coord_attrs(wsi),
        extra={
            "random_init": bool(encoder.random_init),
            "qc": slide_qc(wsi, mask, tiles),
            "precision": effective_precision(cfg.precision, encoder.device),
            **({"encoder_spec": encoder.spec.identity()} if encoder.spec else {}),
        },
    )
    return sf


def features_in_memory(
    wsi: SlideReader,
    cfg: ExtractConfig,
    encoder: Encoder,
    *,
    slide_id: str | None = None,
    stain: str = "HE",
    mask: TissueMask | None = None,
    on_grid: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SlideFeatures:
    """Features of an open slide without writing a file (serving). Same pipeline as extraction.
    `on_grid`/`on_batch` may raise to stop early (a served request's budget)."""
    ehash = extractor_hash(cfg, encoder.weights_digest, encoder.device)
    sid = slide_id or Path(wsi.path).stem
    mask, grid, tiles = plan_patches(wsi, cfg, mask)
    return _features_of(wsi, mask, grid, tiles, cfg, encoder, ehash, sid, stain, on_grid, on_batch)


def _remove_stale_parts(path: Path) -> None:
    """Temp files left by a killed run (atomic_path names them .<name>.*.part); one that cannot
    be removed is left (writing the new file does not need it gone)."""
    for p in glob.glob(str(path.parent / f".{glob.escape(path.name)}.*.part")):
        with contextlib.suppress(OSError):
            Path(p).unlink(missing_ok=True)


def extract_slide(
    slide_uri: str,
    out_dir: str | Path,
    cfg: ExtractConfig,
    encoder: Encoder,
    *,
    slide_id: str | None = None,
    stain: str = "HE",
    mpp: float | None = None,
    qc_png_dir: str | Path | None = None,
    on_grid: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SlideResult:
    """One slide → `<out_dir>/<slide_id>.h5`; a `SlideResult`, never an exception for bad slides.

    The slide is read with `cfg.reader` (a backend name or "auto"); QC records which one.
    """
    t0 = time.perf_counter()
    sid = slide_id or slide_id_from_uri(slide_uri)
    out = feature_path(out_dir, sid)
    ehash = extractor_hash(cfg, encoder.weights_digest, encoder.device)
    reused, source = reusable(slide_uri, out, ehash)
    if reused:
        return SlideResult(sid, slide_uri, "skipped", str(out), seconds=time.perf_counter() - t0)
    _remove_stale_parts(out)
    try:
        prepared = prepare_slide(slide_uri, PrepareOptions.of(cfg), mpp)
    except Exception as exc:  # a bad slide is reported; the batch goes on
        return SlideResult(
            sid,
            slide_uri,
            "failed",
            seconds=time.perf_counter() - t0,
            error=failure_message(exc, slide_uri),
        )
    prepared.seconds = time.perf_counter() - t0
    job = SlideJob(slide_uri, sid, stain, mpp, out)
    return finish_slide(job, prepared, source, cfg, encoder, ehash, qc_png_dir, on_grid, on_batch)


def finish_slide(
    job: SlideJob,
    prepared: PreparedSlide,
    source: str | None,
    cfg: ExtractConfig,
    encoder: Encoder,
    ehash: str,
    qc_png_dir: str | Path | None = None,
    on_grid: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SlideResult:
    """The forward pass and the file of a prepared slide (closed at the end); a `SlideResult`
    whose `seconds` add this to `prepared.seconds`."""
    t0 = time.perf_counter()
    sid, mask, grid = job.slide_id, prepared.mask, prepared.grid

    def spent() -> float:
        return prepared.seconds + time.perf_counter() - t0

    try:
        with prepared.wsi as wsi:
            sf = _features_of(
                wsi,
                mask,
                grid,
                prepared.tiles,
                cfg,
                encoder,
                ehash,
                sid,
                job.stain,
                on_grid,
                on_batch,
            )
            if qc_png_dir:
                save_qc_png(
                    wsi, mask, Path(qc_png_dir) / f"{sid}.png", grid.coords, grid.patch_size_level0
                )
        if source is not None:
            sf.extra["source"] = source
        write_features(job.out, sf, dtype=cfg.feature_dtype)
    except Exception as exc:  # an unexpected failure of one slide must not stop the batch
        error = failure_message(exc, job.slide_uri)
        return SlideResult(sid, job.slide_uri, "failed", seconds=spent(), error=error)
    qc = sf.extra["qc"]
    n_corrupt = int(qc.get("corrupt_tiles", 0))
    warning = None
    if n_corrupt:
        first = qc["corrupt_tile_examples"]
        where = ", ".join(f"({c['x']},{c['y']})" for c in first)
        warning = (
            f"{n_corrupt} of {qc['tiles_checked']} JPEG tiles under its patches are corrupt "
            f"(level-0 px {where}{', …' if n_corrupt > len(first) else ''}; libjpeg: "
            f"{first[0]['message']}); extracted and flagged in its QC"
        )
    return SlideResult(
        sid,
        job.slide_uri,
        "done",
        str(job.out),
        len(grid),
        seconds=spent(),
        corrupt_tiles=n_corrupt,
        warning=warning,
    )


def extract_slides(
    slides: pd.DataFrame,
    out_dir: str | Path,
    cfg: ExtractConfig,
    *,
    encoder: Encoder | None = None,
    qc_png_dir: str | Path | None = None,
    show_progress: bool = True,
    stats: dict | None = None,
    helper: str = "auto",
) -> ExtractSummary:
    """Extract every row (slide_uri, slide_id, stain, mpp) of a validated manifest table.

    With `cfg.prefetch` the next slide is prepared (opened, segmented, gridded, tile-checked) in
    a helper process while this one runs its forward pass (`cscl.wsi.prefetch`); the outcomes
    are the same without. The helper starts only when the preparation still ahead is worth its
    start-up (~4 CPU-s), and is never waited for; `helper="eager"` starts it as soon as a
    second slide needs work (benchmarks), `"wait"` also waits for it to be up (tests: every
    slide after the first goes to it). `stats` (optional) receives the prefetch counters.
    """
    out_dir = storage.local_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = encoder or load_encoder(
        cfg.backbone,
        cfg.weights,
        cfg.allow_random,
        cfg.device,
        seed=cfg.seed,
        spec=cfg.encoder_spec,
    )
    prepare_run(cfg, encoder)
    ehash = extractor_hash(cfg, encoder.weights_digest, encoder.device)
    jobs = []
    for row in slides.itertuples(index=False):
        mpp = getattr(row, "mpp", None)
        mpp = None if mpp is None or pd.isna(mpp) else float(mpp)
        sid = str(row.slide_id)
        jobs.append(
            SlideJob(str(row.slide_uri), sid, str(row.stain), mpp, feature_path(out_dir, sid))
        )
    pipeline = SlidePipeline(
        jobs,
        PrepareOptions.of(cfg),
        ehash,
        prefetch=cfg.prefetch and len(jobs) > 1,
        helper=helper,
    )
    results: list[SlideResult] = []
    progress = progress_log(quiet=not show_progress)  # a bar, or log lines off a terminal
    with progress, contextlib.closing(pipeline):  # the helper stops with the run, even on errors
        slides_task = progress.add_task("slides", total=len(jobs))
        patch_task = progress.add_task("patches", total=None, log_every=None)  # every 30 s

        def on_batch(k: int) -> None:
            progress.advance(patch_task, k)
            pipeline.poke()  # the helper takes the next slide as soon as it is up

        for step in pipeline:
            if step.result is None or step.result.status == "failed":
                _remove_stale_parts(step.job.out)
            if step.prepared is None:
                results.append(step.result)
            else:
                progress.update(
                    patch_task, description=f"patches {step.job.slide_id}", completed=0, total=None
                )
                results.append(
                    finish_slide(
                        step.job,
                        step.prepared,
                        step.source,
                        cfg,
                        encoder,
                        ehash,
                        qc_png_dir,
                        on_grid=lambda n: progress.update(patch_task, total=n, completed=0),
                        on_batch=on_batch,
                    )
                )
            progress.advance(slides_task)
    if stats is not None:
        stats.update(pipeline.stats())
    summary = ExtractSummary(str(out_dir), ehash, results)
    storage.write_bytes(
        str(out_dir / SUMMARY_NAME), json.dumps(summary.to_dict(), indent=2).encode()
    )
    return summary


def extract_manifest(
    manifest_uri: str,
    out_dir: str | Path,
    cfg: ExtractConfig,
    *,
    encoder: Encoder | None = None,
    qc_png_dir: str | Path | None = None,
    show_progress: bool = True,
) -> ExtractSummary:
    """Every slide of a manifest → feature files + `<out_dir>/extract_summary.json`."""
    slides = load_manifest(manifest_uri)
    return extract_slides(
        slides,
        out_dir,
        cfg,
        encoder=encoder,
        qc_png_dir=qc_png_dir,
        show_progress=show_progress,
    )
