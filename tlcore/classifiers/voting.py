"""Majority vote over an image's crops: shared by the classifiers of feature extraction and by fine-tuning's
test pass (the seed's 10-crop evaluation)."""

from __future__ import annotations

import numpy as np


def vote(crop_predictions: np.ndarray, crop_scores: np.ndarray | None = None) -> np.ndarray:
    """Majority vote over each image's crops: (n_images, n_crops) labels -> (n_images,).

    Ties go to the tied class with the highest summed score when scores (n_images, n_crops,
    n_classes) are given, else to the smallest label.
    """
    crop_predictions = np.asarray(crop_predictions)
    n_classes = int(crop_predictions.max()) + 1 if crop_scores is None else crop_scores.shape[-1]
    counts = np.zeros((len(crop_predictions), n_classes))
    rows = np.repeat(np.arange(len(crop_predictions)), crop_predictions.shape[1])
    np.add.at(counts, (rows, crop_predictions.ravel()), 1)
    if crop_scores is not None:
        tie_break = crop_scores.sum(axis=1)
        tie_break = (tie_break - tie_break.min()) / (np.ptp(tie_break) + 1e-12) * 0.5  # < one vote
        counts = counts + tie_break
    return counts.argmax(axis=1)
