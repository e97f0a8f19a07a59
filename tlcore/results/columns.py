"""What a results frame holds: the params, metrics and tags a page reads, and the names every part shares.

The store reader (:mod:`.store`), the analyses (:mod:`.tradeoffs`, :mod:`.quanta`), the tables
(:mod:`.tables`) and the figures (:mod:`tlcore.plots`) all name the same columns; they take those
names from here, so none of them has to import the reader to know what a frame looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlcore import quality
from tlcore.tracking import TAG_ERROR, TAG_ERROR_TYPE

# Cost axes the trade-off page offers: metric -> axis label.
COST_AXES: dict[str, str] = {
    "time_total_s": "Wall time (s)",
    "device_hours": "Device-hours",
    "flops_total": "FLOPs",
    "energy_kwh": "Energy (Wh)",
    "co2_kg": "CO2 (g CO2e)",
}
#: Logged unit -> drawn unit (tlcore.units): energy is logged in kWh and shown in Wh, CO2 in kg and shown in g.
COST_SCALE: dict[str, float] = {"energy_kwh": 1000.0, "co2_kg": 1000.0}
ENERGY_AXES = ("energy_kwh", "co2_kg")
ACCURACY_METRICS: dict[str, str] = {
    "test_accuracy": "Test accuracy (balanced)",
    "val_accuracy": "Validation accuracy (balanced)",
}
# Fine-tuning logs val_accuracy per epoch; the score of the model it kept (best epoch) is this one.
BEST_VAL_METRIC = "best_val_accuracy"
QUANTA_PREFIX = "quanta_source/"
# The source network's own test accuracy, as the QUANTA method logs it (first name present wins).
SOURCE_ACCURACY_METRICS = ("source_test_accuracy", "test_accuracy_source", "source_accuracy")
TRAINED_SOURCE, RANDOM_SOURCE = "trained source", "random source (control)"

# Tags as columns: MLflow's tag key -> column name.
TAG_COLUMNS = {
    "mlflow.parentRunId": "parent_run_id",
    "sweep_id": "sweep_id",
    "sweep_parent": "sweep_parent",
    TAG_ERROR: "error",
    TAG_ERROR_TYPE: "error_type",
    quality.QUALITY_TAG: "quality",
    quality.QUALITY_REASON_TAG: "quality_reason",
}
INFO_COLUMNS = ("run_id", "run_name", "experiment", "experiment_id", "method", "status", "start_time", "end_time")


@dataclass(frozen=True)
class RunColumns:
    """What a page reads: params, final metrics (exact names or name prefixes) and tags."""

    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    metric_prefixes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ("mlflow.parentRunId", "sweep_id", "sweep_parent", TAG_ERROR, TAG_ERROR_TYPE,
                             quality.QUALITY_TAG, quality.QUALITY_REASON_TAG)

    def __post_init__(self) -> None:
        names = [*self.params, *self.metrics, *(TAG_COLUMNS.get(t, t) for t in self.tags), *INFO_COLUMNS]
        clash = {n for n in names if names.count(n) > 1}
        if clash:
            raise ValueError(f"RunColumns names must be distinct; {sorted(clash)} appear twice.")


_POINT_PARAMS = ("dataset", "backbone", "weights", "samples_per_class", "split", "model_selection", "device",
                 "energy_method")
# What a verdict needs (tlcore.quality.judge_run) for runs that were logged before verdicts were tagged.
VERDICT_PARAMS = ("num_classes", "epochs", "patience", "classifier_converged", "n_test_images", "train_hash")
VERDICT_METRICS = ("stopped_early", "epochs_run", "n_eval_images")
_COSTS = tuple(COST_AXES)
TRADEOFF_COLUMNS = RunColumns(
    params=(*_POINT_PARAMS, "classifier", "configuration", "optimizer", "learning_rate", *VERDICT_PARAMS),
    metrics=(*ACCURACY_METRICS, BEST_VAL_METRIC, *_COSTS, *VERDICT_METRICS),
)
QUANTA_COLUMNS = RunColumns(
    params=(*_POINT_PARAMS, "source_task", "source_weights", "source_run_id", "layer_to_transfer", "quanta_layers",
            "configuration", "nb_of_target_epochs", "learning_rate", "quanta_lr", *VERDICT_PARAMS),
    metrics=(*ACCURACY_METRICS, *SOURCE_ACCURACY_METRICS, "time_total_s", "energy_kwh", *VERDICT_METRICS),
    metric_prefixes=(QUANTA_PREFIX,),
)
RUNS_COLUMNS = RunColumns(
    params=(*_POINT_PARAMS, "classifier", "configuration", "optimizer", "learning_rate", "seed",
            "layer_to_transfer", "source_weights", "source_task", "use_crops", *VERDICT_PARAMS),
    metrics=(*ACCURACY_METRICS, BEST_VAL_METRIC, *_COSTS, "images_processed", *VERDICT_METRICS),
)
_RANK_SCORES = ("logme", "sfda", "hscore", "leep", "nce")  # tlcore.specs.RANK_SCORES (columns imports no specs)
RANKING_COLUMNS = RunColumns(
    params=("dataset", "backbone", "weights", "control", "samples_per_class", "n_draws", "n_images", "resolution",
            "scores", "n_taps", "tap_percent", "backbones", "device"),
    metrics=(*_RANK_SCORES, *(f"{s}_std" for s in _RANK_SCORES), "time_total_s", "time_extract_s", "time_score_s",
             "fe_curve_extract_s", "fe_curve_images", "feature_cache_hits", "extract_seconds_per_image",
             "energy_kwh", "flops_total"),
)
VIEWS: dict[str, RunColumns] = {"tradeoffs": TRADEOFF_COLUMNS, "quanta": QUANTA_COLUMNS, "runs": RUNS_COLUMNS,
                                "ranking": RANKING_COLUMNS}


def natural_key(text: str) -> tuple:
    """Sort key that puts "layer2" before "layer10" and "-1" before "0"."""
    parts = re.split(r"(-?\d+(?:\.\d+)?)", str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p != "")
