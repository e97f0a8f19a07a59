"""Feature extraction as the run wires it: what the classifier really receives (training statistics,
ternary codes, or what the user chose instead) and the score it logs (balanced, by hand).

The post-processing functions are pinned by hand in test_feature_extraction.py; these tests spy on
the classifier's inputs inside a real run and recompute them from the raw features with a slow,
direct formula, so a run that passes the wrong statistics or skips discretisation fails here even
when its params still say ``standardize=train``. (How well the features do on digits against the
README's figure: test_feature_extraction.py.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tlcore import experiments
from tlcore.data import load_dataset
from tlcore.methods import feature_extraction as fe
from tlcore.specs import ExperimentSpec, FeatureExtractionParams
from tlcore.tracking import Tracker


def _by_hand(raw: np.ndarray, stats_from: np.ndarray, high: float = 0.15, low: float = -0.25,
             ternary: bool = True) -> np.ndarray:
    """z-score every column of ``raw`` with the mean and (population) std of ``stats_from``, one
    column at a time in float64; a column constant in ``stats_from`` becomes 0; then ternary codes."""
    out = np.zeros(raw.shape, dtype=np.float64)
    for j in range(raw.shape[1]):
        col = stats_from[:, j].astype(np.float64)
        mean = sum(col) / len(col)
        std = (sum((v - mean) ** 2 for v in col) / len(col)) ** 0.5
        if std > 1e-8:
            out[:, j] = (raw[:, j] - mean) / std
    if not ternary:
        return out
    return np.where(out > high, 1, np.where(out < low, -1, 0))


def _balanced_by_hand(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in sorted(set(y_true.tolist()))]
    return sum(recalls) / len(recalls)


class Spy:
    """Records the raw features each point takes from the bank and what the classifier is given."""

    def __init__(self, monkeypatch) -> None:
        self.takes: list[tuple[np.ndarray, np.ndarray]] = []
        self.fits: list[dict] = []
        real_take, real_fit = fe.FeatureBank.take, fe.fit_predict

        def take(bank, idx):
            out = real_take(bank, idx)
            self.takes.append((out[0].copy(), out[1].copy()))
            return out

        def fit(name, x_train, y_train, x_eval, **kw):
            result = real_fit(name, x_train, y_train, x_eval, **kw)
            self.fits.append({"x_train": np.array(x_train), "y_train": np.array(y_train), "x_eval": np.array(x_eval),
                              "pred": np.array(result.predictions)})
            return result

        monkeypatch.setattr(fe.FeatureBank, "take", take)
        monkeypatch.setattr(fe, "fit_predict", fit)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, _store_template):
    """One store for the module: its feature cache serves every run after the first (same images)."""
    folder = tmp_path_factory.mktemp("fne-store")
    shutil.copy(_store_template, folder / "mlflow.db")
    return folder


def _spec(store, **params) -> ExperimentSpec:
    return ExperimentSpec("fe", "digits:0-2", backbone="efficientnet_lite0", resolution=32, samples_per_class=(2,),
                          splits=1, num_workers=0, measure_energy=False, mlflow_path=str(store),
                          params=FeatureExtractionParams(**params))


@pytest.mark.parametrize(("params", "stats", "ternary"), [
    ({}, "train", True),
    ({"standardize": "per_set"}, "per_set", True),
    ({"discretize": False}, "train", False),
    ({"threshold_high": 0.5, "threshold_low": -0.5}, "train", True),
])
def test_the_classifier_gets_what_the_post_processing_options_ask_for(shared_store, monkeypatch, params, stats,
                                                                     ternary):
    spy = Spy(monkeypatch)
    tracker = Tracker(str(shared_store))
    result = experiments.run(_spec(shared_store, **params), None, tracker)
    (fit,) = spy.fits
    (raw_train, _), (raw_eval, eval_idx) = spy.takes
    assert raw_train.shape == (6, raw_eval.shape[1]) and len(eval_idx) == 161  # 2 x 3 classes; 30 % of 537 images
    high, low = params.get("threshold_high", 0.15), params.get("threshold_low", -0.25)
    want_train = _by_hand(raw_train, raw_train, high, low, ternary)
    want_eval = _by_hand(raw_eval, raw_train if stats == "train" else raw_eval, high, low, ternary)
    if ternary:
        assert fit["x_train"].dtype == np.int8 and set(np.unique(fit["x_eval"])) <= {-1, 0, 1}
        # float32 in the product, float64 here: a value within rounding of a threshold may flip
        assert np.mean(fit["x_train"] == want_train) > 0.999 and np.mean(fit["x_eval"] == want_eval) > 0.999
    else:
        np.testing.assert_allclose(fit["x_train"], want_train, atol=1e-4)
        np.testing.assert_allclose(fit["x_eval"], want_eval, atol=1e-4)
    run = tracker.get_run(result.run_ids[0]).data
    assert run.params["standardize"] == stats and run.params["discretize"] == str(ternary).lower()


def test_the_logged_score_is_the_balanced_accuracy_of_the_predictions(shared_store, monkeypatch):
    spy = Spy(monkeypatch)
    tracker = Tracker(str(shared_store))
    result = experiments.run(_spec(shared_store), None, tracker)
    (fit,) = spy.fits
    _, eval_idx = spy.takes[1]
    y_eval = load_dataset("digits:0-2").labels[eval_idx]
    assert np.bincount(y_eval).tolist() == [53, 55, 53]  # round(30 %) of 178, 182 and 177 images
    balanced, plain = _balanced_by_hand(y_eval, fit["pred"]), float(np.mean(fit["pred"] == y_eval))
    assert balanced != plain  # the fixture tells the two scores apart
    metrics = tracker.get_run(result.run_ids[0]).data.metrics
    assert metrics["test_accuracy"] == pytest.approx(balanced, abs=1e-12)
    assert metrics["test_plain_accuracy"] == pytest.approx(plain, abs=1e-12)
    assert result.metrics["test_accuracy_spc_2"] == pytest.approx(balanced, abs=1e-12)
    # the classifier was trained on the training split's own labels
    (_, train_idx), _ = spy.takes
    assert np.array_equal(fit["y_train"], load_dataset("digits:0-2").labels[train_idx])

