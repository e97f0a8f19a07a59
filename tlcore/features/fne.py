"""Full-network embedding (FNE) post-processing of raw features (pure numpy).

Standardised per feature with the *training* statistics (or, repeating the seed, each set with its
own), then discretised to {-1, 0, 1} at the thresholds. Apart from the extractor so that every
method that feeds cached features to a classifier post-processes them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ZERO_STD = 1e-8  # features whose training std is below this are constant: standardised to 0


def standardization_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over every row (every crop) of ``x`` (..., D), in float64."""
    rows = x.reshape(-1, x.shape[-1])
    return rows.mean(axis=0, dtype=np.float64), rows.std(axis=0, dtype=np.float64)


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """z-scores with given statistics; a feature constant in the statistics' set becomes 0 everywhere."""
    scale = np.where(std > ZERO_STD, 1.0 / np.maximum(std, ZERO_STD), 0.0).astype(np.float32)
    return (np.asarray(x, dtype=np.float32) - mean.astype(np.float32)) * scale


def discretize(z: np.ndarray, high: float = 0.15, low: float = -0.25) -> np.ndarray:
    """FNE's ternary code: > high -> 1, < low -> -1, else 0 (int8)."""
    out = np.zeros(z.shape, dtype=np.int8)
    out[z > high] = 1
    out[z < low] = -1
    return out


def full_network_embedding(train: np.ndarray, others: Sequence[np.ndarray], statistics: str = "train",
                           discretize_values: bool = True, high: float = 0.15,
                           low: float = -0.25) -> list[np.ndarray]:
    """Post-process raw features: ``[train, *others]`` standardised (and discretised).

    ``statistics="train"`` applies the training statistics to every set (FNE); ``"per_set"``
    gives each set its own (the seed's behaviour, which leaks test statistics).
    """
    if statistics not in ("train", "per_set"):
        raise ValueError(f"statistics must be 'train' or 'per_set', got {statistics!r}")
    mean, std = standardization_stats(train)
    out = []
    for x in (train, *others):
        if statistics == "per_set" and x is not train:
            mean, std = standardization_stats(x) if len(x) else (mean, std)
        z = standardize(x, mean, std)
        out.append(discretize(z, high, low) if discretize_values else z)
    return out
