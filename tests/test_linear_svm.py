"""The torch linear SVM (classifier ``linear``): what the feature-extraction fit relies on."""

from __future__ import annotations

import numpy as np
import pytest

from tlcore.classifiers import build_classifier, fit_predict
from tlcore.classifiers.linear_svm import DeviceLinearSVM


def _ternary_blobs(n_per_class: int, n_classes: int, d: int = 60, noise: float = 0.0, seed: int = 0):
    """FNE-like {-1, 0, 1} features: each class flips its own block of features on, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = np.zeros((len(y), d), dtype=np.int8)
    block = d // n_classes
    for c in range(n_classes):
        x[y == c, c * block:(c + 1) * block] = 1
    flips = rng.random(x.shape) < noise
    x[flips] = rng.integers(-1, 2, size=int(flips.sum()))
    return x, y


def test_separable_data_is_fit_perfectly_and_converges():
    x, y = _ternary_blobs(30, 4)
    clf = DeviceLinearSVM(device="cpu").fit(x, y)
    assert (clf.predict(x) == y).all()
    assert clf.converged_ and 0 < clf.n_iter_ < clf.max_iter


def test_two_classes_give_one_score_column_like_linearsvc():
    x, y = _ternary_blobs(20, 2)
    labels = np.where(y == 0, 3, 8)  # any labels, not 0..k-1
    clf = DeviceLinearSVM(device="cpu").fit(x, labels)
    assert clf.decision_function(x).shape == (40,)
    assert clf.coef_.shape == (1, 60)
    assert (clf.predict(x) == labels).all()


def test_predict_shape_and_labels_of_a_multiclass_fit():
    x, y = _ternary_blobs(15, 5, noise=0.2)
    clf = DeviceLinearSVM(device="cpu").fit(x, y + 10)
    x_eval = x[:7]
    assert clf.predict(x_eval).shape == (7,)
    assert clf.decision_function(x_eval).shape == (7, 5)
    assert set(clf.predict(x)) <= set(range(10, 15))


def test_the_fit_is_deterministic_given_random_state():
    x, y = _ternary_blobs(25, 3, noise=0.4, seed=3)
    a = DeviceLinearSVM(device="cpu", random_state=7).fit(x, y)
    b = DeviceLinearSVM(device="cpu", random_state=7).fit(x, y)
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)


def test_an_iteration_cap_reached_is_reported_as_not_converged():
    x, y = _ternary_blobs(40, 3, noise=0.5, seed=1)
    capped = DeviceLinearSVM(device="cpu", max_iter=2).fit(x, y)
    assert not capped.converged_ and capped.n_iter_ == 2


def test_it_scores_like_linearsvc_on_noisy_features():
    x, y = _ternary_blobs(60, 4, noise=0.6, seed=2)
    xe, ye = _ternary_blobs(60, 4, noise=0.6, seed=5)
    ours = (DeviceLinearSVM(device="cpu").fit(x, y).predict(xe) == ye).mean()
    theirs = (build_classifier("linearsvc").fit(x, y).predict(xe) == ye).mean()
    assert ours >= theirs - 0.03


def test_fit_predict_reports_a_capped_fit_and_passes_the_run_device(monkeypatch):
    from tlcore import classifiers

    seen = {}

    def capped(random_state: int, n_samples: int):
        clf = DeviceLinearSVM(max_iter=1, random_state=random_state)
        original = clf.set_params

        def set_params(**kw):
            seen.update(kw)
            return original(**kw)

        clf.set_params = set_params
        return clf

    monkeypatch.setitem(classifiers.classifiers._entries, "linear", capped)
    x, y = _ternary_blobs(20, 3, noise=0.5)
    fit = fit_predict("linear", x, y, x[:5], device="cpu")
    assert not fit.converged and fit.predictions.shape == (5,) and seen == {"device": "cpu"}


def test_unfitted_and_single_class_fits_say_what_is_wrong():
    with pytest.raises(ValueError, match="not fitted"):
        DeviceLinearSVM().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least two classes"):
        DeviceLinearSVM(device="cpu").fit(np.zeros((4, 3)), np.zeros(4))
