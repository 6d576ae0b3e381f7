"""generate_cohort: a folder of paired H&E/IHC pyramidal slides with planted labels and true
H&E→IHC transforms (docs/CONTRACTS.md, "Synthetic cohort folder").

Slides are independent jobs (one per case × stain) run in a process pool; each job rebuilds its
case layout from integers, so nothing large crosses process boundaries. Every random draw comes
from a named stream of the cohort seed, so the same seed gives identical labels and pixels, and a
shifted cohort (ShiftSpec) differs only in appearance. Reruns into the same folder with the same
parameters resume: finished slides (written atomically) are kept.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.errors import CsclError, InputError
from cscl.io.storage import atomic_path
from cscl.synthetic.biology import CaseBiology, labels_frame, make_biology
from cscl.synthetic.layout import make_layout, tissue_points
from cscl.synthetic.shift import ShiftSpec
from cscl.synthetic.workers import die_with, exclusive_folder, remove_debris

DEFAULT_STAINS = ("HE", "HER2", "KI67", "ER", "PGR")
KNOWN_STAINS = set(DEFAULT_STAINS)
FORMATS = ("aperio", "generic")
GENERATOR_VERSION = 1
_TABLES = ("cohort.json", "labels.csv", "transforms.csv", "manifest.csv")


@dataclass(frozen=True)
class SlideJob:
    """One slide to render: plain values only (cheap to pickle to a worker)."""

    path: str
    case_seed: int
    width_um: float
    height_um: float
    bio: CaseBiology
    stain: str
    width_px: int
    height_px: int
    mpp: float
    matrix: tuple[tuple[float, ...], ...]
    noise_seed: tuple[int, ...]
    shift: ShiftSpec
    cohort_seed: int
    he_cue: float
    stain_jitter: tuple[float, float, float]
    fmt: str
    quality: int
    scale: int = 1


def _stain_key(stain: str) -> int:
    return zlib.crc32(stain.encode())


def case_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def rigid_matrix(angle_deg: float, t_um: tuple[float, float], center_um, mpp: float) -> np.ndarray:
    """2×3 px matrix of: rotate by angle about the slide centre, then translate (µm)."""
    a = math.radians(angle_deg)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.asarray(center_um, dtype=np.float64)
    t = (c - R @ c + np.asarray(t_um)) / mpp
    return np.hstack([R, t[:, None]])


def sample_transform(
    cseed: int, stain: str, width_um: float, height_um: float, pts_um: np.ndarray, max_angle: float
) -> tuple[float, tuple[float, float]]:
    """Random rigid placement of an IHC section that keeps all tissue on the glass.

    The angle is drawn first (and shrunk if the rotated tissue cannot fit at all), then the
    translation within the range that keeps the rotated tissue inside (at most 5 % of the size).
    """
    rng = np.random.default_rng([cseed, 202, _stain_key(stain)])
    size = np.array([width_um, height_um])
    c = size / 2
    margin = 0.01 * min(width_um, height_um)
    ang = rng.uniform(-max_angle, max_angle)
    u_t = rng.uniform(0, 1, size=2)
    if len(pts_um) == 0:
        return float(ang), tuple(float(x) for x in (u_t - 0.5) * 0.1 * size)
    for _ in range(80):
        a = math.radians(ang)
        R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        q = (pts_um - c) @ R.T + c
        lo = np.maximum(margin - q.min(axis=0), -0.05 * size)
        hi = np.minimum(size - margin - q.max(axis=0), 0.05 * size)
        if np.all(lo <= hi):
            t = lo + u_t * (hi - lo)
            return float(ang), (float(t[0]), float(t[1]))
        ang *= 0.9
    return 0.0, (0.0, 0.0)


def render_job(job: SlideJob) -> tuple[str, float, float]:
    """Render and write one slide atomically (runs in a worker): (path, wall s, CPU s)."""
    from cscl.synthetic.render import SlideRenderer
    from cscl.synthetic.tiff_writer import write_pyramid

    t0, c0 = time.perf_counter(), time.process_time()
    layout = make_layout(
        job.case_seed, job.width_um, job.height_um, job.bio.tumour_fraction, job.shift.composition
    )
    renderer = SlideRenderer(
        layout=layout,
        bio=job.bio,
        stain=job.stain,
        mpp=job.mpp,
        matrix=np.asarray(job.matrix),
        noise_seed=job.noise_seed,
        shift=job.shift,
        cohort_seed=job.cohort_seed,
        he_cue=job.he_cue,
        stain_jitter=np.asarray(job.stain_jitter),
        scale=job.scale,
    )
    with atomic_path(Path(job.path)) as tmp:
        write_pyramid(
            tmp,
            job.width_px,
            job.height_px,
            renderer.render,
            fmt=job.fmt,
            mpp=job.mpp,
            quality=job.quality,
        )
    return job.path, time.perf_counter() - t0, time.process_time() - c0


def _validate(n_cases, seed, stains, width, height, mpp, fmt, missing_ihc_rate, max_angle, he_cue):
    if not isinstance(n_cases, int) or n_cases < 1:
        raise InputError(f"--cases must be a positive integer, got {n_cases!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    if "HE" not in stains:
        raise InputError(f"stains {list(stains)} lack HE", hint="every case needs one HE slide")
    unknown = [s for s in stains if s not in KNOWN_STAINS]
    if unknown:
        raise InputError(
            f"unknown stain(s) {unknown}",
            hint=f"choose from {sorted(KNOWN_STAINS)} (comma-separated)",
        )
    if len(set(stains)) != len(stains):
        raise InputError(f"stains repeated in {list(stains)}")
    for name, val in (("width", width), ("height", height)):
        if not isinstance(val, int) or not 512 <= val <= 200_000:
            raise InputError(f"--{name} must be an integer in [512, 200000] px, got {val!r}")
    if not (isinstance(mpp, int | float) and 0.05 <= mpp <= 10):
        raise InputError(f"--mpp must be in [0.05, 10] µm/px, got {mpp!r}")
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if not 0.0 <= missing_ihc_rate < 1.0:
        raise InputError(f"--missing-ihc-rate must be in [0, 1), got {missing_ihc_rate!r}")
    if not 0.0 <= max_angle <= 180.0:
        raise InputError(f"max_angle must be in [0, 180] degrees, got {max_angle!r}")
    if not 0.0 <= he_cue <= 3.0:
        raise InputError(f"he_cue must be in [0, 3], got {he_cue!r}")


def generate_cohort(
    out_dir: str | os.PathLike,
    n_cases: int = 24,
    seed: int = 0,
    stains: Sequence[str] = DEFAULT_STAINS,
    width: int = 6000,
    height: int = 4000,
    mpp: float = 0.5,
    fmt: str = "aperio",
    shift: ShiftSpec | str | None = None,
    *,
    workers: int | None = None,
    missing_ihc_rate: float = 0.0,
    manifest_mpp: bool = True,
    max_angle: float = 20.0,
    he_cue: float = 1.0,
    jpeg_quality: int = 90,
    detail: str = "fast",
    progress: bool = True,
    stats: dict | None = None,
) -> Path:
    """Generate a synthetic cohort folder; returns the path of its manifest.csv.

    `detail="fast"` computes tissue at ~1 µm/px and upsamples to level 0 (what 1 µm/px patch
    extraction sees is the same, ~4× faster at 0.5 mpp); "full" computes every level-0 pixel.
    `stats`, if given, receives slides_rendered, slides_kept and render_cpu_s (CPU seconds of
    all workers). `manifest_mpp` only matters for fmt="generic" (files without mpp): True writes the mpp into
    the manifest, False leaves it blank so readers hit their "no mpp" error.
    """
    stains = tuple(s.strip().upper().replace("H&E", "HE") for s in stains)
    _validate(n_cases, seed, stains, width, height, mpp, fmt, missing_ihc_rate, max_angle, he_cue)
    if detail not in ("fast", "full"):
        raise InputError(f"detail must be 'fast' or 'full', got {detail!r}")
    stains = ("HE",) + tuple(s for s in stains if s != "HE")
    spec = shift if isinstance(shift, ShiftSpec) else ShiftSpec.parse(shift)
    out = Path(out_dir)
    slides_dir = out / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)

    with exclusive_folder(out):  # one run per folder: the debris removed is a dead run's
        remove_debris(out, _TABLES)
        params = dict(
            generator_version=GENERATOR_VERSION,
            n_cases=n_cases,
            seed=seed,
            stains=list(stains),
            width=width,
            height=height,
            mpp=mpp,
            format=fmt,
            shift=spec.to_dict(),
            missing_ihc_rate=missing_ihc_rate,
            manifest_mpp=manifest_mpp,
            max_angle=max_angle,
            he_cue=he_cue,
            jpeg_quality=jpeg_quality,
            detail=detail,
        )
        cj = out / "cohort.json"
        if cj.exists():
            try:
                old = json.loads(cj.read_text())
            except json.JSONDecodeError:
                old = None
            if old != params:
                raise InputError(
                    f"{out} already holds a cohort made with other parameters ({cj})",
                    hint="choose another --out, or delete the folder to regenerate",
                )
        else:
            with atomic_path(cj) as tmp:
                tmp.write_text(json.dumps(params, indent=2))

        bios = make_biology(n_cases, seed)
        slide_mpp = spec.mpp(mpp)
        w_um, h_um = width * mpp, height * mpp
        wpx, hpx = int(round(w_um / slide_mpp)), int(round(h_um / slide_mpp))
        quality = spec.jpeg_quality(jpeg_quality)
        scale = max(1, int(round(1.0 / slide_mpp))) if detail == "fast" else 1
        ext = ".svs" if fmt == "aperio" else ".tif"
        miss_rng = np.random.default_rng([seed, 303])

        jobs: list[SlideJob] = []
        man_rows, tf_rows = [], []
        for i, bio in enumerate(bios):
            cseed = case_seed(seed, i)
            layout = make_layout(cseed, w_um, h_um, bio.tumour_fraction, spec.composition)
            pts = None
            for stain in stains:
                if stain != "HE" and miss_rng.random() < missing_ihc_rate:
                    continue
                if stain == "HE":
                    ang, t = 0.0, (0.0, 0.0)
                else:
                    if pts is None:
                        pts = tissue_points(layout, step_um=max(20.0, min(w_um, h_um) / 60))
                    ang, t = sample_transform(cseed, stain, w_um, h_um, pts, max_angle)
                M = rigid_matrix(ang, t, (w_um / 2, h_um / 2), slide_mpp)
                jit = 1.0 + np.random.default_rng([cseed, 404, _stain_key(stain)]).normal(
                    0, 0.05, 3
                )
                rel = f"slides/{bio.case_id}_{stain}{ext}"
                jobs.append(
                    SlideJob(
                        path=str(out / rel),
                        case_seed=cseed,
                        width_um=w_um,
                        height_um=h_um,
                        bio=bio,
                        stain=stain,
                        width_px=wpx,
                        height_px=hpx,
                        mpp=slide_mpp,
                        matrix=tuple(tuple(float(x) for x in row) for row in M),
                        noise_seed=(seed, i, _stain_key(stain)),
                        shift=spec,
                        cohort_seed=seed,
                        he_cue=he_cue,
                        stain_jitter=tuple(float(x) for x in jit),
                        fmt=fmt,
                        quality=quality,
                        scale=scale,
                    )
                )
                blank_mpp = fmt == "aperio" or not manifest_mpp
                man_rows.append(
                    dict(
                        case_id=bio.case_id,
                        stain=stain,
                        slide_uri=rel,
                        mpp="" if blank_mpp else f"{slide_mpp:.6g}",
                    )
                )
                if stain != "HE":
                    tf_rows.append(
                        dict(
                            case_id=bio.case_id,
                            stain=stain,
                            angle_deg=ang,
                            tx=M[0, 2],
                            ty=M[1, 2],
                            m00=M[0, 0],
                            m01=M[0, 1],
                            m02=M[0, 2],
                            m10=M[1, 0],
                            m11=M[1, 1],
                            m12=M[1, 2],
                        )
                    )

        remove_debris(slides_dir, [Path(j.path).name for j in jobs])  # of a killed earlier run
        todo = [j for j in jobs if not Path(j.path).exists()]
        cpu = _run_jobs(todo, workers, progress)
        if stats is not None:
            stats.update(
                slides_rendered=len(todo), slides_kept=len(jobs) - len(todo), render_cpu_s=cpu
            )

        _write_csv(out / "labels.csv", labels_frame(bios))
        _write_csv(
            out / "transforms.csv",
            pd.DataFrame(
                tf_rows,
                columns=[
                    "case_id", "stain", "angle_deg", "tx", "ty",
                    "m00", "m01", "m02", "m10", "m11", "m12",
                ],
            ),
        )  # fmt: skip
        manifest = out / "manifest.csv"
        _write_csv(
            manifest, pd.DataFrame(man_rows, columns=["case_id", "stain", "slide_uri", "mpp"])
        )
        return manifest


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _run_jobs(jobs: list[SlideJob], workers: int | None, progress: bool) -> float:
    """Render all jobs; a failing slide is reported by name after the others finish.
    Returns the CPU seconds the jobs used."""
    if not jobs:
        return 0.0
    cpu = [0.0]
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    failures: list[str] = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task("rendering slides", total=len(jobs))

    def done(result: tuple | None, exc: BaseException | None, job: SlideJob) -> None:
        if result is not None:
            cpu[0] += result[2]
        if exc is not None:
            failures.append(f"{Path(job.path).name}: {exc}")
        if bar is not None:
            bar.advance(task)

    try:
        if n == 1:
            for job in jobs:
                try:
                    done(render_job(job), None, job)
                except CsclError:
                    raise
                except Exception as exc:  # reported below, after the rest are rendered
                    done(None, exc, job)
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(
                n,
                mp_context=mp.get_context("forkserver"),
                initializer=die_with,  # no worker renders on after this process is killed
                initargs=(os.getpid(),),
            ) as pool:
                futs = {pool.submit(render_job, j): j for j in jobs}
                for fut in as_completed(futs):
                    exc = fut.exception()
                    done(None if exc else fut.result(), exc, futs[fut])
    finally:
        if bar is not None:
            bar.stop()
    if failures:
        raise CsclError(
            f"{len(failures)} of {len(jobs)} slide(s) failed: " + "; ".join(failures[:5]),
            hint="fix the cause and rerun the same command: finished slides are kept",
        )
    return cpu[0]
