"""The seeds' metric and param names, for notebooks written against their MLflow runs and files.

tl-tradeoff logged ``Test accuracy`` (a percentage), ``Total time``, ``Classifier``, ... to MLflow;
QUANTA wrote Keras metric names (``categorical_accuracy``, ``true_positives``, ...) to its files.
With ``--seed-metric-names`` (run tag ``seed_metric_names=true``) every run also logs the seed's
names beside ours: same values, the seed's units (accuracy in %), per-epoch steps from 0 as the seed.
"""

from __future__ import annotations

from typing import Any

TAG = "seed_metric_names"

#: Our QUANTA metric names -> the Keras names the seed's files and ``model.evaluate`` use.
KERAS_METRIC_NAMES = {
    "loss": "loss", "accuracy": "categorical_accuracy", "precision": "precision", "recall": "recall",
    "fp": "false_positives", "fn": "false_negatives", "tp": "true_positives", "tn": "true_negatives",
    "top3_accuracy": "top_k_categorical_accuracy",
}

_PERCENT = {"test_accuracy", "val_accuracy", "train_accuracy"}
_TL_METRICS = {
    "fe": {"test_accuracy": "Test accuracy", "val_accuracy": "Val accuracy",
           "time_postprocess_s": "Postprocessing time", "time_classifier_s": "Classifier training time",
           "time_total_s": "Total execution time"},
    "ft": {"train_accuracy": "Train accuracy", "train_loss": "Train loss", "val_accuracy": "Val accuracy",
           "val_loss": "Val loss", "test_accuracy": "Test accuracy", "test_loss": "Test loss",
           "time_total_s": "Total time"},
}
_EPOCH_METRICS = {"train_accuracy", "train_loss", "val_accuracy", "val_loss"}
_TL_PARAMS = {
    "dataset": "Dataset", "samples_per_class": "Samples per class", "split": "Split",
    "model_selection": "Model selection", "use_crops": "Using crops", "job": "Job number",
}
_FE_PARAMS = {"weights": "Model", "layers": "Model description", "n_taps": "Extracted layers",
              "classifier": "Classifier"}
_FT_PARAMS = {"backbone": "Architecture", "weights": "Model", "configuration": "Configuration",
              "optimizer": "Optimizer", "learning_rate": "Learning rate", "weight_decay": "Weight decay",
              "momentum": "Momentum", "batch_size": "Batch size", "epochs": "Maximum epochs"}
#: What the seed logged as ``Classifier``: ``str(type(estimator))`` of its constants.CLASSIFIERS.
_CLASSIFIER_TYPES = {
    "linearsvc": "<class 'sklearn.svm._classes.LinearSVC'>", "svc": "<class 'sklearn.svm._classes.SVC'>",
    "sgd": "<class 'sklearn.linear_model._stochastic_gradient.SGDClassifier'>",
    "knn": "<class 'sklearn.neighbors._classification.KNeighborsClassifier'>",
    "xgboost": "<class 'xgboost.sklearn.XGBClassifier'>",
}


def keras_name(ours: str) -> str | None:
    """``test_tp`` -> ``test_true_positives``; None for a name that is not one of the metric set."""
    for prefix in ("source_test_", "train_", "test_", "val_", ""):
        if ours.startswith(prefix) and ours[len(prefix):] in KERAS_METRIC_NAMES:
            return prefix + KERAS_METRIC_NAMES[ours[len(prefix):]]
    return None


def seed_metrics(method: str, metrics: dict[str, float | None], step: int) -> tuple[dict[str, float], int]:
    """The seed's names for those of ``metrics`` it had, and the step to log them at."""
    out: dict[str, float] = {}
    if method in _TL_METRICS:
        table = _TL_METRICS[method]
        for k, v in metrics.items():
            if k in table and v is not None:
                out[table[k]] = float(v) * 100 if k in _PERCENT else float(v)
        if method == "ft" and step >= 1 and set(metrics) & _EPOCH_METRICS:
            step -= 1  # the seed logged epoch 0 first
    elif method in ("quanta", "source"):
        for k, v in metrics.items():
            name = keras_name(k)
            if name is not None and name != k and v is not None:
                out[name] = float(v)
        if step >= 1 and any(k.startswith("train_") for k in metrics):
            step -= 1  # Keras counts epochs from 0
    return out, step


def seed_params(method: str, params: dict[str, Any]) -> dict[str, str]:
    """The seed's param names (tl-tradeoff; QUANTA logged none) for those of ``params`` it had."""
    if method not in _TL_METRICS:
        return {}
    table = {**_TL_PARAMS, **(_FE_PARAMS if method == "fe" else _FT_PARAMS)}
    out = {}
    for k, v in params.items():
        if k not in table or v is None:
            continue
        if isinstance(v, bool) or str(v).lower() in ("true", "false"):
            v = "True" if str(v).lower() == "true" else "False"  # the seed logged Python's f"{bool}"
        if k == "classifier":
            v = _CLASSIFIER_TYPES.get(str(v), str(v))
        out[table[k]] = str(v)
    return out
