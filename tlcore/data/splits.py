"""Few-shot splits in the seed's format: ``train_samples_{spc:02d}_split_{k}.csv``, ``val.csv``, ``test.csv``.

CSVs have no header and four columns, ``relative_path,split,filename,label``; the path starts
with the dataset folder's name (``textures/train/marbled/marbled_0102.jpg``). Generated splits
are stratified and seeded, and train draws never share an image with val or test. Loaded split
sets are checked: missing files and unknown labels are errors, overlaps are warnings (the seed's
own CUB200 and DTD splits have them).
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcore.data.sources import PARTITION_ALIASES, FileSource, ImageDataset
from tlcore.errors import DatasetError

#: The seed's samples-per-class grid; the largest balanced size is always added.
SPC_GRID = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750, 1000)
N_DRAWS = 5
VAL_PER_CLASS = 10
TEST_FRACTION = 0.3
_TRAIN_RE = re.compile(r"^train_samples_(\d+)_split_(\d+)\.csv$")


class SplitOverlapWarning(UserWarning):
    """A loaded split set shares images between train, val and test."""


@dataclass
class SplitSet:
    """Which images train (per samples-per-class and draw), validate and test."""

    train: dict[int, list[np.ndarray]]
    val: np.ndarray
    test: np.ndarray
    origin: str
    warnings: list[str] = field(default_factory=list)

    @property
    def spc_values(self) -> list[int]:
        return sorted(self.train)

    @property
    def largest_spc(self) -> int:
        return max(self.train)

    def draws(self, spc: int) -> int:
        return len(self.train.get(spc, []))

    def train_split(self, spc: int, k: int = 0) -> np.ndarray:
        try:
            return self.train[spc][k]
        except (KeyError, IndexError):
            have = ", ".join(f"{s} ({len(d)} draws)" for s, d in sorted(self.train.items()))
            raise DatasetError(
                f"No training split for {spc} samples per class, draw {k}; this split set has: {have}."
            ) from None


def spc_grid_up_to(largest: int) -> list[int]:
    """The seed's grid below ``largest``, then ``largest`` itself (the full balanced set)."""
    grid = [s for s in SPC_GRID if s < largest]
    return [*grid, largest] if largest >= 1 else grid


def _stratified_take(rng: np.random.Generator, pool: np.ndarray, labels: np.ndarray, per_class: int,
                     num_classes: int) -> np.ndarray:
    chosen = []
    for c in range(num_classes):
        members = pool[labels[pool] == c]
        chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def generate_splits(ds: ImageDataset, seed: int = 0, spc_values: list[int] | None = None,
                    n_draws: int = N_DRAWS, val_per_class: int = VAL_PER_CLASS,
                    test_fraction: float = TEST_FRACTION) -> SplitSet:
    """Stratified, seeded splits: test and val first, then train draws from what is left.

    A dataset with its own partition keeps its test (and val) images; otherwise
    ``test_fraction`` of each class is held out for test and ``val_per_class`` for val.
    Every spc value gets ``n_draws`` draws except the largest balanced size, which has one.
    """
    rng = np.random.default_rng([seed, 7919])
    labels, n = ds.labels, ds.num_classes
    everything = np.arange(len(ds))
    if ds.partition is not None and (ds.partition == "test").any():
        test = everything[ds.partition == "test"]
        rest = everything[ds.partition != "test"]
    else:
        test_parts = []
        for c in range(n):
            members = everything[labels == c]
            k = round(len(members) * test_fraction)
            k = min(max(k, 1), len(members) - 1) if len(members) > 1 else 0
            test_parts.append(rng.choice(members, size=k, replace=False))
        test = np.sort(np.concatenate(test_parts))
        rest = np.setdiff1d(everything, test)
    if ds.partition is not None and (ds.partition == "val").any():
        val = everything[ds.partition == "val"]
        val = _stratified_take(rng, val, labels, val_per_class, n)
    else:
        counts = np.bincount(labels[rest], minlength=n)
        per_class = min(val_per_class, max(int(counts.min()) // 3, 1 if counts.min() >= 2 else 0))
        val = _stratified_take(rng, rest, labels, per_class, n)
    pool = np.setdiff1d(rest, val)
    pool_counts = np.bincount(labels[pool], minlength=n)
    largest = int(pool_counts.min())
    if largest < 1:
        empty = [ds.classes[c] for c in range(n) if pool_counts[c] == 0]
        raise DatasetError(
            f"Class(es) {', '.join(empty)} of {ds.name} have no images left for training after val and test; "
            "add images or drop those classes with a class filter."
        )
    wanted = spc_grid_up_to(largest) if spc_values is None else sorted(set(spc_values))
    too_big = [s for s in wanted if s > largest]
    if too_big:
        smallest = ds.classes[int(pool_counts.argmin())]
        raise DatasetError(
            f"{too_big[0]} samples per class is more than {ds.name} can give: class {smallest!r} has only "
            f"{largest} training images once val and test are set aside; use at most {largest}."
        )
    train: dict[int, list[np.ndarray]] = {}
    for spc in wanted:
        draws = 1 if spc == largest else n_draws
        train[spc] = [
            _stratified_take(np.random.default_rng([seed, spc, k]), pool, labels, spc, n) for k in range(draws)
        ]
    return SplitSet(train, np.sort(val), np.sort(test), origin=f"generated (seed {seed})")


# ---------------------------------------------------------------------------------------------
# CSV files


def _split_file_name(spc: int, k: int) -> str:
    return f"train_samples_{spc:02d}_split_{k}.csv"


def _relative_path(ds: ImageDataset, i: int) -> str:
    key = ds.source.key(i)
    return f"{ds.root.name}/{key}" if ds.root is not None and not Path(key).is_absolute() else key


def _rows(ds: ImageDataset, indices: np.ndarray) -> list[list[str]]:
    out = []
    for i in indices:
        rel = _relative_path(ds, int(i))
        part = ds.partition[int(i)] if ds.partition is not None else "train"
        out.append([rel, part, Path(rel).name, ds.classes[int(ds.labels[int(i)])]])
    return out


def write_split_csvs(ds: ImageDataset, splits: SplitSet, out_dir: str | Path) -> list[Path]:
    """Write a split set in the seed's format; returns the files written."""
    if ds.kind != "folder":
        raise DatasetError(
            f"Split CSVs name image files, and {ds.name} is not a folder dataset; its splits are generated from "
            "--seed each time instead."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name: str, indices: np.ndarray) -> None:
        path = out / name
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(_rows(ds, indices))
        written.append(path)

    write("all_images.csv", np.arange(len(ds)))
    write("val.csv", splits.val)
    write("test.csv", splits.test)
    for spc, draws in splits.train.items():
        for k, idx in enumerate(draws):
            write(_split_file_name(spc, k), idx)
    return written


def find_split_dir(ds: ImageDataset, split_path: str | Path | None) -> Path | None:
    """The folder holding split CSVs: ``split_path``, else ``<root>/splits``, else the root itself."""
    if split_path:
        p = Path(split_path).expanduser()
        if not p.is_dir():
            raise DatasetError(f"Split folder {p} does not exist; pass the folder that holds val.csv and test.csv.")
        return p
    if ds.root is None or ds.kind != "folder":
        return None
    for candidate in (ds.root / "splits", ds.root):
        if (candidate / "test.csv").is_file():
            return candidate
    return None


def _csv_roots(split_dir: Path) -> list[Path]:
    """Where a CSV's relative paths may start: the working directory (the seed opened them from
    there), the split folder and its parents (``data/splits/dtd/`` beside ``data/textures/``)."""
    split_dir = Path(split_dir).resolve()
    return [Path.cwd(), split_dir, *list(split_dir.parents)[:3]]


def _resolve(rel: str, ds: ImageDataset, split_dir: Path) -> Path:
    p = Path(rel)
    if p.is_absolute():
        return p
    roots = [r for r in (ds.root, ds.root.parent if ds.root else None) if r is not None] + _csv_roots(split_dir)
    for r in roots:
        if (r / p).exists():
            return (r / p).resolve()
    return (roots[0] / p).resolve()


def _read_csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of each non-blank row of one split CSV, checked to hold the seed's 4 columns."""
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 4:
                raise DatasetError(f"{path.name}, line {line_no}: expected 4 columns "
                                   f"(relative_path,split,filename,label), got {len(row)}.")
            yield line_no, row


def _csv_rows(split_dir: Path) -> list[tuple[str, str, str, str]]:
    """(file, relative path, partition column, label) of every row of a split folder's CSVs."""
    files = [split_dir / n for n in ("all_images.csv", "val.csv", "test.csv") if (split_dir / n).is_file()]
    files += sorted(p for p in split_dir.iterdir() if _TRAIN_RE.match(p.name))
    return [(path.name, row[0].strip(), row[1].strip(), row[3].strip())
            for path in files for _, row in _read_csv_rows(path)]


def csv_dataset(name: str, split_path: str | Path) -> ImageDataset:
    """The seed's ``--dataset NAME --split-path DIR``: the images its split CSVs list, read from the
    CSVs' paths (relative to the working directory, the split folder or its parents, or absolute).

    Classes are the sorted labels of the CSVs, partitions their split column (``validation`` is
    val). The dataset root is the folder holding the split folders (``textures/`` for
    ``textures/train/marbled/x.jpg``), so precomputed crops mirror it as in the seed.
    """
    split_dir = Path(split_path).expanduser()
    if not split_dir.is_dir():
        raise DatasetError(f"Split folder {split_dir} does not exist; pass the folder that holds val.csv and test.csv.")
    rows = _csv_rows(split_dir)
    if not rows:
        raise DatasetError(f"Split folder {split_dir} has no split CSVs (val.csv, test.csv, "
                           f"train_samples_XX_split_K.csv) naming the images of dataset {name!r}.")
    roots = _csv_roots(split_dir)
    seen: dict[str, tuple[Path, str, str]] = {}
    missing = []
    for _file, rel, part, label in rows:
        if rel in seen:
            continue
        p = Path(rel).expanduser()
        found = p if p.is_absolute() and p.is_file() else next(
            ((r / p).resolve() for r in roots if not p.is_absolute() and (r / p).is_file()), None)
        if found is None:
            missing.append(rel)
            continue
        seen[rel] = (found, PARTITION_ALIASES.get(part.lower(), "train"), label)
    if missing:
        where = ", ".join(str(r) for r in roots[:3])
        raise DatasetError(f"{len(missing)} image(s) listed in the split CSVs in {split_dir} for dataset {name!r} do "
                           f"not exist, first: {missing[0]} (relative paths are read from {where} or the split "
                           "folder's parents); run from the folder the CSV paths start in, or fix the paths.")
    files = sorted({v[0] for v in seen.values()})
    info = {v[0]: v for v in seen.values()}
    classes = sorted({v[2] for v in seen.values()})
    index = {c: i for i, c in enumerate(classes)}
    tops = {f.parents[2] for f in files if len(f.parents) > 2}
    root = tops.pop() if len(tops) == 1 else None
    return ImageDataset(
        name=name, classes=classes, source=FileSource(files, root),
        labels=np.array([index[info[f][2]] for f in files], dtype=np.int64),
        partition=np.array([info[f][1] for f in files], dtype=object), root=root,
        description=f"{name}: the images listed by the split CSVs in {split_dir}", kind="folder")


def load_split_csvs(ds: ImageDataset, split_dir: str | Path, n_splits: int | None = None) -> SplitSet:
    """Read a seed-format split set and check it against the dataset.

    Paths resolve against the dataset root, its parent (the seed's paths start with the dataset
    folder's name) or the split folder, or are absolute.
    """
    split_dir = Path(split_dir)
    for required in ("val.csv", "test.csv"):
        if not (split_dir / required).is_file():
            raise DatasetError(f"Split folder {split_dir} has no {required}; it must hold val.csv, test.csv and "
                               "train_samples_XX_split_K.csv files.")
    train_files = sorted((int(m.group(1)), int(m.group(2)), p) for p in split_dir.iterdir()
                         if (m := _TRAIN_RE.match(p.name)))
    if not train_files:
        raise DatasetError(f"Split folder {split_dir} has no train_samples_XX_split_K.csv files.")
    by_path = {}
    if ds.kind == "folder":
        by_path = {Path(p).resolve(): i for i, p in enumerate(ds.source.paths)}
    class_index = {c: i for i, c in enumerate(ds.classes)}
    missing: list[str] = []
    unknown: list[str] = []
    extra_paths: list[Path] = []
    extra_labels: list[int] = []

    def read(path: Path) -> np.ndarray:
        idx = []
        for line_no, row in _read_csv_rows(path):
            rel, label = row[0].strip(), row[3].strip()
            if label not in class_index:
                unknown.append(f"{label!r} ({path.name}, line {line_no})")
                continue
            file = _resolve(rel, ds, split_dir)
            if file in by_path:
                idx.append(by_path[file])
            elif file.is_file():
                by_path[file] = len(ds) + len(extra_paths)
                extra_paths.append(file)
                extra_labels.append(class_index[label])
                idx.append(by_path[file])
            else:
                missing.append(str(file))
        return np.array(sorted(set(idx)), dtype=np.int64)

    val = read(split_dir / "val.csv")
    test = read(split_dir / "test.csv")
    train: dict[int, list[np.ndarray]] = {}
    for spc, k, path in train_files:
        if n_splits is not None and k >= n_splits:
            continue
        train.setdefault(spc, []).append(read(path))
    if unknown:
        raise DatasetError(
            f"Split CSVs in {split_dir} name {len(unknown)} label(s) that are not classes of {ds.name}, first: "
            f"{unknown[0]}; the dataset's classes are its folder names ({', '.join(ds.classes[:8])}...)."
        )
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) listed in the split CSVs in {split_dir} do not exist, first: {missing[0]}; "
            "fix the paths or regenerate the splits with `python -m tlcore splits`."
        )
    if extra_paths:  # CSVs may name images outside the scanned layout: append them to the pool
        src: FileSource = ds.source  # type: ignore[assignment]
        src.paths.extend(extra_paths)
        ds.labels = np.concatenate([ds.labels, np.array(extra_labels, dtype=np.int64)])
        if ds.partition is not None:
            ds.partition = np.concatenate([ds.partition, np.array(["train"] * len(extra_paths), dtype=object)])
    found = _overlaps(train, val, test)
    split_set = SplitSet(train, val, test, origin=f"csv: {split_dir}")
    if found:
        msg = (f"Split CSVs in {split_dir}: " + "; ".join(found) +
               ". Scores on the overlapping set are optimistic; regenerate disjoint splits with "
               "`python -m tlcore splits`.")
        split_set.warnings.append(msg)
        warnings.warn(msg, SplitOverlapWarning, stacklevel=2)
    return split_set


def _overlaps(train: dict[int, list[np.ndarray]], val: np.ndarray, test: np.ndarray) -> list[str]:
    """One phrase per pair of sets (train, val, test) that share images."""
    found = []
    all_train = np.unique(np.concatenate([d for ds_ in train.values() for d in ds_]))
    for a_name, a, b_name, b in (("train", all_train, "val", val), ("train", all_train, "test", test),
                                 ("val", val, "test", test)):
        shared = np.intersect1d(a, b)
        if len(shared):
            found.append(f"{len(shared)} image(s) are in both {a_name} and {b_name}")
    return found


def resolve_splits(ds: ImageDataset, split_path: str | Path | None = None, seed: int = 0,
                   n_splits: int | None = None, spc_values: list[int] | None = None) -> SplitSet:
    """CSV splits when a folder holds them, else generated ones; ``n_splits`` keeps draws 0..n-1."""
    split_dir = find_split_dir(ds, split_path)
    if split_dir is not None:
        splits = load_split_csvs(ds, split_dir, n_splits)
        if spc_values:
            absent = [s for s in spc_values if s not in splits.train]
            if absent:
                raise DatasetError(
                    f"The split CSVs in {split_dir} have no file for {absent[0]} samples per class; they hold "
                    f"{', '.join(map(str, splits.spc_values))}."
                )
            splits.train = {s: splits.train[s] for s in spc_values}
        return splits
    splits = generate_splits(ds, seed=seed, spc_values=spc_values)
    if n_splits is not None:
        splits.train = {s: d[:n_splits] for s, d in splits.train.items()}
    return splits
