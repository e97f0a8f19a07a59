"""MLflow history -> tidy pandas DataFrames, and the analyses the pages draw from them.

One package, one job per module, lowest first:

- :mod:`.columns`: what a results frame holds (the params, metrics and tags a page reads, the
  views, the axis names) and the natural sort every part uses;
- :mod:`.store`: reading the store (an sqlite fast path, the MLflow client otherwise), metric
  histories, single runs, archive and restore;
- :mod:`.tables`: filters, the runs table, a few runs side by side;
- :mod:`.tradeoffs`: Pareto fronts, learning curves, FT - FE differences, crossovers, cost ratios;
- :mod:`.quanta`: QUANTA per-layer summaries beside their random-source control, and their verdicts;
- :mod:`.ranking`: transferability rankings, their controls and their agreement with measured accuracy
  (imported as ``tlcore.results.ranking``).

Every name stays reachable as ``results.X`` (and ``from tlcore.results import X``), so callers need
not know which module holds it.
"""

# Reached by tests as ``results.EXPERIMENTS`` / ``results.sqlite_path``, as when results was one module.
from tlcore.methods.base import EXPERIMENTS as EXPERIMENTS
from tlcore.results.columns import (
    ACCURACY_METRICS,
    BEST_VAL_METRIC,
    COST_AXES,
    COST_SCALE,
    ENERGY_AXES,
    INFO_COLUMNS,
    QUANTA_COLUMNS,
    QUANTA_PREFIX,
    RANDOM_SOURCE,
    RUNS_COLUMNS,
    SOURCE_ACCURACY_METRICS,
    TAG_COLUMNS,
    TRADEOFF_COLUMNS,
    TRAINED_SOURCE,
    VERDICT_METRICS,
    VERDICT_PARAMS,
    VIEWS,
    RunColumns,
    natural_key,
)
from tlcore.results.quanta import (
    FT_FROZEN_FRACTION,
    QUANTA_SETTINGS,
    freezing_depth_accuracy,
    lambda_steps,
    layer_hint,
    layer_order,
    quanta_accuracy,
    quanta_caveat,
    quanta_depth,
    quanta_layer_verdicts,
    quanta_layers,
    quanta_matrix,
    quanta_summary,
    quanta_values,
)
from tlcore.results.store import (
    RunDetails,
    add_verdicts,
    archive_runs,
    load_runs,
    load_view,
    metric_histories,
    mlflow_run_url,
    mlflow_ui_running,
    restore_runs,
    run_details,
    store_marker,
    variant_labels,
)

# Reached from tests and bench/ as ``results._name`` (the two read paths, held equal by a test).
from tlcore.results.store import _read_client as _read_client
from tlcore.results.store import _read_sqlite as _read_sqlite
from tlcore.results.store import _thin as _thin
from tlcore.results.store import _tidy as _tidy
from tlcore.results.tables import (
    BEST_MARK,
    METHOD_LABELS,
    RunFilter,
    describe_counts,
    display_table,
    filter_runs,
    metrics_for_people,
    metrics_side_by_side,
    options,
    params_diff,
)
from tlcore.results.tradeoffs import (
    cost_ratio,
    crossover_intervals,
    crossover_marks,
    crossovers,
    find_crossings,
    learning_curves,
    paired_differences,
    pareto_front,
    pareto_mask,
    tradeoff_points,
)
from tlcore.tracking import sqlite_path as sqlite_path

__all__ = [
    "ACCURACY_METRICS",
    "BEST_MARK",
    "BEST_VAL_METRIC",
    "COST_AXES",
    "COST_SCALE",
    "ENERGY_AXES",
    "FT_FROZEN_FRACTION",
    "INFO_COLUMNS",
    "METHOD_LABELS",
    "QUANTA_COLUMNS",
    "QUANTA_PREFIX",
    "QUANTA_SETTINGS",
    "RANDOM_SOURCE",
    "RUNS_COLUMNS",
    "SOURCE_ACCURACY_METRICS",
    "TAG_COLUMNS",
    "TRADEOFF_COLUMNS",
    "TRAINED_SOURCE",
    "VERDICT_METRICS",
    "VERDICT_PARAMS",
    "VIEWS",
    "RunColumns",
    "RunDetails",
    "RunFilter",
    "add_verdicts",
    "archive_runs",
    "cost_ratio",
    "crossover_intervals",
    "crossover_marks",
    "crossovers",
    "describe_counts",
    "display_table",
    "filter_runs",
    "find_crossings",
    "freezing_depth_accuracy",
    "lambda_steps",
    "layer_hint",
    "layer_order",
    "learning_curves",
    "load_runs",
    "load_view",
    "metric_histories",
    "metrics_for_people",
    "metrics_side_by_side",
    "mlflow_run_url",
    "mlflow_ui_running",
    "natural_key",
    "options",
    "paired_differences",
    "params_diff",
    "pareto_front",
    "pareto_mask",
    "quanta_accuracy",
    "quanta_caveat",
    "quanta_depth",
    "quanta_layer_verdicts",
    "quanta_layers",
    "quanta_matrix",
    "quanta_summary",
    "quanta_values",
    "restore_runs",
    "run_details",
    "store_marker",
    "tradeoff_points",
    "variant_labels",
]
