"""Patch-feature extraction: every design measured side by side, in interleaved rounds.

Each row is a fresh subprocess (so OpenMP settings, which libgomp reads once when torch loads,
are the row's own), and every round runs every row once, so a change of load on shared cores
hits all rows alike: compare RATIOS within one run, not rates across runs. Each row reports
patches/s (wall) and CPU-ms per patch (user+sys of the process and its DataLoader workers).

Rows (resnet18 and ViT-B/16, random init):
  decode        DataLoader workers read + resize patches, no model (one worker per CPU)
  model …       encoder forward on random uint8 batches: fp32/bf16, all threads / one thread
  naive         one process: read_region per patch, stack, forward (fp32, torch defaults)
  trident-like  per-patch PIL reads (OpenSlide RGBA → RGB), per-patch float tensors + normalise,
                default float collate, batch 64, one DataLoader worker, fp32, torch defaults
                (written from that description; no TRIDENT code)
  cscl old      extract_slide as before issue 14: spinning OpenMP threads, fp32
  cscl extract  extract_slide with today's defaults (all steps: open, tissue, grid, model, write)
  cscl 1t1w     the same with one torch thread and one worker (the threading alternative)

bound = 1/(1/decode + 1/best model-only) on CPU (decode and model share the cores), using the
best model-only configuration. Rates are medians over rounds.

    .venv/bin/python benchmarks/extract.py --quick     # 6k² slide, 2 rounds
    .venv/bin/python benchmarks/extract.py             # 10k² slide, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slides import bench_slide  # noqa: E402

VIT = "vit_base_patch16_224"


# ---- child side: one row, one measurement, one JSON line ------------------------------------


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)  # joined DataLoader workers
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _grid(slide: str, cfg):
    from cscl.wsi.patching import patch_grid
    from cscl.wsi.readers import open_slide
    from cscl.wsi.tissue import segment_tissue

    wsi = open_slide(slide)
    mask = segment_tissue(wsi, cfg.tissue)
    return wsi, patch_grid(wsi, mask, cfg.target_mpp, cfg.patch_size, cfg.min_tissue)


def _timed(fn) -> dict:
    c0, t0 = _cpu_s(), time.perf_counter()
    n = fn()
    return {"n": n, "wall": time.perf_counter() - t0, "cpu": _cpu_s() - c0}


def row_decode(a):
    from cscl.wsi.dataset import PatchDataset, patch_loader
    from cscl.wsi.extract import ExtractConfig, available_cpus

    cfg = ExtractConfig(patch_size=a.patch_size, target_mpp=a.target_mpp)
    wsi, grid = _grid(a.slide, cfg)
    ds = PatchDataset(wsi, grid.coords[: a.n], grid.level, grid.read_size, grid.patch_size)
    return _timed(lambda: sum(len(b["index"]) for b in patch_loader(ds, 16, available_cpus())))


def row_model(a):
    import torch

    from cscl.wsi.encoders import load_encoder
    from cscl.wsi.extract import prepare_encoder

    torch.set_num_threads(a.threads or os.cpu_count())
    enc = load_encoder(a.backbone, allow_random=True, device="cpu")
    prepare_encoder(enc, a.precision)
    x = torch.randint(0, 256, (a.batch, 3, a.patch_size, a.patch_size), dtype=torch.uint8)
    enc(x, a.precision)  # warm-up: oneDNN picks its kernels

    def run():
        done = 0
        while done < a.n:
            enc(x, a.precision)
            done += a.batch
        return done

    return _timed(run)


def row_naive(a):
    import numpy as np
    import torch  # noqa: F401  (loaded before cscl: torch's own OpenMP defaults)
    from PIL import Image

    from cscl.wsi.encoders import load_encoder
    from cscl.wsi.extract import ExtractConfig

    cfg = ExtractConfig(patch_size=a.patch_size, target_mpp=a.target_mpp)
    wsi, grid = _grid(a.slide, cfg)
    enc = load_encoder(a.backbone, allow_random=True, device="cpu")
    coords = grid.coords[: a.n]

    def run():
        for s in range(0, len(coords), a.batch):
            imgs = []
            for x, y in coords[s : s + a.batch]:
                rgb = wsi.read_region((x, y), grid.level, (grid.read_size, grid.read_size))
                if grid.read_size != grid.patch_size:
                    rgb = np.asarray(Image.fromarray(rgb).resize((grid.patch_size,) * 2))
                imgs.append(rgb)
            enc(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2), "fp32")
        return len(coords)

    return _timed(run)


class _PilPatches:
    """TRIDENT-like dataset: one OpenSlide read per patch → PIL → float tensor, normalised."""

    def __init__(self, path, coords, level, read_size, patch_size, mean, std):
        self.path, self.coords, self.level = path, coords, level
        self.read_size, self.patch_size, self.mean, self.std = read_size, patch_size, mean, std
        self.slide = None

    def __len__(self):
        return len(self.coords)

    def __getitem__(self, i):
        import numpy as np
        import openslide
        import torch

        if self.slide is None:
            self.slide = openslide.OpenSlide(self.path)
        x, y = (int(v) for v in self.coords[i])
        img = self.slide.read_region((x, y), self.level, (self.read_size,) * 2).convert("RGB")
        if self.read_size != self.patch_size:
            img = img.resize((self.patch_size,) * 2)
        t = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
        return (t - self.mean) / self.std


def row_trident(a):
    import torch
    from torch.utils.data import DataLoader

    from cscl.wsi.encoders import load_encoder
    from cscl.wsi.extract import ExtractConfig

    cfg = ExtractConfig(patch_size=a.patch_size, target_mpp=a.target_mpp)
    wsi, grid = _grid(a.slide, cfg)
    enc = load_encoder(a.backbone, allow_random=True, device="cpu")
    mean = torch.tensor(enc.mean).view(3, 1, 1)
    std = torch.tensor(enc.std).view(3, 1, 1)
    ds = _PilPatches(
        a.slide, grid.coords[: a.n], grid.level, grid.read_size, grid.patch_size, mean, std
    )

    def run():
        n = 0
        loader = DataLoader(ds, batch_size=64, num_workers=1)
        with torch.inference_mode():
            for x in loader:
                enc.model(x)
                n += len(x)
        del loader
        return n

    return _timed(run)


def row_cscl(a):
    import tempfile
    from dataclasses import replace

    from cscl.wsi.encoders import load_encoder
    from cscl.wsi.extract import ExtractConfig, extract_slide, prepare_run

    cfg = ExtractConfig(
        backbone=a.backbone, allow_random=True, patch_size=a.patch_size, target_mpp=a.target_mpp
    )
    if a.old:
        cfg = replace(cfg, precision="fp32")
    if a.threads:
        cfg = replace(cfg, torch_threads=a.threads, num_workers=a.workers)
    enc = load_encoder(cfg.backbone, allow_random=True)
    prepare_run(cfg, enc)
    with tempfile.TemporaryDirectory() as out:
        c0, t0 = _cpu_s(), time.perf_counter()
        r = extract_slide(a.slide, out, cfg, enc)
        res = {"n": r.n_patches, "wall": time.perf_counter() - t0, "cpu": _cpu_s() - c0}
    if r.status != "done":
        raise SystemExit(f"extract_slide failed: {r.error}")
    res["rss_mb"] = _vm_hwm_mb()
    return res


ROWS = {
    "decode": row_decode,
    "model": row_model,
    "naive": row_naive,
    "trident": row_trident,
    "cscl": row_cscl,
}
TORCH_FIRST = {"naive", "trident"}  # designs that know nothing of cscl's OpenMP setting


def child(a) -> None:
    if a.old or a.row in TORCH_FIRST:
        import torch  # noqa: F401  (loads libgomp before cscl could set OMP_WAIT_POLICY)
    print(json.dumps(ROWS[a.row](a)))


# ---- parent side: rounds ---------------------------------------------------------------------


def plan(a, slide: Path, vit_slide: Path) -> list[tuple[str, list[str]]]:
    """(label, child argv) of every row."""
    n, nv = str(a.n), str(a.vit_n)
    r18 = ["--backbone", "resnet18", "--slide", str(slide)]
    vit = ["--backbone", VIT, "--slide", str(vit_slide)]
    rows = [
        ("decode", ["decode", "--n", n, *r18]),
        ("model fp32", ["model", "--n", n, "--precision", "fp32", *r18]),
        ("model bf16", ["model", "--n", n, "--precision", "bf16", *r18]),
        ("model bf16 1 thread", ["model", "--n", n, "--precision", "bf16", "--threads", "1", *r18]),
        ("naive", ["naive", "--n", n, *r18]),
        ("trident-like", ["trident", "--n", n, *r18]),
        ("cscl old (spin, fp32)", ["cscl", "--old", *r18]),
        ("cscl extract", ["cscl", *r18]),
        ("cscl 1t1w", ["cscl", "--threads", "1", "--workers", "1", *r18]),
        ("ViT-B model fp32", ["model", "--n", nv, "--precision", "fp32", *vit]),
        ("ViT-B model bf16", ["model", "--n", nv, "--precision", "bf16", *vit]),
        ("ViT-B decode", ["decode", "--n", nv, *vit]),
        ("ViT-B naive", ["naive", "--n", nv, *vit]),
        ("ViT-B cscl extract", ["cscl", *vit]),
    ]
    return rows


def run_row(argv: list[str], env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", *argv]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="extract.py --child ROW")
    p.add_argument("row", choices=sorted(ROWS))
    p.add_argument("--slide", required=True)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--old", action="store_true")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=224)
    p.add_argument("--target-mpp", type=float, default=1.0)
    return p.parse_args(argv)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(child_args(sys.argv[2:]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="6k² slide, 2 rounds")
    p.add_argument("--size", type=int, default=None, help="resnet18 slide side px (10000)")
    p.add_argument("--vit-size", type=int, default=4000, help="ViT-B slide side px")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--n", type=int, default=256, help="patches per phase row (resnet18)")
    p.add_argument("--vit-n", type=int, default=48, help="patches per phase row (ViT-B)")
    p.add_argument("--only", default=None, help="comma list of row labels to run")
    a = p.parse_args()
    size = a.size or (6000 if a.quick else 10000)
    rounds = a.rounds or (2 if a.quick else 3)
    slide, vit_slide = bench_slide(size), bench_slide(a.vit_size)
    rows = plan(a, slide, vit_slide)
    if a.only:
        keep = {s.strip() for s in a.only.split(",")}
        rows = [r for r in rows if r[0] in keep]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res: dict[str, list[dict]] = {label: [] for label, _ in rows}
    loads = [os.getloadavg()]
    for r in range(rounds):
        for label, argv in rows:
            res[label].append(run_row(argv, env))
        loads.append(os.getloadavg())
        print(f"round {r + 1}/{rounds} done, load average {loads[-1][0]:.2f}", flush=True)
    report(res, loads, size, a.vit_size, rounds)


def report(res: dict, loads: list, size: int, vit_size: int, rounds: int) -> None:
    def med(label, key):
        return statistics.median(x[key] for x in res[label])

    rate = {k: statistics.median(x["n"] / x["wall"] for x in v) for k, v in res.items()}
    cpu_ms = {k: statistics.median(1000 * x["cpu"] / x["n"] for x in v) for k, v in res.items()}
    print()
    print(
        f"CPUs {len(os.sched_getaffinity(0))} | load average (1 min) per round: "
        + ", ".join(f"{x[0]:.2f}" for x in loads)
        + f" | os.getloadavg() now {tuple(round(v, 2) for v in os.getloadavg())}"
    )
    print(
        f"resnet18 rows on a {size}² px slide, ViT-B rows on {vit_size}² px, 224 px @ 1 µm/px, "
        f"medians of {rounds} interleaved rounds"
    )
    print(f"| {'row':<24} | {'patches':>7} | {'patches/s':>9} | {'CPU-ms/patch':>12} | note |")
    print(f"|{'-' * 26}|{'-' * 9}|{'-' * 11}|{'-' * 14}|------|")
    for label in res:
        note = f"peak RSS {med(label, 'rss_mb'):.0f} MB" if "rss_mb" in res[label][0] else ""
        print(
            f"| {label:<24} | {int(med(label, 'n')):>7} | {rate[label]:>9.1f} | "
            f"{cpu_ms[label]:>12.1f} | {note} |"
        )
    print()

    def summary(prefix, models, decode, d, baselines):
        have = [m for m in models if m in rate]
        if not have or decode not in rate or d not in rate:
            return
        best = max(have, key=rate.get)
        bound = 1.0 / (1.0 / rate[decode] + 1.0 / rate[best])
        print(
            f"{prefix}: wall bound 1/(1/decode + 1/{best}) = {bound:.1f} patches/s; "
            f"cscl extract {rate[d]:.1f} = {rate[d] / bound:.2f} × bound (target ≥ 0.9); "
            + "; ".join(f"{rate[d] / rate[b]:.2f} × {b}" for b in baselines if b in rate)
            + " (target ≥ 2)"
        )
        # on shared cores a row's wall rate depends on how many threads it has competing for
        # the scheduler; CPU time per patch does not: the CPU bound is decode + best model
        cheapest = min(have, key=cpu_ms.get)
        cpu_bound = cpu_ms[decode] + cpu_ms[cheapest]
        print(
            f"{prefix}: CPU bound {cpu_ms[decode]:.1f} (decode) + {cpu_ms[cheapest]:.1f} "
            f"({cheapest}) = {cpu_bound:.1f} CPU-ms/patch; cscl extract {cpu_ms[d]:.1f} → "
            f"efficiency {cpu_bound / cpu_ms[d]:.2f} (target ≥ 0.9); "
            + "; ".join(
                f"{cpu_ms[b] / cpu_ms[d]:.2f} × cheaper than {b}" for b in baselines if b in rate
            )
            + " (target ≥ 2)"
        )

    summary(
        "resnet18",
        ["model fp32", "model bf16", "model bf16 1 thread"],
        "decode",
        "cscl extract",
        ["naive", "trident-like", "cscl old (spin, fp32)"],
    )
    summary(
        "ViT-B/16",
        ["ViT-B model fp32", "ViT-B model bf16"],
        "ViT-B decode",
        "ViT-B cscl extract",
        ["ViT-B naive"],
    )


if __name__ == "__main__":
    main()
