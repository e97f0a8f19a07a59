"""Torchvision datasets, loaded from a data directory and downloaded only when asked.

Each official split becomes a partition of one pool, so the split generator can keep the
official test set as the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlcore.data.datasets import ConcatSource, ImageDataset, TorchvisionSource, register_dataset
from tlcore.errors import DatasetError

# name -> (torchvision class, [(constructor kwargs, partition)], expected sub-folder, description)
_SPECS: dict[str, tuple[str, list[tuple[dict, str]], str]] = {
    "cifar10": ("CIFAR10", [({"train": True}, "train"), ({"train": False}, "test")], "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", [({"train": True}, "train"), ({"train": False}, "test")], "cifar-100-python"),
    "dtd": ("DTD", [({"split": "train"}, "train"), ({"split": "val"}, "val"), ({"split": "test"}, "test")], "dtd"),
    "flowers102": ("Flowers102", [({"split": "train"}, "train"), ({"split": "val"}, "val"),
                                  ({"split": "test"}, "test")], "flowers-102"),
    "oxford_pets": ("OxfordIIITPet", [({"split": "trainval"}, "train"), ({"split": "test"}, "test")],
                    "oxford-iiit-pet"),
    "food101": ("Food101", [({"split": "train"}, "train"), ({"split": "test"}, "test")], "food-101"),
    "caltech101": ("Caltech101", [({}, None)], "caltech101"),
    # QUANTA's other tasks (its -s/-t choices): 28x28 grey, made RGB and resized like any image
    "mnist": ("MNIST", [({"train": True}, "train"), ({"train": False}, "test")], "MNIST"),
    "fashion_mnist": ("FashionMNIST", [({"train": True}, "train"), ({"train": False}, "test")], "FashionMNIST"),
}


def _labels_of(ds) -> list[int]:
    for attr in ("targets", "_labels", "y"):
        if hasattr(ds, attr):
            return [int(y) for y in getattr(ds, attr)]
    return [int(ds[i][1]) for i in range(len(ds))]  # pragma: no cover - every listed class has one


def _classes_of(ds, n: int) -> list[str]:
    for attr in ("classes", "categories"):
        if getattr(ds, attr, None):
            return [str(c) for c in getattr(ds, attr)]
    return [str(i) for i in range(n)]


def load_torchvision(name: str, data_dir: Path, download: bool) -> ImageDataset:
    import torchvision.datasets as tvd

    cls_name, parts, folder = _SPECS[name]
    cls = getattr(tvd, cls_name)
    root = Path(data_dir) / name
    sources, labels, partition, classes = [], [], [], None
    for kwargs, part in parts:
        try:
            ds = cls(root=str(root), download=download, **kwargs)
        except RuntimeError as exc:
            if download:
                raise DatasetError(
                    f"Downloading {name} into {root} failed ({exc}); check the network and disk space."
                ) from None
            raise DatasetError(
                f"{name} was not found in {root} (expected {root / folder}); put its files there, set "
                f"--data-dir, or pass --download to fetch it (needs network)."
            ) from None
        except OSError as exc:  # URLError is an OSError: no network
            raise DatasetError(
                f"Could not download {name} into {root}: {exc}. This machine may be offline; copy the files to "
                f"{root / folder} instead."
            ) from None
        y = _labels_of(ds)
        classes = classes or _classes_of(ds, max(y) + 1)
        sources.append(TorchvisionSource(ds, f"{name}/{part or 'all'}"))
        labels.extend(y)
        partition.extend([part] * len(y))
    has_partition = all(p is not None for p in partition)
    return ImageDataset(
        name=name,
        classes=classes,
        source=ConcatSource(sources) if len(sources) > 1 else sources[0],
        labels=np.array(labels, dtype=np.int64),
        partition=np.array(partition, dtype=object) if has_partition else None,
        root=root,
        description=f"torchvision {cls_name}",
        kind="torchvision",
    )


def _make(name: str, description: str, num_classes: int):
    def loader(data_dir: Path | None = None, download: bool = False) -> ImageDataset:
        from tlcore.data.datasets import default_data_dir

        return load_torchvision(name, Path(data_dir) if data_dir else default_data_dir(), download)

    loader.__name__ = name
    loader.__doc__ = description
    return register_dataset(kind="torchvision", description=description, num_classes=num_classes)(loader)


def torchvision_files_present(name: str, data_dir: Path) -> bool:
    """Whether a torchvision dataset's folder exists (a cheap check for the Run page)."""
    return (Path(data_dir) / name / _SPECS[name][2]).exists()


cifar10 = _make("cifar10", "CIFAR-10: 60,000 32x32 photos, 10 classes (download when asked)", 10)
cifar100 = _make("cifar100", "CIFAR-100: 60,000 32x32 photos, 100 classes (download when asked)", 100)
dtd = _make("dtd", "Describable Textures: 5,640 images, 47 textures (download when asked)", 47)
flowers102 = _make("flowers102", "Oxford Flowers-102: 8,189 images, 102 species (download when asked)", 102)
oxford_pets = _make("oxford_pets", "Oxford-IIIT Pets: 7,349 images, 37 breeds (download when asked)", 37)
food101 = _make("food101", "Food-101: 101,000 images, 101 dishes (download when asked)", 101)
caltech101 = _make("caltech101", "Caltech-101: 9,146 images, 101 objects + background (download when asked)", 101)
mnist = _make("mnist", "MNIST: 70,000 28x28 handwritten digits, 10 classes (download when asked)", 10)
fashion_mnist = _make("fashion_mnist", "Fashion-MNIST: 70,000 28x28 clothing images, 10 classes (download when asked)",
                      10)
