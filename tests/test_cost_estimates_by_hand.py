"""The Run page's cost estimate, with image counts done by hand on the small folder dataset
(3 classes x 20 train / 5 val / 8 test images): the estimate must count what the run will process."""

from __future__ import annotations

import pytest

from tlcore.planning import estimate_cost
from tlcore.specs import ExperimentSpec

TRAIN_POOL, VAL, TEST = 60, 15, 24  # 3 x 20, 3 x 5, 3 x 8


def test_fe_counts_each_image_of_the_curve_once(digits_folder):
    # 5 per class (2 draws) and 20 per class (all 60 training images, 1 draw): every training image is used
    spec = ExperimentSpec("fe", str(digits_folder), samples_per_class=(5, 20), splits=2, resolution=32)
    est = estimate_cost(spec)
    assert est.runs == 3 + 1  # 2 + 1 points and the sweep's parent
    assert est.images == TRAIN_POOL + TEST
    crops = estimate_cost(ExperimentSpec("fe", str(digits_folder), samples_per_class=(5, 20), splits=2,
                                         resolution=32, use_crops=True))
    assert crops.images == 10 * (TRAIN_POOL + TEST)
    one = estimate_cost(ExperimentSpec("fe", str(digits_folder), samples_per_class=(20,), splits=1, resolution=32))
    assert (one.runs, one.images) == (1, TRAIN_POOL + TEST)  # a single point has no parent run
    assert one.flops == pytest.approx(one.images * one.flops_per_image)


def test_ft_counts_training_and_val_images_every_epoch_and_the_test_set_once(digits_folder):
    base = dict(samples_per_class=(20,), splits=1, resolution=32)
    est = estimate_cost(ExperimentSpec("ft", str(digits_folder), **base).with_params(epochs=4))
    assert est.upper_bound and est.runs == 1
    assert est.images == 4 * (TRAIN_POOL + VAL) + TEST
    two = estimate_cost(ExperimentSpec("ft", str(digits_folder), samples_per_class=(5,), splits=2,
                                       resolution=32).with_params(epochs=3))
    assert two.runs == 2 + 1 and two.images == 2 * (3 * (15 + VAL) + TEST)


def test_lp_ft_epochs_are_part_of_the_epochs_not_extra(digits_folder):
    """LP-FT with 4 epochs and a 2-epoch probe runs 4 epochs (2 on the head, then 2 on everything), as
    the run does (test_fine_tuning.py::test_lp_ft_probes_the_head_then_trains_everything)."""
    base = dict(samples_per_class=(20,), splits=1, resolution=32)
    lp = estimate_cost(ExperimentSpec("ft", str(digits_folder), **base).with_params(configuration="lp-ft",
                                                                                     lp_epochs=2, epochs=4))
    assert lp.images == 4 * (TRAIN_POOL + VAL) + TEST
    full = estimate_cost(ExperimentSpec("ft", str(digits_folder), **base).with_params(epochs=4))
    head = estimate_cost(ExperimentSpec("ft", str(digits_folder), **base).with_params(epochs=4, configuration=3))
    assert head.flops < lp.flops < full.flops  # two cheap head-only epochs replace two full ones
