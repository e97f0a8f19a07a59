"""The pool every dataset becomes: where its pixels come from (an image source) and its labels.

An :class:`ImageDataset` is a pool of images with integer labels and, when the data came
with one, a predefined partition (train/val/test). Named datasets and folders are resolved
into one by :mod:`tlcore.data.datasets`; which images train, validate and test a given run
is decided by a :class:`~tlcore.data.splits.SplitSet`. Both build on this module, so it
imports neither.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from tlcore.data.images import array_to_image, image_to_uint8, read_image, read_image_uint8

if TYPE_CHECKING:
    import torch

PARTITIONS = ("train", "val", "test")
#: Folder (and CSV column) names of the partitions: the seed's own DTD and Flowers102 CSVs say "validation".
PARTITION_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                     "test": "test", "testing": "test"}


class ImageSource(Protocol):
    """Where the pixels of a dataset come from: memory, files, or a torchvision dataset."""

    def __len__(self) -> int: ...

    def load(self, i: int) -> Image.Image:
        """The i-th image as RGB."""

    def load_uint8(self, i: int) -> torch.Tensor:
        """The same pixels as ``load`` as a uint8 (3,H,W) tensor (what batches are made of)."""

    def key(self, i: int) -> str:
        """A stable identity: a path for files, ``name/index`` otherwise."""

    def fingerprint(self, i: int) -> str:
        """Changes whenever the image's content may have changed (used by feature caches)."""


class ArraySource:
    """Images held in memory as one numpy array (N, H, W[, C])."""

    def __init__(self, images: np.ndarray, prefix: str) -> None:
        self.images = images
        self.prefix = prefix
        self._hashes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> Image.Image:
        return array_to_image(self.images[i])

    def load_uint8(self, i: int) -> torch.Tensor:
        return image_to_uint8(self.load(i))

    def key(self, i: int) -> str:
        return f"{self.prefix}/{i}"

    def fingerprint(self, i: int) -> str:
        if self._hashes is None:
            self._hashes = [hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=8).hexdigest()
                            for a in self.images]
        return self._hashes[i]


class FileSource:
    """Images stored as files; keys are paths relative to ``root`` when possible."""

    def __init__(self, paths: list[Path], root: Path | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.root = root

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        return read_image(self.paths[i])

    def load_uint8(self, i: int) -> torch.Tensor:
        return read_image_uint8(self.paths[i])

    def key(self, i: int) -> str:
        p = self.paths[i]
        if self.root is not None:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return p.as_posix()

    def fingerprint(self, i: int) -> str:
        try:
            st = os.stat(self.paths[i])
        except OSError:
            return "missing"
        return f"{st.st_size}-{st.st_mtime_ns}"


class TorchvisionSource:
    """A torchvision dataset object; only the image half of its items is used."""

    def __init__(self, dataset, prefix: str) -> None:
        self.dataset = dataset
        self.prefix = prefix

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int) -> Image.Image:
        from tlcore.data.images import to_rgb

        img = self.dataset[i][0]
        return to_rgb(img) if isinstance(img, Image.Image) else array_to_image(np.asarray(img))

    def load_uint8(self, i: int) -> torch.Tensor:
        return image_to_uint8(self.load(i))

    def key(self, i: int) -> str:
        return f"{self.prefix}/{i}"

    def fingerprint(self, i: int) -> str:
        return self.key(i)


class ConcatSource:
    """Several sources end to end (torchvision's official splits joined into one pool)."""

    def __init__(self, sources: list) -> None:
        self.sources = sources
        self.offsets = np.cumsum([0] + [len(s) for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int):
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.sources[j], i - int(self.offsets[j])

    def load(self, i: int) -> Image.Image:
        s, k = self._locate(i)
        return s.load(k)

    def load_uint8(self, i: int) -> torch.Tensor:
        s, k = self._locate(i)
        return s.load_uint8(k)

    def key(self, i: int) -> str:
        s, k = self._locate(i)
        return s.key(k)

    def fingerprint(self, i: int) -> str:
        s, k = self._locate(i)
        return s.fingerprint(k)


class SubsetSource:
    """A view of another source through an index array (class filters)."""

    def __init__(self, base, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> Image.Image:
        return self.base.load(int(self.indices[i]))

    def load_uint8(self, i: int) -> torch.Tensor:
        return self.base.load_uint8(int(self.indices[i]))

    def key(self, i: int) -> str:
        return self.base.key(int(self.indices[i]))

    def fingerprint(self, i: int) -> str:
        return self.base.fingerprint(int(self.indices[i]))


@dataclass
class ImageDataset:
    """A labelled pool of images.

    ``partition`` holds "train"/"val"/"test" per image when the data came split (a folder in
    the seed layout, a torchvision dataset's official splits); it is ``None`` otherwise.
    """

    name: str
    classes: list[str]
    source: ImageSource
    labels: np.ndarray
    partition: np.ndarray | None = None
    root: Path | None = None
    description: str = ""
    kind: str = "embedded"  # embedded | folder | torchvision
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.source):
            raise ValueError("labels and images differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, indices: np.ndarray | None = None) -> np.ndarray:
        labels = self.labels if indices is None else self.labels[indices]
        return np.bincount(labels, minlength=self.num_classes)

    def index_of_keys(self) -> dict[str, int]:
        return {self.source.key(i): i for i in range(len(self))}

    def subset(self, indices: np.ndarray, classes: list[str], relabel: dict[int, int], name: str) -> ImageDataset:
        indices = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            name=name,
            classes=classes,
            source=SubsetSource(self.source, indices),
            labels=np.array([relabel[int(y)] for y in self.labels[indices]], dtype=np.int64),
            partition=None if self.partition is None else self.partition[indices],
            root=self.root,
            description=self.description,
            kind=self.kind,
            notes=list(self.notes),
        )

