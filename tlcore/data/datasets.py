"""Image datasets: a registry of named sources, folder datasets in the seed layout, class filters.

:func:`load_dataset` resolves a name (registered, a folder, or the images a split folder's
CSVs list) into an :class:`~tlcore.data.sources.ImageDataset`, the pool defined in
:mod:`tlcore.data.sources`. Which images train, validate and test a given run is decided by a
:class:`~tlcore.data.splits.SplitSet`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcore.data.images import IMAGE_EXTENSIONS
from tlcore.data.sources import (  # the pool's types; re-exported: loading, resolution and torchvision_sets use them
    PARTITION_ALIASES,
    PARTITIONS,
    ArraySource,
    ConcatSource,
    FileSource,
    ImageDataset,
    ImageSource,
    SubsetSource,
    TorchvisionSource,
)
from tlcore.data.splits import csv_dataset
from tlcore.errors import DatasetError
from tlcore.registry import Registry

__all__ = [
    "PARTITIONS", "PARTITION_ALIASES", "ArraySource", "ConcatSource", "DatasetInfo", "FileSource", "ImageDataset",
    "ImageSource", "SubsetSource", "TorchvisionSource", "apply_class_filter", "dataset_info", "datasets",
    "default_data_dir", "load_dataset", "parse_class_filter", "register_dataset", "scan_folder", "split_class_filter",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What the home and Run pages show for a registered dataset, without loading it."""

    name: str
    kind: str
    description: str
    num_classes: int | None
    num_images: int | None
    needs_download: bool


datasets: Registry = Registry("dataset", DatasetError)
_INFO: dict[str, DatasetInfo] = {}
_CACHE: dict[tuple, ImageDataset] = {}


def register_dataset(*, kind: str, description: str, num_classes: int | None = None,
                     num_images: int | None = None):
    """Register a loader ``fn(data_dir: Path, download: bool) -> ImageDataset`` under its name."""

    def deco(fn):
        datasets.register(fn)
        _INFO[fn.__name__] = DatasetInfo(fn.__name__, kind, description, num_classes, num_images,
                                         kind == "torchvision")
        return fn

    return deco


def dataset_info() -> list[DatasetInfo]:
    return [_INFO[n] for n in datasets.names()]


# ---------------------------------------------------------------------------------------------
# Embedded datasets (ship with scikit-learn / scikit-image; no download, ever)


@register_dataset(kind="embedded", description="scikit-learn handwritten digits: 1,797 8x8 grey images",
                  num_classes=10, num_images=1797)
def digits(data_dir: Path | None = None, download: bool = False) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    return ImageDataset("digits", [str(c) for c in d.target_names], ArraySource(images, "digits"), d.target,
                        description="Handwritten digits 0-9 (UCI, via scikit-learn), 8x8 greyscale.")


@register_dataset(kind="embedded", description="scikit-image LFW subset: 200 25x25 faces and non-faces",
                  num_classes=2, num_images=200)
def lfw_faces(data_dir: Path | None = None, download: bool = False) -> ImageDataset:
    from skimage import data as skdata

    images = (skdata.lfw_subset() * 255.0).round().astype(np.uint8)
    labels = np.array([0] * 100 + [1] * 100)  # skimage documents: first 100 faces, then 100 non-faces
    return ImageDataset("lfw_faces", ["face", "non_face"], ArraySource(images, "lfw_faces"), labels,
                        description="Labeled Faces in the Wild subset (via scikit-image), 25x25 greyscale.")


# ---------------------------------------------------------------------------------------------
# Folder datasets: root/<split>/<label>/image.ext (the seed layout) or root/<label>/image.ext


def scan_folder(root: Path) -> ImageDataset:
    """Index a folder dataset without reading any pixels."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset folder {root} does not exist or is not a folder.")
    sub = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in sub if p.name.lower() in PARTITION_ALIASES]
    entries: list[tuple[Path, str, str | None]] = []
    if split_dirs:
        for sd in split_dirs:
            for label_dir in sorted(p for p in sd.iterdir() if p.is_dir()):
                for f in sorted(label_dir.iterdir()):
                    if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                        entries.append((f, label_dir.name, PARTITION_ALIASES[sd.name.lower()]))
    else:
        for label_dir in sub:
            if label_dir.name == "splits":
                continue
            for f in sorted(label_dir.iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                    entries.append((f, label_dir.name, None))
    if not entries:
        raise DatasetError(
            f"No images found in {root}; expected root/<split>/<label>/image.ext (split = train, val, test) "
            "or root/<label>/image.ext."
        )
    classes = sorted({label for _, label, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    partition = np.array([s for _, _, s in entries], dtype=object) if split_dirs else None
    return ImageDataset(
        name=str(root),
        classes=classes,
        source=FileSource([e[0] for e in entries], root),
        labels=np.array([index[label] for _, label, _ in entries], dtype=np.int64),
        partition=partition,
        root=root,
        description=f"Folder dataset at {root}",
        kind="folder",
    )


# ---------------------------------------------------------------------------------------------
# Class filters: "digits:0-4", "digits:1,3,5", "cifar10:cat,dog"

_FILTER_RE = re.compile(r"^[\w\-\s]+(?:,[\w\-\s]+)*$")


def split_class_filter(name: str) -> tuple[str, str | None]:
    """Split ``base:filter``; a colon inside a path (``C:\\data``) is not a filter."""
    if ":" not in name:
        return name, None
    base, _, flt = name.rpartition(":")
    if len(base) <= 1 or not flt or "/" in flt or "\\" in flt or not _FILTER_RE.match(flt):
        return name, None
    return base, flt


def parse_class_filter(flt: str, classes: list[str], dataset: str) -> list[int]:
    """Class indices selected by a filter, in the order given; ranges are inclusive."""
    chosen: list[int] = []
    for part in (p.strip() for p in flt.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise DatasetError(f"Class range {part!r} in {dataset!r} runs backwards; write it low-high, e.g. 0-4.")
            idx = list(range(lo, hi + 1))
        elif part in classes:
            idx = [classes.index(part)]
        elif part.isdigit():
            idx = [int(part)]
        else:
            raise DatasetError(
                f"Class {part!r} is not in dataset {dataset!r}; use class indices 0-{len(classes) - 1} or names "
                f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})."
            )
        for i in idx:
            if i >= len(classes):
                raise DatasetError(
                    f"Class index {i} is out of range for dataset {dataset!r}, which has {len(classes)} classes "
                    f"(0-{len(classes) - 1})."
                )
            if i not in chosen:
                chosen.append(i)
    if len(chosen) < 2:
        raise DatasetError(f"The class filter {flt!r} keeps {len(chosen)} class; a task needs at least two classes.")
    return chosen


def apply_class_filter(ds: ImageDataset, flt: str) -> ImageDataset:
    keep = parse_class_filter(flt, ds.classes, ds.name)
    relabel = {old: new for new, old in enumerate(keep)}
    mask = np.isin(ds.labels, keep)
    return ds.subset(np.flatnonzero(mask), [ds.classes[i] for i in keep], relabel, f"{ds.name}:{flt}")


# ---------------------------------------------------------------------------------------------
# Entry point


def default_data_dir() -> Path:
    """Where torchvision datasets are looked for: $TLCORE_DATA_DIR, else ~/.cache/tlcore/datasets."""
    return Path(os.environ.get("TLCORE_DATA_DIR", Path.home() / ".cache" / "tlcore" / "datasets")).expanduser()


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False,
                 split_path: str | Path | None = None) -> ImageDataset:
    """Resolve a dataset name: a registered name, a folder path, each with an optional class filter.

    With ``split_path`` (the seed's ``--dataset textures --split-path DIR``), a name that is not an
    existing folder names the images the split CSVs list, read from the CSVs' paths, even when it is
    also a registered name (the seed's ``flowers102`` is its own files, not torchvision's).

    Example:
        >>> ds = load_dataset("digits:0-4")
        >>> ds.classes
        ['0', '1', '2', '3', '4']
    """
    if not name or not str(name).strip():
        raise DatasetError("No dataset given; pass a registered name (e.g. digits) or a folder path.")
    name = str(name).strip()
    base, flt = split_class_filter(name)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if split_path and not Path(base).expanduser().is_dir():
        ds = csv_dataset(base, split_path)
    elif base in datasets:
        key = (base, str(data_dir))
        ds = _CACHE.get(key)
        if ds is None:
            ds = datasets.get(base)(data_dir=data_dir, download=download)
            if _INFO[base].kind == "embedded":
                _CACHE[key] = ds
    elif Path(base).expanduser().exists():
        ds = scan_folder(Path(base).expanduser().resolve())
    else:
        raise DatasetError(
            f"Unknown dataset {base!r}: it is neither a registered name ({', '.join(datasets.names())}) "
            "nor an existing folder."
        )
    return apply_class_filter(ds, flt) if flt else ds
