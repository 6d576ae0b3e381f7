"""Self-describing run directories and the public loading API `load_trained`.

A run dir holds `config.json` (full config, package versions, data fingerprint, seed, git
commit, model names + constructor configs, file names) and one `.pt` state dict per module
(`adapter.pt`, `slide_encoder.pt`, `head.pt`; loadable with `weights_only=True`). Only relative
file names are stored, so a run dir can be copied into a model bundle as it is.

PUBLIC API (used by cscl.bundle / cscl.inference / cscl.embed; keep stable):
    m = load_trained(run_dir, device=None)      # or load_trained("mean-pool")
    m.config, m.embed_dim, m.input_dim, m.kind
    emb, attn = m.embed(features (N, D) float32, coords (N, 2) | None)   # ONE H&E slide
    m.embed_batch([features, ...]) -> [(emb, attn), ...]
    m.predict_status(features) -> class probabilities (histostainalign / supervised runs)
    adapter, cfg = load_adapter(run_dir, device)   # the frozen stage-1 adapter of a run
`embed` applies adapter → stain code + fusion on H&E alone → gated ABMIL, the path the model was
trained with under stain dropout (see cscl.models.fusion).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from cscl.errors import InputError
from cscl.io.storage import atomic_path
from cscl.models import create_model

CONFIG = "config.json"
BASELINES = ("mean-pool",)


def save_run(out_dir: str | Path, config: dict, modules: dict[str, torch.nn.Module]) -> Path:
    """Write `<name>.pt` for each module and config.json (last, atomically: marks completion)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, digest = {}, hashlib.sha256()
    for name, mod in modules.items():
        fname = f"{name}.pt"
        sd = {k: v.detach().cpu() for k, v in mod.state_dict().items()}
        with atomic_path(out / fname) as tmp:
            torch.save(sd, tmp)
        digest.update((out / fname).read_bytes())
        files[name] = fname
    config = dict(config)
    config["files"] = files
    config.setdefault("model_version", f"{config.get('kind', 'model')}-{digest.hexdigest()[:12]}")
    with atomic_path(out / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default))
    return out


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_config(run_dir: str | Path) -> dict:
    p = Path(run_dir) / CONFIG
    if not p.exists():
        raise InputError(
            f"{run_dir} is not a cscl run directory (no {CONFIG})",
            hint="give the --out folder of `cscl pretrain`, or the baseline name 'mean-pool'",
        )
    return json.loads(p.read_text())


def _load_module(run_dir: Path, cfg: dict, key: str, device: torch.device):
    spec = cfg.get(key)
    if not spec:
        return None
    mod = create_model(spec["name"], **spec["config"])
    fname = cfg.get("files", {}).get(key)
    if fname is None or not (run_dir / fname).exists():
        raise InputError(f"run {run_dir} lacks weights file for {key} ({fname})")
    mod.load_state_dict(torch.load(run_dir / fname, map_location="cpu", weights_only=True))
    return mod.to(device).eval()


class TrainedModel:
    """A trained (or baseline) H&E slide embedder. See module docstring for the API."""

    def __init__(self, config: dict, adapter=None, encoder=None, head=None, device=None):
        self.config = config
        self.kind: str = config.get("kind", "cscl")
        self.adapter, self.encoder, self.head = adapter, encoder, head
        self.device = torch.device(device or "cpu")
        self.input_dim: int | None = config.get("input_dim")
        self.he_id = int(config.get("he_id", 0))
        if encoder is not None:
            self.embed_dim = int(encoder.embed_dim)
        else:
            self.embed_dim = self.input_dim  # adapter-only / mean-pool: mean of (adapted) tokens

    @property
    def model_version(self) -> str:
        return str(self.config.get("model_version", self.kind))

    def _check(self, features: np.ndarray) -> torch.Tensor:
        f = np.asarray(features)
        if f.ndim != 2 or f.shape[0] == 0:
            raise InputError(f"need (N, D) patch features with N > 0, got shape {f.shape}")
        if self.input_dim is not None and f.shape[1] != self.input_dim:
            raise InputError(
                f"features have dimension {f.shape[1]} but the model expects {self.input_dim}",
                hint="extract features with the backbone this model was trained on",
            )
        return torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(self.device)

    @torch.no_grad()
    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(x, "10x") if self.adapter is not None else x

    @torch.no_grad()
    def embed(
        self, features: np.ndarray, coords: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (E,), attention (N,)) of one H&E slide. `coords` unused (kept for API)."""
        x = self._tokens(self._check(features))
        if self.encoder is None:
            n = x.shape[0]
            return x.mean(0).float().cpu().numpy(), np.full(n, 1.0 / n, dtype=np.float32)
        z, a = self.encoder.encode_he(x[None], he_id=self.he_id)
        return z[0].float().cpu().numpy(), a[0].float().cpu().numpy()

    def embed_batch(self, batch: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.embed(f) for f in batch]

    @torch.no_grad()
    def predict_status(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities from H&E (HistoStainAlign / supervised runs; order = `classes`)."""
        if self.head is None:
            raise InputError(f"model kind {self.kind!r} has no status head")
        z, _ = self.embed(features)
        p = self.head.predict_proba(torch.from_numpy(z)[None].to(self.device))
        return p[0].cpu().numpy()

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes") or [])


def mean_pool_model(input_dim: int | None = None) -> TrainedModel:
    """Baseline: mean of raw patch features (no training)."""
    cfg = {"kind": "mean-pool", "model_version": "mean-pool", "input_dim": input_dim}
    return TrainedModel(cfg)


def load_trained(run_dir: str | Path, device: str | torch.device | None = None) -> TrainedModel:
    """Load a run dir written by `cscl pretrain` (or the baseline name "mean-pool")."""
    if str(run_dir) in BASELINES:
        return mean_pool_model()
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    adapter = _load_module(run_dir, cfg, "adapter", dev)
    encoder = _load_module(run_dir, cfg, "slide_encoder", dev)
    head = _load_module(run_dir, cfg, "head", dev)
    return TrainedModel(cfg, adapter, encoder, head, dev)


def load_adapter(run_dir: str | Path, device: str | torch.device | None = None):
    """(adapter module in eval mode, the run's config) of a stage-1 run dir (`cscl pretrain
    --stage adapter`, or any run that holds an adapter)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if not cfg.get("adapter"):
        raise InputError(
            f"{run_dir} holds no adapter (kind {cfg.get('kind')!r})",
            hint="give the --out folder of `cscl pretrain --stage adapter`",
        )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _load_module(run_dir, cfg, "adapter", dev), cfg
