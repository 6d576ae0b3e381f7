"""GPU node: one prepared measurement a session with a GPU runs AS IS (≤ 8 min on one H100/H200).

    python benchmarks/gpu_node.py                        # CUDA, full sizes
    python benchmarks/gpu_node.py --device cpu --quick   # the same code on CPU, tiny sizes (a check)

What it measures, each section under a time budget (`--budget`, skipped sections say so):
  env       torch / CUDA / cuDNN versions, the device, CPUs, optional readers installed
  model     model-only throughput of resnet18, resnet50, ViT-B/16 (and ViT-L/16 when the GPU has
            ≥ 24 GB) at batch 64 and 256: random init, bf16 autocast, channels_last for CNNs, the
            uint8 batch already on the device (what `cscl extract` runs after the host→device copy)
  decode    patches/s and CPU-ms/patch of every installed reader backend through the extraction
            DataLoader (N and N/2 worker processes); cuCIM also as one threaded batch read per
            batch in the main process and, on CUDA, decoding to GPU memory; nvImageCodec decoding
            the slide's raw JPEG tiles on its CPU and GPU backends (pixels compared to libjpeg)
  pipeline  compute_features (decode workers → pinned batch → bf16 forward → deferred copy back)
            on the grid repeated to `--pipeline-n` patches, per backbone, with the recommended
            reader/workers: the steady-state rate, to compare with min(decode, model)
  syncs     CUDA synchronisations per batch inside compute_features (torch sync debug mode):
            only the deferred copy's event wait should remain (0 warnings expected)
  bf16      relative difference of bf16 features on the device vs fp32 on CPU (same patches)
  extract   `cscl extract --device <dev>` end to end on the synthetic slide (subprocess: open,
            tissue, grid, tile check, model, write), per backbone

The slide is a synthetic Aperio SVS (0.5 µm/px, JPEG tiles), generated once under data/bench/.
Prints Markdown tables; the figures go to $OUT/gpu_node.json when $OUT is set (and to --json).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slides import bench_slide  # noqa: E402

sys.path.insert(0, str(ROOT))
importlib.import_module("cscl")  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cscl.runtime import jsonable  # noqa: E402
from cscl.wsi.dataset import PatchDataset, patch_loader  # noqa: E402
from cscl.wsi.encoders import load_encoder  # noqa: E402
from cscl.wsi.extract import (  # noqa: E402
    ExtractConfig,
    available_cpus,
    compute_features,
    effective_precision,
    prepare_encoder,
    prepare_run,
)
from cscl.wsi.patching import patch_grid  # noqa: E402
from cscl.wsi.readers import list_readers, open_slide  # noqa: E402
from cscl.wsi.tissue import segment_tissue  # noqa: E402

CNNS = ("resnet18", "resnet50")
VITS = ("vit_base_patch16_224", "vit_large_patch16_224")
SECTIONS = ("model", "decode", "pipeline", "syncs", "bf16", "extract")


class Budget:
    """Wall-clock budget for the whole run: a section that would start after it is skipped."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def ok(self, what: str) -> bool:
        if time.perf_counter() < self.end:
            return True
        self.skipped.append(what)
        print(f"  (skipped, over budget: {what})", flush=True)
        return False


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)  # joined DataLoader workers, subprocesses
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        cells = [f"{c:.4g}" if isinstance(c, float) else str(c) for c in r]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


# ---- env ------------------------------------------------------------------------------------


def env_section(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "cpus": available_cpus(),
        "loadavg": os.getloadavg(),
        "readers": list_readers(),
        # DataLoader workers hand batches over in shared memory: a container's 64 MB default
        # /dev/shm fails at GPU batch sizes (256 × 224² × 3 B = 38 MB per batch, 4 per worker)
        "dev_shm_gb": round(shutil.disk_usage("/dev/shm").total / 2**30, 2)
        if os.path.isdir("/dev/shm")
        else None,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info |= {"gpu": p.name, "gpu_mem_gb": round(p.total_memory / 2**30, 1),
                 "capability": f"{p.major}.{p.minor}"}  # fmt: skip
    for mod in ("timm", "openslide", "tifffile", "imagecodecs", "cucim", "cupy"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as exc:  # noqa: BLE001 — report, don't fail
            info[mod] = f"absent ({type(exc).__name__})"
    try:
        from nvidia import nvimgcodec

        info["nvimgcodec"] = getattr(nvimgcodec, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        info["nvimgcodec"] = f"absent ({type(exc).__name__})"
    print("\n### environment\n")
    for k, v in info.items():
        print(f"- {k}: {v}")
    return info


# ---- model-only -----------------------------------------------------------------------------


def _model_rates(a, device, name: str, precision: str) -> list[dict]:
    enc = load_encoder(name, allow_random=True, device=device)
    prepare_run(ExtractConfig(device=str(device)), enc)  # as extraction: cuDNN autotune
    prepare_encoder(enc, precision)
    rows = []
    for bs in a.batches:
        x = torch.randint(0, 256, (bs, 3, 224, 224), dtype=torch.uint8, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):  # warm-up: cuDNN autotuning, oneDNN kernel choice
            enc(x, precision)
        _sync(device)
        n, t0, c0 = 0, time.perf_counter(), _cpu_s()
        while n < a.min_model_n or time.perf_counter() - t0 < a.seconds:
            enc(x, precision)
            n += bs
        _sync(device)
        wall = time.perf_counter() - t0
        row = {"model": name, "batch": bs, "precision": precision, "patches": n,
               "patches_s": n / wall, "cpu_ms_patch": 1000 * (_cpu_s() - c0) / n,
               "channels_last": enc.channels_last}  # fmt: skip
        if device.type == "cuda":
            row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows.append(row)
        print(f"  model {name} batch {bs}: {row['patches_s']:.1f} patches/s", flush=True)
    return rows


def model_section(a, device: torch.device, budget: Budget) -> list[dict]:
    names = [*CNNS, VITS[0]]
    mem = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    if mem > 24 * 2**30 or a.vit_large:
        names.append(VITS[1])
    precision = effective_precision("bf16" if device.type == "cuda" else "auto", device)
    out = []
    for name in names:
        if budget.ok(f"model {name}"):
            try:
                out += _model_rates(a, device, name, precision)
            except Exception as exc:  # noqa: BLE001 — e.g. out of memory: report, go on
                out.append({"model": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    table(
        f"model only ({precision}, random init, uint8 batch on {device.type})",
        ["model", "batch", "patches/s", "CPU-ms/patch", "peak GB", "error"],
        [[r["model"], r.get("batch", ""), r.get("patches_s", ""), r.get("cpu_ms_patch", ""),
          r.get("peak_gb", ""), r.get("error", "")] for r in out],
    )  # fmt: skip
    return out


# ---- decode ---------------------------------------------------------------------------------


def slide_grid(slide: Path, cfg: ExtractConfig):
    with open_slide(slide, "openslide") as wsi:
        mask = segment_tissue(wsi, cfg.tissue)
        return patch_grid(wsi, mask, cfg.target_mpp, cfg.patch_size, cfg.min_tissue)


def _loader_rate(slide, backend, grid, n, batch, workers) -> dict:
    with open_slide(slide, backend) as wsi:
        ds = PatchDataset(wsi, grid.coords[:n], grid.level, grid.read_size, grid.patch_size)
        c0, t0 = _cpu_s(), time.perf_counter()
        got = sum(len(b["index"]) for b in patch_loader(ds, batch, workers))
        wall = time.perf_counter() - t0
    return {"patches": got, "patches_s": got / wall, "cpu_ms_patch": 1000 * (_cpu_s() - c0) / got}


def _cucim_batch_rate(slide, grid, n, batch, threads) -> dict:
    """cuCIM's own threaded batch read (one call per batch, main process, no DataLoader)."""
    with open_slide(slide, "cucim") as wsi:
        wsi.threads = threads
        size = (grid.read_size, grid.read_size)
        coords = grid.coords[:n]
        c0, t0 = _cpu_s(), time.perf_counter()
        got = sum(len(wsi.read_regions(coords[s : s + batch], grid.level, size))
                  for s in range(0, len(coords), batch))  # fmt: skip
        wall = time.perf_counter() - t0
    return {"patches": got, "patches_s": got / wall, "cpu_ms_patch": 1000 * (_cpu_s() - c0) / got}


def _cucim_gpu_rate(slide, grid, n, batch, threads) -> dict:
    """cuCIM decoding straight into GPU memory (device="cuda", nvJPEG): not a reader backend
    (a SlideReader returns host arrays, and forked DataLoader workers cannot use CUDA); measured
    to decide whether a main-process GPU-decode pipeline is worth writing."""
    from cucim import CuImage

    img = CuImage(str(slide))
    starts = [[int(x), int(y)] for x, y in grid.coords[:n]]  # level 0 (target 0.5 µm/px)
    size = (grid.read_size, grid.read_size)
    c0, t0 = _cpu_s(), time.perf_counter()
    got = 0
    it = img.read_region(starts, size, grid.level, device="cuda", num_workers=threads,
                         batch_size=batch)  # fmt: skip
    for b in it:  # the iterator reuses its buffer: take a copy, as a pipeline would
        got += torch.as_tensor(b, device="cuda").clone().shape[0]
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"patches": got, "patches_s": got / wall, "cpu_ms_patch": 1000 * (_cpu_s() - c0) / got}


# Adobe APP14 segment, transform 0: the 3 components are R, G, B (no YCbCr→RGB conversion).
# Aperio "JPEG/RGB" tiles carry no marker that says so; libjpeg is told by the TIFF photometric
# tag (as OpenSlide and the tifffile reader do), a stand-alone decoder only by this segment.
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def jpeg_tiles(slide, n: int, adobe: bool = True) -> tuple[list[bytes], list[np.ndarray]]:
    """Up to `n` level-0 JPEG tiles of `slide` as stand-alone JPEG files (the JPEGTables of the
    TIFF spliced in, an Adobe RGB marker added for photometric-RGB tiles), and each tile decoded
    by the tifffile reader's libjpeg path (the reference)."""
    import tifffile

    from cscl.wsi.readers import tifffile_reader as tr

    with tifffile.TiffFile(str(slide)) as tif:
        page = tr.pyramid_pages(tif)[0]
        if int(page.compression) != 7:
            raise ValueError(f"level 0 of {slide} is not JPEG (compression {page.compression})")
        rgb = int(page.photometric) == int(tifffile.PHOTOMETRIC.RGB)
        tables = page.jpegtables or b""
        order = np.argsort(-np.asarray(page.databytecounts))[:n]  # the busiest tiles: tissue
        fh = tif.filehandle
        tiles, ref = [], []
        for i in sorted(int(k) for k in order):
            fh.seek(page.dataoffsets[i])
            data = fh.read(page.databytecounts[i])
            head = b"\xff\xd8" + (ADOBE_RGB if rgb and adobe else b"")
            tiles.append(head + (tables[2:-2] if tables else b"") + data[2:])
            ref.append(tr._decode(page, data, i))
    return tiles, ref


def _nvimgcodec_rate(slide, kind: str, n_tiles: int) -> dict:
    """Decode the slide's level-0 JPEG tiles with nvImageCodec's `kind` backend, in one batch;
    max abs difference to libjpeg with and without the Adobe RGB marker."""
    from nvidia import nvimgcodec

    bk = {"cpu": "CPU_ONLY", "gpu": "GPU_ONLY", "hybrid": "HYBRID_CPU_GPU"}[kind]
    backend = nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, bk))
    # CPU only: no CUDA context at all (without it the Decoder fails on a machine without GPU)
    dev = {"device_id": nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY} if kind == "cpu" else {}
    dec = nvimgcodec.Decoder(backends=[backend], **dev)
    params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.SRGB)
    tiles, ref = jpeg_tiles(slide, n_tiles)
    dec.decode(tiles[:4], params=params)  # warm-up: codec/plugin start
    c0, t0 = _cpu_s(), time.perf_counter()
    imgs = dec.decode(tiles, params=params)
    arrs = [np.asarray(im.cpu()) for im in imgs]
    wall = time.perf_counter() - t0
    bare, bare_ref = jpeg_tiles(slide, 8, adobe=False)
    plain = [np.asarray(im.cpu()) for im in dec.decode(bare, params=params)]
    return {"tiles": len(tiles), "tiles_s": len(tiles) / wall,
            "cpu_ms_tile": 1000 * (_cpu_s() - c0) / len(tiles),
            "maxdiff_vs_libjpeg": _maxdiff(arrs, ref),
            "maxdiff_without_adobe_marker": _maxdiff(plain, bare_ref)}  # fmt: skip


def _maxdiff(arrs, ref) -> int:
    return max(int(np.abs(a[..., :3].astype(np.int16) - r.astype(np.int16)).max())
               for a, r in zip(arrs, ref, strict=True))  # fmt: skip


def _libjpeg_rate(slide, n_tiles: int) -> dict:
    """The baseline of the nvImageCodec rows: the same tiles through the tifffile reader's
    libjpeg-turbo path (imagecodecs), one after the other in this process."""
    import tifffile

    from cscl.wsi.readers import tifffile_reader as tr

    with tifffile.TiffFile(str(slide)) as tif:
        page = tr.pyramid_pages(tif)[0]
        order = sorted(int(k) for k in np.argsort(-np.asarray(page.databytecounts))[:n_tiles])
        raw = []
        for i in order:
            tif.filehandle.seek(page.dataoffsets[i])
            raw.append((i, tif.filehandle.read(page.databytecounts[i])))
        c0, t0 = _cpu_s(), time.perf_counter()
        for i, data in raw:
            tr._decode(page, data, i)
        wall = time.perf_counter() - t0
    return {"tiles": len(raw), "tiles_s": len(raw) / wall,
            "cpu_ms_tile": 1000 * (_cpu_s() - c0) / len(raw)}  # fmt: skip


def decode_section(a, device, slide, grid, budget: Budget) -> list[dict]:
    """Every decode configuration once per round, rounds interleaved; medians per row."""
    n = min(a.decode_n, len(grid))
    plan = []
    workers = sorted({a.workers, max(1, a.workers // 2)}, reverse=True)
    for backend in [b for b in ("openslide", "tifffile", "cucim") if b in list_readers()]:
        for w in workers:
            plan.append((f"{backend}, DataLoader {w} workers", _loader_rate,
                         (slide, backend, grid, n, a.batch, w)))  # fmt: skip
    if "cucim" in list_readers():
        plan.append((f"cucim batch read, {a.workers} threads, main process", _cucim_batch_rate,
                     (slide, grid, n, a.batch, a.workers)))  # fmt: skip
        if device.type == "cuda":
            plan.append((f"cucim device=cuda, {a.workers} threads", _cucim_gpu_rate,
                         (slide, grid, n, a.batch, a.workers)))  # fmt: skip
    try:
        from nvidia import nvimgcodec  # noqa: F401

        plan.append(("libjpeg-turbo (imagecodecs), raw JPEG tiles", _libjpeg_rate,
                     (slide, a.tiles_n)))  # fmt: skip
        for kind in ["cpu", "gpu", "hybrid"] if device.type == "cuda" else ["cpu"]:
            plan.append((f"nvimgcodec {kind} backend, raw JPEG tiles", _nvimgcodec_rate,
                         (slide, kind, a.tiles_n)))  # fmt: skip
    except ImportError:
        pass
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in plan}
    loads = []
    for r in range(a.rounds):
        for label, fn, args in plan:
            if budget.ok(f"decode {label} round {r + 1}"):
                runs[label].append(_try(fn, *args))
        loads.append(os.getloadavg()[0])
    rows = []
    for label, got in runs.items():
        ok = [g for g in got if "error" not in g]
        row = {"how": label, "rounds": len(ok), **(got[-1] if got and not ok else {})}
        for key in ("patches_s", "cpu_ms_patch", "tiles_s", "cpu_ms_tile"):
            if ok and key in ok[0]:
                row[key] = statistics.median(g[key] for g in ok)
        for key in ("maxdiff_vs_libjpeg", "maxdiff_without_adobe_marker"):
            if ok and key in ok[0]:
                row[key] = max(g[key] for g in ok)
        rows.append(row)
    table(
        f"decode ({n} patches of {grid.read_size} px at level {grid.level}; {a.tiles_n} tiles; "
        f"medians of {a.rounds} interleaved rounds; load average per round {loads})",
        ["how", "patches/s", "CPU-ms/patch", "tiles/s", "CPU-ms/tile", "max diff",
         "max diff, no Adobe marker", "error"],
        [[r["how"], r.get("patches_s", ""), r.get("cpu_ms_patch", ""), r.get("tiles_s", ""),
          r.get("cpu_ms_tile", ""), r.get("maxdiff_vs_libjpeg", ""),
          r.get("maxdiff_without_adobe_marker", ""), r.get("error", "")] for r in rows],
    )  # fmt: skip
    return rows


def _try(fn, *args) -> dict:
    """A section's measurement, or its error (a GPU session should see why, not a traceback)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        msg = f"{type(exc).__name__}: {exc}"[:300]
        print(f"  ERROR in {fn.__name__}: {msg}", flush=True)
        return {"error": msg}


# ---- pipeline, syncs, bf16 ------------------------------------------------------------------


def _repeated(grid, n: int):
    from dataclasses import replace

    reps = -(-n // len(grid))
    return replace(grid, coords=np.tile(grid.coords, (reps, 1))[:n])


def _pipeline_once(a, device, slide, grid, name: str) -> dict:
    cfg = ExtractConfig(backbone=name, allow_random=True, target_mpp=a.target_mpp,
                        batch_size=a.pipeline_batch, num_workers=a.workers,
                        device=str(device), reader=a.reader)  # fmt: skip
    enc = load_encoder(name, allow_random=True, device=device)
    prepare_run(cfg, enc)
    big = _repeated(grid, a.pipeline_n)
    with open_slide(slide, a.reader) as wsi:
        small = _repeated(grid, min(len(grid), 2 * cfg.batch_size))
        compute_features(wsi, small, cfg, enc)  # warm-up: autotune, worker start
        _sync(device)
        c0, t0 = _cpu_s(), time.perf_counter()
        feats = compute_features(wsi, big, cfg, enc)
        wall = time.perf_counter() - t0
    print(f"  pipeline {name}: {len(feats) / wall:.1f} patches/s", flush=True)
    return {"reader": a.reader, "workers": a.workers, "batch": cfg.batch_size,
            "patches": len(feats), "patches_s": len(feats) / wall,
            "cpu_ms_patch": 1000 * (_cpu_s() - c0) / len(feats)}  # fmt: skip


def pipeline_section(a, device, slide, grid, budget: Budget) -> list[dict]:
    rows = []
    for name in a.pipeline_models:
        if budget.ok(f"pipeline {name}"):
            rows.append({"model": name, **_try(_pipeline_once, a, device, slide, grid, name)})
    table(
        f"pipeline: compute_features on {device.type}, grid repeated (steady state)",
        ["model", "reader", "workers", "batch", "patches", "patches/s", "CPU-ms/patch", "error"],
        [[r["model"], r.get("reader", ""), r.get("workers", ""), r.get("batch", ""),
          r.get("patches", ""), r.get("patches_s", ""), r.get("cpu_ms_patch", ""),
          r.get("error", "")] for r in rows],
    )  # fmt: skip
    return rows


def sync_section(a, device, slide, grid) -> dict:
    """Count CUDA syncs inside compute_features with torch's sync debug mode ("warn")."""
    if device.type != "cuda":
        print("\n(syncs: CUDA only)")
        return {"skipped": "not CUDA"}
    cfg = ExtractConfig(backbone="resnet18", allow_random=True, target_mpp=a.target_mpp,
                        batch_size=64, num_workers=a.workers, device=str(device),
                        reader=a.reader)  # fmt: skip
    enc = load_encoder("resnet18", allow_random=True, device=device)
    prepare_run(cfg, enc)
    g = _repeated(grid, 640)
    with open_slide(slide, a.reader) as wsi:
        compute_features(wsi, _repeated(grid, 128), cfg, enc)  # warm-up outside the count
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                compute_features(wsi, g, cfg, enc)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    res = {"batches": -(-len(g) // 64), "sync_warnings": len(syncs), "examples": syncs[:3]}
    print(f"\n### syncs\n\n{res['sync_warnings']} sync warnings in {res['batches']} batches "
          f"(expected 0): {res['examples']}")  # fmt: skip
    return res


def bf16_section(device, slide, grid) -> dict:
    """bf16 on `device` vs fp32 on CPU, same 64 real patches: median relative L2 difference."""
    with open_slide(slide, "tifffile") as wsi:
        ds = PatchDataset(wsi, grid.coords[:64], grid.level, grid.read_size, grid.patch_size)
        x = ds[list(range(len(ds)))]["images"]
    res = {}
    for name in ("resnet50", "vit_base_patch16_224"):
        ref = load_encoder(name, allow_random=True, device="cpu")(x, "fp32")
        enc = load_encoder(name, allow_random=True, device=device)
        prepare_encoder(enc, "bf16")
        got = enc(x, "bf16").cpu()
        rel = ((got - ref).norm(dim=1) / ref.norm(dim=1)).median().item()
        res[name] = rel
    print("\n### bf16 vs fp32\n\n" + ", ".join(f"{k}: {v:.4f} relative" for k, v in res.items()))
    return res


# ---- cscl extract end to end ----------------------------------------------------------------


def _extract_once(a, device, slide, name: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "cscl", "extract", "--slide", str(slide), "--out", out,
               "--random-init", "--backbone", name, "--device", device.type,
               "--workers", str(a.workers), "--reader", a.reader,
               "--batch-size", str(a.pipeline_batch), "--target-mpp", str(a.target_mpp),
               "--quiet"]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path[1:]]))
        c0, t0 = _cpu_s(), time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        summ = Path(out) / "extract_summary.json"
        if p.returncode != 0 or not summ.exists():
            return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-300:]}"}
        r = json.loads(summ.read_text())["results"][0]
    if r["status"] != "done":
        return {"error": f"{r['status']}: {r.get('error')}"}
    n = int(r["n_patches"])
    return {"reader": a.reader, "workers": a.workers, "patches": n, "slide_s": r["seconds"],
            "process_s": wall, "patches_s_slide": n / max(r["seconds"], 1e-9),
            "cpu_ms_patch": 1000 * cpu / max(n, 1)}  # fmt: skip


def extract_section(a, device, slide, budget: Budget) -> list[dict]:
    rows = []
    for name in a.pipeline_models:
        if budget.ok(f"extract {name}"):
            rows.append({"model": name, **_try(_extract_once, a, device, slide, name)})
    table(
        f"`cscl extract --device {device.type}` end to end (process includes model load)",
        ["model", "reader", "workers", "patches", "slide s", "process s", "patches/s (slide)",
         "CPU-ms/patch", "error"],
        [[r["model"], r.get("reader", ""), r.get("workers", ""), r.get("patches", ""),
          r.get("slide_s", ""), r.get("process_s", ""), r.get("patches_s_slide", ""),
          r.get("cpu_ms_patch", ""), r.get("error", "")] for r in rows],
    )  # fmt: skip
    return rows


def bound_summary(a, res: dict) -> list[dict]:
    """Pipeline rate against its bound min(model-only at the pipeline's batch, decode with the
    pipeline's reader and workers): ≥ 0.9 means the overlap works. A GPU-node bound: on CPU,
    decode and model share the cores (benchmarks/extract.py's CPU bound applies there)."""
    out = []
    if a.device == "cpu":
        print("\n(bound: on CPU decode and model share the cores; min() over-states it)")
    dec = {r["how"]: r.get("patches_s") for r in res["decode"]}
    decode = dec.get(f"{a.reader}, DataLoader {a.workers} workers")
    for p in res["pipeline"]:
        model = [m.get("patches_s") for m in res["model"]
                 if m["model"] == p["model"] and m.get("batch") == max(a.batches)]  # fmt: skip
        if not (decode and model and model[0] and p.get("patches_s")):
            continue
        bound = min(decode, model[0])
        out.append({"model": p["model"], "decode": decode, "model_only": model[0],
                    "bound": bound, "pipeline": p["patches_s"],
                    "efficiency": p["patches_s"] / bound})  # fmt: skip
        print(f"{p['model']}: bound min(decode {decode:.0f}, model {model[0]:.0f}) = {bound:.0f} "
              f"patches/s; pipeline {p['patches_s']:.0f} = {p['patches_s'] / bound:.2f} × bound")  # fmt: skip
    return out


# ---- main -----------------------------------------------------------------------------------


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) | cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check of the script)")
    p.add_argument("--budget", type=float, default=None, help="seconds (default 420; quick 240)")
    p.add_argument("--workers", type=int, default=None, help="decode workers (default: CPUs)")
    p.add_argument("--reader", default="tifffile", help="pipeline/extract reader (tifffile)")
    p.add_argument("--size", type=int, default=None, help="synthetic slide side px (16000)")
    p.add_argument("--target-mpp", type=float, default=0.5, help="patch µm/px (0.5: level 0)")
    p.add_argument("--vit-large", action="store_true", help="ViT-L/16 even without a big GPU")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--sections", default="all", help="comma list of: " + ", ".join(SECTIONS))
    p.add_argument("--rounds", type=int, default=2, help="interleaved decode rounds (2)")
    p.add_argument("--decode-n", type=int, default=None, help="patches per decode row (4096)")
    a = p.parse_args(argv)
    a.workers = a.workers or available_cpus()
    q = a.quick
    a.budget = a.budget or (240.0 if q else 420.0)
    a.size = a.size or (3000 if q else 16000)
    a.batches = (4,) if q else (64, 256)
    a.seconds = 0.0 if q else 3.0
    a.min_model_n = 8 if q else 512
    a.batch = 16 if q else 64  # decode batch (DataLoader item)
    a.decode_n = a.decode_n or (64 if q else 4096)
    a.tiles_n = 32 if q else 1024
    a.pipeline_models = ("resnet18",) if q else ("resnet50", "vit_base_patch16_224")
    a.pipeline_batch = 8 if q else 256
    a.pipeline_n = 64 if q else 30_000
    return a


def main(argv=None) -> None:
    a = parse(argv)
    device = torch.device(a.device)
    budget = Budget(a.budget)
    t0 = time.perf_counter()
    res: dict = {"args": {k: v for k, v in vars(a).items()}}
    res["env"] = env_section(device)
    on = set(SECTIONS) if a.sections == "all" else {x.strip() for x in a.sections.split(",")}
    if "model" in on:
        res["model"] = model_section(a, device, budget)
    slide = bench_slide(a.size)
    grid = slide_grid(slide, ExtractConfig(target_mpp=a.target_mpp))
    print(f"\nslide {slide} ({a.size}² px): {len(grid)} patches at {a.target_mpp} µm/px")
    res["grid_patches"] = len(grid)
    if "decode" in on:
        res["decode"] = decode_section(a, device, slide, grid, budget)
    if "pipeline" in on:
        res["pipeline"] = pipeline_section(a, device, slide, grid, budget)
    if {"model", "decode", "pipeline"} <= on:
        res["bound"] = bound_summary(a, res)
    if "syncs" in on:
        res["syncs"] = _try(sync_section, a, device, slide, grid)
    if "bf16" in on and budget.ok("bf16"):
        res["bf16"] = _try(bf16_section, device, slide, grid)
    if "extract" in on:
        res["extract"] = extract_section(a, device, slide, budget)
    res["skipped"] = budget.skipped
    res["seconds"] = time.perf_counter() - t0
    res["loadavg_end"] = os.getloadavg()
    print(f"\ntotal {res['seconds']:.0f} s | os.getloadavg() {os.getloadavg()}"
          f"{' | skipped: ' + ', '.join(budget.skipped) if budget.skipped else ''}")  # fmt: skip
    blob = json.dumps(jsonable(res), indent=1)
    targets = [a.json] if a.json else []
    if os.environ.get("OUT"):
        targets.append(str(Path(os.environ["OUT"]) / "gpu_node.json"))
    for t in targets:
        Path(t).parent.mkdir(parents=True, exist_ok=True)
        Path(t).write_text(blob)
        print(f"figures → {t}")


if __name__ == "__main__":
    main()
