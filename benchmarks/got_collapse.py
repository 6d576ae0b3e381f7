"""Why GOT is off by default: with a cosine cost and uniform weights (no Gromov–Wasserstein term)
the OT loss is minimised by making every token embedding identical. This trains CSCL stage 2 on
a planted-signal cohort twice — GOT weight 0 (the recipe) and 1 (the paper) — with everything
else equal, and prints what the token embeddings look like afterwards: the GOT value, the mean
cosine between ANY H&E token and ANY IHC token of a case (1.0 = all tokens the same point), the
RankMe of the H&E slide embeddings and the held-out H&E→IHC retrieval.

    .venv/bin/python benchmarks/got_collapse.py [--cases 240] [--epochs 15] [--temperature 0.07]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cscl.data import load_cohort  # noqa: E402
from cscl.models.losses import got_loss  # noqa: E402
from cscl.registration import load_registrations  # noqa: E402
from cscl.train import SMALL_ABMIL, load_trained, pretrain  # noqa: E402
from cscl.train.simulate import SimConfig, simulate_cohort  # noqa: E402
from cscl.train.stage2 import SlideConfig, SlideData, slide_outputs  # noqa: E402


@torch.no_grad()
def token_stats(run: Path, features: Path, manifest: str, regs) -> dict:
    """GOT value and H&E-vs-IHC token cosine on the run's held-out cases."""
    cfg = json.loads((run / "config.json").read_text())
    m = load_trained(run)
    held = set(cfg["monitor"]["cases"])
    coh = load_cohort(features, manifest)
    coh.cases = [c for c in coh.cases if c.case_id in held]
    coh.attach_pairs(regs, "location", 0.75)
    data = SlideData(coh, m.adapter, coh.stains, aligned=True)
    sc = SlideConfig(
        **{k: v for k, v in cfg["train"].items() if k in SlideConfig.__dataclass_fields__}
    )
    g = torch.Generator().manual_seed(0)
    x, valid, present = data.batch(list(range(len(data))), sc.n_tokens, g)
    out = slide_outputs(m.encoder.eval(), x, valid, sc, g)
    tok = F.normalize(out["tokens"].float(), dim=-1)
    cos, gots = [], []
    for s in range(1, tok.shape[1]):
        for b in range(tok.shape[0]):
            if present[b, s]:
                h, i = tok[b, 0][valid[b, 0]], tok[b, s][valid[b, s]]
                cos.append(float((h @ i.T).mean()))
        gots.append(float(got_loss(out["tokens"][:, 0], valid[:, 0], out["tokens"][:, s],
                                   valid[:, s], present[:, s], 256, generator=g)))  # fmt: skip
    last = cfg["history"][-1]
    return {"got": float(np.mean(gots)), "he_ihc_token_cosine": float(np.mean(cos)),
            "rankme": last.get("rankme"), "retrieval_heldout": last.get("retrieval_heldout")}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = simulate_cohort(root / "sim", SimConfig(n_cases=args.cases, seed=args.seed))
        regs = load_registrations(d["transforms"])
        common = dict(features=d["features"], manifest=str(d["manifest"]),
                      registration=str(d["transforms"]))  # fmt: skip
        adapter = pretrain("adapter", **common, out=root / "adapter",
                           config=dict(epochs=5, quiet=True, seed=args.seed, batch_size=16,
                                       pairs_per_case=128, lr=1e-3))  # fmt: skip
        print(f"{args.cases} cases, stage 2 {args.epochs} epochs, T={args.temperature}, "
              f"monitor 20 % held out (load {os.getloadavg()[0]:.1f})")  # fmt: skip
        print(f"{'GOT weight':>10s} {'GOT':>8s} {'H&E·IHC token cos':>18s} {'RankMe':>8s} "
              f"{'held-out retrieval':>19s} {'time':>6s}")  # fmt: skip
        untrained = None
        for w in (0.0, 1.0):
            t = time.perf_counter()
            cfg = dict(epochs=args.epochs, got_weight=w, temperature=args.temperature,
                       abmil=dict(SMALL_ABMIL), lr=3e-4, batch_size=24, rankme_after=1,
                       monitor_frac=0.2, quiet=True, seed=args.seed, warmup_epochs=1)  # fmt: skip
            run = pretrain("cscl", **common, adapter=adapter, out=root / f"got{w:g}", config=cfg)
            r = token_stats(run, d["features"], str(d["manifest"]), regs)
            if untrained is None:
                u = pretrain("cscl", **common, adapter=adapter, out=root / "untrained",
                             config=dict(cfg, epochs=1, lr=1e-12))  # fmt: skip
                untrained = token_stats(u, d["features"], str(d["manifest"]), regs)
                print(f"{'untrained':>10s} {untrained['got']:8.4f} "
                      f"{untrained['he_ihc_token_cosine']:18.3f}")  # fmt: skip
            print(f"{w:10g} {r['got']:8.4f} {r['he_ihc_token_cosine']:18.3f} {r['rankme']:8.1f} "
                  f"{r['retrieval_heldout']:19.3f} {time.perf_counter() - t:5.0f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
