"""Stage-2 (slide encoder) cost against tokens per slide, up to the 16k of a large real slide.

For each token count P, a fresh subprocess builds the CSCL slide encoder (stain code → fusion →
gated ABMIL) and times, on random tokens:
  train step  the CSCL objective's forward (H&E alone + IHC stains, as `cscl pretrain` runs it)
              + alignment loss (InfoNCE + GOT on `got_tokens` subsampled tokens) + backward
  H&E embed   the inference path (one stain: fusion folded into ABMIL's first linear layer,
              cscl.models.slide_encoder)
  H&E attn    the same through MultiheadAttention (what inference cost before the shortcut)
and its peak RSS. Everything but GOT's fixed-size plan is linear in P, so time and memory per
token should stay flat: the table shows whether they do. Configurations alternate in rounds
inside each subprocess, token counts alternate across outer rounds (a fresh process each);
medians are printed with the load average, and CPU time per token beside wall time (shared
cores: the CPU columns and ratios are what a changing load disturbs least).

    .venv/bin/python benchmarks/stage2_scaling.py                 # P = 512 … 16384, batch 4
    .venv/bin/python benchmarks/stage2_scaling.py --tokens 512,2048 --batch 2
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


def child(p: int, a) -> dict:
    import torch

    from cscl.train.stage2 import SlideConfig, alignment_loss, build_encoder, slide_outputs

    torch.set_num_threads(a.threads or len(os.sched_getaffinity(0)))
    cfg = SlideConfig()
    enc, _ = build_encoder(cfg, a.dim, a.stains)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, a.stains, p, a.dim, generator=g)
    valid = torch.ones(a.batch, a.stains, p, dtype=torch.bool)
    present = torch.ones(a.batch, a.stains, dtype=torch.bool)
    he = x[:, 0]

    def train_step():
        enc.train()
        enc.zero_grad(set_to_none=True)
        out = slide_outputs(enc, x, valid, cfg, g)
        alignment_loss(out, valid, present, cfg, g).backward()

    @torch.no_grad()
    def embed():
        enc.eval()
        enc.encode_he(he)

    @torch.no_grad()
    def embed_attention():
        enc.eval()
        h = enc.tokens_in(he[:, None], torch.tensor([0]))
        h = enc.fusion.attend(h, torch.ones(h.shape[:3], dtype=torch.bool))
        enc.abmil(h[:, 0], torch.ones(h.shape[0], h.shape[2], dtype=torch.bool))

    fns = {"train_step": train_step, "he_embed": embed, "he_embed_attention": embed_attention}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(a.rounds):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()  # process CPU: all threads
            fn()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    res = {k: statistics.median(v) for k, v in times.items()}
    res.update({f"{k}_cpu": statistics.median(v) for k, v in cpu.items()})
    res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["input_mb"] = x.numel() * 4 / 2**20
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="512,2048,4096,8192,16384")
    ap.add_argument("--batch", type=int, default=4, help="slides (cases) per step")
    ap.add_argument("--stains", type=int, default=3, help="H&E + IHC stains per case")
    ap.add_argument("--dim", type=int, default=512, help="token dimension (adapter output)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations inside each process")
    ap.add_argument("--outer-rounds", type=int, default=2, help="fresh processes per token count")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a)))
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load0 = os.getloadavg()
    tokens = [int(t) for t in a.tokens.split(",")]
    runs: dict[int, list[dict]] = {p: [] for p in tokens}
    # every token count once per outer round (a fresh process each time), so a change of load
    # on the shared cores hits all rows alike; the CPU columns are the load-robust ones
    for r in range(a.outer_rounds):
        for p in tokens:
            argv = [sys.executable, __file__, "--child", str(p), "--batch", str(a.batch),
                    "--stains", str(a.stains), "--dim", str(a.dim), "--rounds", str(a.rounds)]  # fmt: skip
            if a.threads:
                argv += ["--threads", str(a.threads)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
            runs[p].append(json.loads(out.strip().splitlines()[-1]))
        print(f"outer round {r + 1}/{a.outer_rounds}, load average {os.getloadavg()[0]:.2f}",
              flush=True)  # fmt: skip
    rows = [(p, {k: statistics.median(x[k] for x in runs[p]) for k in runs[p][0]}) for p in tokens]
    print()
    print(
        f"batch {a.batch} cases × {a.stains} stains × P tokens × {a.dim} dims | CPUs "
        f"{len(os.sched_getaffinity(0))} | os.getloadavg() at start {tuple(round(v, 2) for v in load0)}, "
        f"at end {tuple(round(v, 2) for v in os.getloadavg())}"
    )
    print(
        "| tokens P | train step s | CPU-µs/token | H&E embed ms | CPU-µs/token | via attention ms "
        "| CPU ratio | peak RSS MB | input MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p, r in rows:
        tok = a.batch * a.stains * p
        he_tok = a.batch * p
        print(
            f"| {p} | {r['train_step']:.2f} | {1e6 * r['train_step_cpu'] / tok:.1f} | "
            f"{1000 * r['he_embed']:.1f} | {1e6 * r['he_embed_cpu'] / he_tok:.2f} | "
            f"{1000 * r['he_embed_attention']:.1f} | "
            f"{r['he_embed_attention_cpu'] / r['he_embed_cpu']:.2f}× | {r['rss_mb']:.0f} | "
            f"{r['input_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
