"""Patch reading for a torch DataLoader: JPEG decoding in worker processes overlaps the model.

Each item is a whole batch (the sampler yields index lists) so one tensor crosses the process
boundary per batch, not one per patch. The dataset holds a `SlideReader`, which pickles without
its file handle and reopens in each worker on first read (handles are not shareable across
processes), whatever the backend. Read errors come back as a message, not an exception, so the
main process can raise one clean `SlideError`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from cscl.errors import CsclError
from cscl.wsi.readers import SlideReader


class PatchDataset(Dataset):
    """Patches of one slide: `ds[[i, j, …]]` → {"index", "images" uint8 (B,3,S,S), "error"}."""

    def __init__(
        self,
        reader: SlideReader,
        coords: np.ndarray,
        level: int,
        read_size: int,
        patch_size: int,
    ):
        self.reader = reader
        self.coords = np.asarray(coords, np.int64)
        self.level = int(level)
        self.read_size = int(read_size)
        self.patch_size = int(patch_size)

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, idx) -> dict:
        idx = [int(idx)] if np.isscalar(idx) else [int(i) for i in idx]
        size = (self.read_size, self.read_size)
        try:  # one call per batch: a backend with a batch decoder reads the patches together
            out = self.reader.read_regions(self.coords[idx], self.level, size)
            if self.read_size != self.patch_size:
                out = np.stack([_resized(rgb, self.patch_size) for rgb in out])
        except CsclError as exc:
            return {"index": torch.tensor(idx), "images": None, "error": str(exc)}
        images = torch.from_numpy(out).permute(0, 3, 1, 2)  # (B, 3, S, S) view, no copy
        return {"index": torch.tensor(idx), "images": images, "error": None}


def _resized(rgb: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.BILINEAR))


def _identity(batch):
    return batch


def patch_loader(
    ds: PatchDataset, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """Ordered batches; `num_workers` processes decode ahead of the model (prefetch 2 each)."""
    sampler = BatchSampler(SequentialSampler(range(len(ds))), batch_size, drop_last=False)
    return DataLoader(
        ds,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
        multiprocessing_context="fork" if num_workers > 0 else None,
    )
