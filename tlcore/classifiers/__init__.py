"""Classifiers for feature extraction: a registry of scikit-learn estimators, the seed's choices.

The seed's names (its ``constants.CLASSIFIERS``: ``LinearSVC``, ``SVC``, ``SGDClassifier``, ``KNN``,
``XGBoost``) are aliases of the registered ones, in any case.

Adding one is one decorated function ``name(random_state, n_samples) -> estimator``::

    @register_classifier
    def ridge(random_state: int, n_samples: int):
        return RidgeClassifier()

``fit_predict`` trains on every crop as its own sample and, with crops, predicts an image by a
majority vote over its crops (ties broken by the summed decision scores).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC, LinearSVC

from tlcore.classifiers.voting import vote
from tlcore.errors import SpecError
from tlcore.registry import Registry

ClassifierFactory = Callable[[int, int], ClassifierMixin]
classifiers: Registry[ClassifierFactory] = Registry("classifier", SpecError)


def register_classifier(fn: ClassifierFactory) -> ClassifierFactory:
    """Register ``fn(random_state, n_samples) -> estimator`` under its function name."""
    return classifiers.register(fn)


#: ``auto`` fits the seed's LinearSVC up to this many training rows (images x crops), ``linear`` above. Measured
#: (docs/benchmarks.md, bench/classifiers.py): on few-shot digits (up to 500 rows) LinearSVC scored 0.3-7.8 points
#: higher and fitted in about a second; from 1,000 rows on a harder task it scored 3 points lower and its fit grew
#: far faster than the data (6.3 s at 1,000 rows, 36.7 s at 3,000, 2,426 s at 10,000) where ``linear`` took 0.3-4 s.
AUTO_LINEARSVC_MAX_ROWS = 1000


@register_classifier
def auto(random_state: int, n_samples: int) -> ClassifierMixin:
    """The default: the seed's LinearSVC on training sets up to :data:`AUTO_LINEARSVC_MAX_ROWS` rows, the
    same objective fitted by ``linear`` above. The run logs which one it fitted (``classifier_fitted``)."""
    choice = linearsvc if n_samples <= AUTO_LINEARSVC_MAX_ROWS else linear
    clf = choice(random_state, n_samples)
    clf.tlcore_choice = choice.__name__  # read by fit_predict (not a trailing-underscore name: sklearn's "fitted")
    return clf


@register_classifier
def linearsvc(random_state: int, n_samples: int) -> ClassifierMixin:
    """The seed's default: scikit-learn's defaults (C=1, squared hinge, one-vs-rest)."""
    return LinearSVC(random_state=random_state)


@register_classifier
def svc(random_state: int, n_samples: int) -> ClassifierMixin:
    return SVC(random_state=random_state)


@register_classifier
def sgd(random_state: int, n_samples: int) -> ClassifierMixin:
    return SGDClassifier(tol=5e-4, random_state=random_state)  # the seed's tolerance


@register_classifier
def knn(random_state: int, n_samples: int) -> ClassifierMixin:
    return KNeighborsClassifier(n_neighbors=max(1, min(5, n_samples)))  # 1 spc x 2 classes has 2 samples


@register_classifier
def logreg(random_state: int, n_samples: int) -> ClassifierMixin:
    return LogisticRegression(max_iter=1000, random_state=random_state)


class XGBoostClassifier(ClassifierMixin, BaseEstimator):
    """xgboost's ``XGBClassifier`` (its defaults, as the seed) on any labels.

    XGBoost wants labels 0..k-1; a few-shot split or a class filter can leave gaps, so labels are
    encoded here and decoded on the way out. xgboost is imported only when a model is fitted.
    """

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray) -> XGBoostClassifier:
        from xgboost import XGBClassifier

        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        self.model_ = XGBClassifier(random_state=self.random_state)
        self.model_.fit(x, encoded)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.predict_proba(x), dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


@register_classifier
def xgboost(random_state: int, n_samples: int) -> ClassifierMixin:
    """The seed's ``XGBoost``: gradient-boosted trees with xgboost's defaults."""
    return XGBoostClassifier(random_state=random_state)


@register_classifier
def linear(random_state: int, n_samples: int) -> ClassifierMixin:
    """LinearSVC's objective fitted full-batch by L-BFGS in torch, on the GPU when there is one: it
    scales with the data (docs/benchmarks.md, bench/classifiers.py)."""
    from tlcore.classifiers.linear_svm import DeviceLinearSVM

    return DeviceLinearSVM(random_state=random_state)


for _alias, _name in (("LinearSVC", "linearsvc"), ("SVC", "svc"), ("SGDClassifier", "sgd"), ("KNN", "knn"),
                      ("XGBoost", "xgboost"), ("LogisticRegression", "logreg")):
    classifiers.alias(_alias, _name)


def build_classifier(name: str, random_state: int = 0, n_samples: int = 5) -> ClassifierMixin:
    """A fresh estimator; an unknown name is a :class:`SpecError` listing the registered ones."""
    return classifiers.get(name)(random_state, n_samples)


def class_scores(clf: ClassifierMixin, x: np.ndarray) -> np.ndarray | None:
    """(n, n_classes_seen) scores, columns in ``clf.classes_`` order; None when it has none."""
    if hasattr(clf, "decision_function"):
        s = np.asarray(clf.decision_function(x), dtype=np.float64)
        return np.stack([-s, s], axis=1) if s.ndim == 1 else s
    if hasattr(clf, "predict_proba"):
        return np.asarray(clf.predict_proba(x), dtype=np.float64)
    return None


@dataclass
class FitResult:
    predictions: np.ndarray  # one label per image
    converged: bool
    fitted: str = ""  # the registered name of the estimator fitted (what ``auto`` chose)


def fit_predict(name: str, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                random_state: int = 0, device: str | None = None) -> FitResult:
    """Fit on training rows, predict evaluation images.

    Inputs are (n, D) or, with crops, (n, n_crops, D): each crop of a training image is a
    sample with the image's label, and an evaluation image gets the majority vote of its crops.
    ``device``: where a classifier that has a ``device`` parameter fits (the run's device).
    ``converged`` is False when scikit-learn warned of non-convergence or the estimator says so
    (``converged_``).
    """
    crops = x_train.ndim == 3
    n_crops = x_train.shape[1] if crops else 1
    xt = x_train.reshape(-1, x_train.shape[-1])
    yt = np.repeat(np.asarray(y_train), n_crops)
    clf = build_classifier(name, random_state, len(xt))
    fitted = getattr(clf, "tlcore_choice", classifiers.canonical(name))
    if device is not None and "device" in clf.get_params():
        clf.set_params(device=str(device))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(xt, yt)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    converged = converged and bool(getattr(clf, "converged_", True))
    if not crops:
        return FitResult(np.asarray(clf.predict(x_eval)), converged, fitted)
    xe = x_eval.reshape(-1, x_eval.shape[-1])
    seen = np.asarray(clf.classes_)
    per_crop = np.searchsorted(seen, clf.predict(xe)).reshape(len(x_eval), -1)  # positions in classes_
    scores = class_scores(clf, xe)
    if scores is not None:
        scores = scores.reshape(len(x_eval), per_crop.shape[1], -1)
    else:
        scores = np.zeros((len(x_eval), per_crop.shape[1], len(seen)))
    return FitResult(seen[vote(per_crop, scores)], converged, fitted)
