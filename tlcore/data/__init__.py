"""Datasets: a registry of named sources, folder datasets in the seed layout, splits and batches.

    >>> from tlcore.data import load_dataset, resolve_splits
    >>> ds = load_dataset("digits:0-4")
    >>> splits = resolve_splits(ds, seed=0, spc_values=[5, 10])
"""

from tlcore.data import torchvision_sets  # noqa: F401  (registers the torchvision datasets)
from tlcore.data.datasets import (
    DatasetInfo,
    ImageDataset,
    apply_class_filter,
    dataset_info,
    datasets,
    default_data_dir,
    load_dataset,
    register_dataset,
    scan_folder,
    split_class_filter,
)
from tlcore.data.images import BadImageError, read_image, to_rgb
from tlcore.data.splits import (
    SPC_GRID,
    SplitOverlapWarning,
    SplitSet,
    generate_splits,
    load_split_csvs,
    resolve_splits,
    spc_grid_up_to,
    write_split_csvs,
)

__all__ = [
    "SPC_GRID",
    "BadImageError",
    "DatasetInfo",
    "ImageDataset",
    "SplitOverlapWarning",
    "SplitSet",
    "apply_class_filter",
    "dataset_info",
    "datasets",
    "default_data_dir",
    "generate_splits",
    "load_dataset",
    "load_split_csvs",
    "read_image",
    "register_dataset",
    "resolve_splits",
    "scan_folder",
    "spc_grid_up_to",
    "split_class_filter",
    "to_rgb",
    "write_split_csvs",
]
