"""Batches for training and extraction: uint8 tensors from the DataLoader, normalised on the device.

Workers decode and resize; the main process only moves uint8 batches (4x smaller than float)
to the device, where :func:`normalize_batch` converts, normalises and sets the memory format.
A batch is fetched in one call (:meth:`ImageBatches.__getitems__`): each file is decoded once,
images of one size are resized together as one tensor (the same kernel as one at a time, so the
same bytes), and the batch is stacked once, with no per-image tuples to collate.
Ten crops are 4 corners + centre, each mirrored (torchvision's ``TenCrop``), made on the fly
or read from a precomputed crops folder with the seed's ``image_crop_i.ext`` naming.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from tlcore.data.datasets import FileSource, ImageDataset
from tlcore.data.images import BadImageError, read_image
from tlcore.errors import DatasetError

N_CROPS = 10


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone expects: square input size, normalisation, resize policy."""

    input_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875

    def resize_transform(self) -> v2.Transform:
        # The seed resized whole images to the model's input size (Keras target_size): keep that.
        return v2.Compose([v2.PILToTensor(), v2.Resize((self.input_size, self.input_size), antialias=True)])

    def center_crop_transform(self) -> v2.Transform:
        # ImageNet-style evaluation (used by `predict`): resize the short side, crop the centre.
        return v2.Compose([v2.PILToTensor(), v2.Resize(round(self.input_size / self.crop_pct), antialias=True),
                           v2.CenterCrop(self.input_size)])

    def ten_crop_transform(self) -> v2.Transform:
        big = round(self.input_size / self.crop_pct)
        return v2.Compose([v2.PILToTensor(), v2.Resize((big, big), antialias=True), v2.TenCrop(self.input_size)])


def normalize_batch(x: torch.Tensor, prep: Preprocessing, device: torch.device, channels_last: bool = False,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N,3,H,W) on any device -> normalised float on ``device``."""
    x = x.to(device, non_blocking=True)
    mean = torch.tensor(prep.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    x = (x.float() - mean) / std
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(dtype)


def _crop_folder(image_path: Path, root: Path | None, crops_dir: Path) -> Path:
    """Where an image's crops live: the same place under ``crops_dir`` as the image under its
    dataset root, else (the seed's rule) ``crops_dir/<split>/<label>/``."""
    try:
        rel = image_path.relative_to(root) if root is not None else None
    except ValueError:
        rel = None
    if rel is None:
        rel = Path(*image_path.parts[-3:])
    return crops_dir / rel.parent


def _crop_paths(image_path: Path, root: Path | None, crops_dir: Path,
                listing: dict[Path, list[str]] | None = None) -> list[Path]:
    folder = _crop_folder(image_path, root, crops_dir)
    stem, ext = image_path.stem, image_path.suffix
    pattern = re.compile(rf"^{re.escape(stem)}_crop_(\d+){re.escape(ext)}$")
    if listing is not None and folder in listing:
        names = listing[folder]
    else:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        if listing is not None:
            listing[folder] = names
    found = [(int(m.group(1)), folder / n) for n in names if (m := pattern.match(n))]
    return [p for _, p in sorted(found)]


def check_precomputed_crops(ds: ImageDataset, indices: np.ndarray, crops_dir: str | Path) -> None:
    """Refuse, before any run opens, a crops folder that lacks some image's 10 crops (one sentence
    naming the first such image and where its crops were looked for)."""
    crops_dir = Path(crops_dir).expanduser()
    if ds.kind != "folder":
        raise DatasetError("--precomputed-crops needs a folder dataset (the crops mirror its layout).")
    if not crops_dir.is_dir():
        raise DatasetError(f"Crops folder {crops_dir} does not exist; make the crops or drop --precomputed-crops to "
                           "crop on the fly (--use-crops).")
    src: FileSource = ds.source  # type: ignore[assignment]
    listing: dict[Path, list[str]] = {}
    short = []
    for i in np.unique(np.asarray(indices, dtype=np.int64)):
        path = src.paths[int(i)]
        found = _crop_paths(path, ds.root, crops_dir, listing)
        if len(found) != N_CROPS:
            short.append((path, len(found)))
    if short:
        path, n = short[0]
        folder = _crop_folder(path, ds.root, crops_dir)
        raise DatasetError(
            f"{len(short)} image(s) lack their {N_CROPS} precomputed crops in {crops_dir}, first: {path} has {n} "
            f"(expected {folder / (path.stem + '_crop_0' + path.suffix)} ... _crop_{N_CROPS - 1}); make the missing "
            "crops, or drop --precomputed-crops to crop on the fly with --use-crops.")


class ImageBatches(Dataset):
    """A torch view of some images of an :class:`ImageDataset`.

    Items are ``(image uint8 [3,S,S] or crops [10,3,S,S], label, dataset index)``; with
    ``skip_bad`` an unreadable image yields ``None`` and :func:`collate_skip_bad` drops and counts it.
    """

    def __init__(self, ds: ImageDataset, indices: np.ndarray, prep: Preprocessing, crops: bool = False,
                 precomputed_crops: str | Path | None = None, skip_bad: bool = False,
                 augment: v2.Transform | None = None) -> None:
        self.ds = ds
        self.indices = np.asarray(indices, dtype=np.int64)
        self.prep = prep
        self.crops = crops or precomputed_crops is not None
        self.precomputed = Path(precomputed_crops) if precomputed_crops else None
        self.skip_bad = skip_bad
        self.augment = augment
        self.single = prep.resize_transform()
        self.ten = prep.ten_crop_transform()
        if self.precomputed is not None:
            if ds.kind != "folder":
                raise DatasetError("--precomputed-crops needs a folder dataset (the crops mirror its layout).")
            if not self.precomputed.is_dir():
                raise DatasetError(f"Crops folder {self.precomputed} does not exist; make the crops or drop "
                                   "--precomputed-crops to crop on the fly.")

    def __len__(self) -> int:
        return len(self.indices)

    def _load_crops(self, i: int) -> torch.Tensor:
        if self.precomputed is None:
            return torch.stack(list(self.ten(self.ds.source.load(i))))
        src: FileSource = self.ds.source  # type: ignore[assignment]
        path = src.paths[i]
        paths = _crop_paths(path, self.ds.root, self.precomputed)
        if len(paths) != N_CROPS:
            raise DatasetError(f"Expected {N_CROPS} precomputed crops for {path} in {self.precomputed} "
                               f"(named {path.stem}_crop_i{path.suffix}), found {len(paths)}.")
        return torch.stack([self.single(read_image(p)) for p in paths])

    def __getitems__(self, items: list[int]) -> Batch:
        """A whole batch at once (the DataLoader's batched fetch); same images as ``__getitem__`` one by one."""
        if self.crops or self.augment is not None:
            return collate_skip_bad([self[item] for item in items])
        decoded, labels, indices, skipped = [], [], [], []
        for item in items:
            i = int(self.indices[item])
            try:
                decoded.append(self.ds.source.load_uint8(i))
            except BadImageError:
                if not self.skip_bad:
                    raise
                skipped.append(i)
                continue
            labels.append(int(self.ds.labels[i]))
            indices.append(i)
        return Batch(resize_batch(decoded, self.prep.input_size), torch.tensor(labels, dtype=torch.long),
                     torch.tensor(indices, dtype=torch.long), skipped)

    def __getitem__(self, item: int):
        i = int(self.indices[item])
        try:
            x = self._load_crops(i) if self.crops else self.single(self.ds.source.load(i))
        except BadImageError:
            if self.skip_bad:
                return None, -1, i
            raise
        if self.augment is not None:
            x = self.augment(x)
        return x, int(self.ds.labels[i]), i


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (N,3,S,S) or (N,10,3,S,S)
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[int]

    def pin_memory(self) -> Batch:
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices, self.skipped)


def resize_batch(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """uint8 (3,H,W) images of any sizes -> one (N,3,size,size) tensor, resized as
    :meth:`Preprocessing.resize_transform` does, one call per distinct input size."""
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for k, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape[-2:]), []).append(k)
    for shape, ks in by_shape.items():
        group = torch.stack([images[k] for k in ks])
        if shape != (size, size):
            group = TF.resize(group, [size, size], antialias=True)
        out[ks] = group
    return out


def collate_skip_bad(items) -> Batch:
    if isinstance(items, Batch):  # fetched whole by ImageBatches.__getitems__
        return items
    good = [it for it in items if it[0] is not None]
    skipped = [it[2] for it in items if it[0] is None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long),
                     torch.empty(0, dtype=torch.long), skipped)
    return Batch(torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.long),
                 torch.tensor([g[2] for g in good], dtype=torch.long), skipped)


def default_num_workers(device: torch.device | None = None) -> int:
    """On a GPU, half the cores (at most 8): workers decode while the GPU runs the network. On the CPU,
    none: the network's forward already keeps every core busy (torch's threads), and a worker steals
    one from it, so its threads wait on each other. Measured at 32 px on 2 cores (docs/benchmarks.md):
    files to features at 0.51 of a bare forward with one worker, 0.85-0.98 without; at 224 px 0.97 / 1.10."""
    if device is None or device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 2) // 2))


def make_loader(images: ImageBatches, batch_size: int, shuffle: bool = False, device: torch.device | None = None,
                num_workers: int | None = None, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader with workers, pinned memory on CUDA, and a seeded shuffle order."""
    workers = default_num_workers(device) if num_workers is None else num_workers
    workers = min(workers, max(0, len(images) // max(batch_size, 1)))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        images,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
        collate_fn=collate_skip_bad,
        generator=generator,
        persistent_workers=False,
        drop_last=drop_last,
        prefetch_factor=4 if workers else None,
    )
