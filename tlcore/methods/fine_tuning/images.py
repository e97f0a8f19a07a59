"""Images for fine-tuning, decoded once per experiment and batched from memory (or streamed by
DataLoader workers when too large): every epoch, and every run of a sweep, reads the same pixels.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tlcore.data import ImageDataset
from tlcore.data.loading import N_CROPS, ImageBatches, Preprocessing, default_num_workers, make_loader
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec


def indices_hash(indices: np.ndarray) -> str:
    """A short fingerprint of a split's image indices: the cache key, and a checkpoint's proof of its split."""
    return hashlib.blake2b(np.asarray(indices, dtype=np.int64).tobytes(), digest_size=12).hexdigest()


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches; a last batch of one image joins the one before (BatchNorm cannot train on one)."""
    cuts = [*range(0, n, batch_size), n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1:
        del cuts[-2]
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


@dataclass
class ImageSet:
    """The images of one split, ready for batching: uint8 in memory, or streamed from disk each epoch."""

    name: str
    n_images: int
    images: torch.Tensor | None = None  # uint8 (N,3,S,S) or (N,10,3,S,S)
    labels: torch.Tensor | None = None
    stream: ImageBatches | None = None
    num_workers: int | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return self.n_images

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.images is None:
            loader = make_loader(self.stream, batch_size, shuffle=shuffle, device=device,
                                 num_workers=self.num_workers, seed=seed)
            for b in loader:
                if len(b.labels):
                    yield b.images, b.labels
            return
        assert self.labels is not None
        order = None
        if shuffle:
            order = torch.randperm(self.n_images, generator=torch.Generator().manual_seed(seed))
            order = order.to(self.images.device)
        for s in batch_slices(self.n_images, batch_size):
            if order is None:
                yield self.images[s], self.labels[s]
            else:
                rows = order[s]
                yield self.images[rows], self.labels[rows]


class ImageCache:
    """Decodes each split once per experiment: val and test are shared by every run of a sweep.

    Sets are kept while their total size stays under ``budget_mb``; on CUDA they live on the GPU
    when a quarter of its free memory holds them (no host-to-device copy per batch), else in
    pinned memory. Larger sets are streamed by DataLoader workers every epoch.
    """

    def __init__(self, ds: ImageDataset, prep: Preprocessing, spec: ExperimentSpec, device: torch.device,
                 budget_mb: int) -> None:
        self.ds, self.prep, self.spec, self.device = ds, prep, spec, device
        self.budget = budget_mb * 2**20
        self.crops = spec.use_crops or bool(spec.precomputed_crops)
        self.num_workers = spec.num_workers if spec.num_workers is not None else default_num_workers(device)
        self._sets: dict[str, ImageSet] = {}
        self._transient: str | None = None

    def bytes_for(self, n: int) -> int:
        return n * (N_CROPS if self.crops else 1) * 3 * self.prep.input_size ** 2

    def _source(self, indices: np.ndarray) -> ImageBatches:
        return ImageBatches(self.ds, indices, self.prep, crops=self.crops,
                            precomputed_crops=self.spec.precomputed_crops, skip_bad=self.spec.skip_bad_images)

    def used(self) -> int:
        return sum(s.images.numel() for s in self._sets.values() if s.images is not None)

    def get(self, name: str, indices: np.ndarray, reporter: Reporter, transient: bool = False) -> ImageSet:
        """The images at ``indices``; a ``transient`` set (a run's training split) replaces the previous one."""
        key = indices_hash(indices)
        if key in self._sets:
            return self._sets[key]
        if transient and self._transient is not None:
            self._sets.pop(self._transient, None)
        if self.bytes_for(len(indices)) + self.used() > self.budget:
            return ImageSet(name, len(indices), stream=self._source(indices), num_workers=self.num_workers)
        image_set = self._decode(name, indices, reporter)
        self._sets[key] = image_set
        if transient:
            self._transient = key
        return image_set

    def _decode(self, name: str, indices: np.ndarray, reporter: Reporter) -> ImageSet:
        s = self.prep.input_size
        shape = (len(indices), N_CROPS, 3, s, s) if self.crops else (len(indices), 3, s, s)
        images = torch.empty(shape, dtype=torch.uint8)
        labels = torch.empty(len(indices), dtype=torch.long)
        loader = make_loader(self._source(indices), batch_size=32, num_workers=self.num_workers)
        k = skipped = 0
        for b in loader:
            reporter.check_cancelled()
            reporter.update(stage=f"decoding {len(indices)} {name} images at {s} px")
            m = len(b.labels)
            images[k:k + m], labels[k:k + m] = b.images, b.labels
            k, skipped = k + m, skipped + len(b.skipped)
        if skipped:
            reporter.message(f"Skipped {skipped} unreadable {name} image(s) (--skip-bad-images).", "warning")
        images, labels = images[:k], labels[:k]
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            if images.numel() < free // 4:
                images, labels = images.to(self.device), labels.to(self.device)
            else:
                images, labels = images.pin_memory(), labels.pin_memory()
        return ImageSet(name, k, images=images, labels=labels, skipped=skipped)

