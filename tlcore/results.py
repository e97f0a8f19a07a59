"""MLflow history -> tidy pandas DataFrames, and the analyses the pages draw from them.

Reading is the slow part of an analysis page: ``search_runs`` builds a Python object per run
(~1 ms each: 5 s for 5,000 runs), with every param, metric and tag. A page asks instead for a
:class:`RunColumns` (the params, final metrics and tags it draws) and gets one row per run. On
an sqlite store (the default) the rows come from three read-only SQL queries over MLflow's
``runs``/``params``/``latest_metrics``/``tags`` tables, pivoted by pandas, without importing
mlflow; any other store (a tracking server) goes through ``MlflowClient.search_runs``. Both paths
return the same frame (a test holds them equal). Metric histories are read only for the few runs
a chart needs.

Analyses are pure functions of those frames: the Pareto front (minimum cost, maximum accuracy),
few-shot learning curves (mean and spread over splits), where fine-tuning and feature-extraction
curves cross, the FT/FE cost ratio, and QUANTA per-layer summaries beside their random-source
control. Archiving a run is MLflow's soft delete; nothing here deletes for good.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlcore import quality
from tlcore.errors import TLError
from tlcore.tracking import EXPERIMENTS, TAG_ERROR, TAG_ERROR_TYPE, sqlite_path

METHOD_OF_EXPERIMENT = {name: method for method, name in EXPERIMENTS.items()}
METHOD_LABELS = {"fe": "Feature extraction", "ft": "Fine-tuning", "quanta": "QUANTA", "source": "Source training"}

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
_VERDICT_PARAMS = ("num_classes", "epochs", "patience", "classifier_converged", "n_test_images", "train_hash")
_VERDICT_METRICS = ("stopped_early", "epochs_run", "n_eval_images")
_COSTS = tuple(COST_AXES)
TRADEOFF_COLUMNS = RunColumns(
    params=(*_POINT_PARAMS, "classifier", "configuration", "optimizer", "learning_rate", *_VERDICT_PARAMS),
    metrics=(*ACCURACY_METRICS, BEST_VAL_METRIC, *_COSTS, *_VERDICT_METRICS),
)
QUANTA_COLUMNS = RunColumns(
    params=(*_POINT_PARAMS, "source_task", "source_weights", "source_run_id", "layer_to_transfer", "quanta_layers",
            "configuration", "nb_of_target_epochs", "learning_rate", "quanta_lr", *_VERDICT_PARAMS),
    metrics=(*ACCURACY_METRICS, *SOURCE_ACCURACY_METRICS, "time_total_s", "energy_kwh", *_VERDICT_METRICS),
    metric_prefixes=(QUANTA_PREFIX,),
)
RUNS_COLUMNS = RunColumns(
    params=(*_POINT_PARAMS, "classifier", "configuration", "optimizer", "learning_rate", "seed",
            "layer_to_transfer", "source_weights", "source_task", "use_crops", *_VERDICT_PARAMS),
    metrics=(*ACCURACY_METRICS, BEST_VAL_METRIC, *_COSTS, "images_processed", *_VERDICT_METRICS),
)
VIEWS: dict[str, RunColumns] = {"tradeoffs": TRADEOFF_COLUMNS, "quanta": QUANTA_COLUMNS, "runs": RUNS_COLUMNS}


# ---------------------------------------------------------------------------------------------
# Reading the store


def load_runs(uri: str, columns: RunColumns, methods: Iterable[str] | None = None,
              archived: bool = False) -> pd.DataFrame:
    """One row per run of the given methods' experiments (all four by default), tidy and typed.

    Every requested column exists even when no run logged it (all missing), so a page never
    meets a KeyError for a metric nobody logged. ``archived=True`` returns the soft-deleted runs
    instead of the active ones.
    """
    names = [EXPERIMENTS[m] for m in (methods or EXPERIMENTS)]
    path = sqlite_path(uri)
    if path is not None:
        if not path.exists():
            return _tidy(_empty_raw(), columns)
        try:
            raw = _read_sqlite(path, columns, names, archived)
        except _NotAnMlflowStore:
            raw = _read_client(uri, columns, names, archived)
    else:
        raw = _read_client(uri, columns, names, archived)
    df = _tidy(raw, columns)
    if quality.QUALITY_TAG in columns.tags:
        df = add_verdicts(df, uri)
    return df


def add_verdicts(df: pd.DataFrame, uri: str | None = None) -> pd.DataFrame:
    """Fill ``quality``/``quality_reason`` for runs logged without a verdict, judged by the same rules
    (:func:`tlcore.quality.judge_run`) as runs that carry one; adds ``weak`` (bool).

    Training runs need their validation-loss history: read in one query, for those runs only."""
    if df.empty:
        return df.assign(weak=pd.Series(dtype=bool))
    df = df.copy()
    for col in ("quality", "quality_reason"):
        if col not in df:
            df[col] = pd.Series(np.nan, index=df.index, dtype=object)
    todo = df["quality"].isna() & df["status"].isin(["FINISHED", "FAILED"])
    if todo.any():
        trained = todo & df["method"].isin(["ft", "source", "quanta"]) & df["status"].eq("FINISHED")
        losses: dict[str, list[float]] = {}
        if uri is not None and trained.any():
            hist = metric_histories(uri, df.loc[trained, "run_id"].tolist(), keys=("val_loss",), max_points=None)
            for rid, g in hist.groupby("run_id", sort=False):
                by_step = dict(zip(g["step"], g["value"], strict=True))  # sorted by step then time: latest wins
                losses[rid] = [by_step[k] for k in sorted(by_step)]
        # the test-set size of runs that did not log one: what the dataset's other runs logged
        sizes = df.get("n_eval_images", pd.Series(np.nan, index=df.index))
        typical = sizes.groupby(df.get("dataset", pd.Series("", index=df.index)).astype(str)).median()
        param_cols = [c for c in df.columns if c in {*_VERDICT_PARAMS, "samples_per_class", "classifier"}]
        metric_cols = [c for c in df.columns if c in {*_VERDICT_METRICS, "test_accuracy", "val_accuracy"}]
        judged_q, judged_r = [], []
        for idx in df.index[todo]:
            row = df.loc[idx]
            params = {c: row[c] for c in param_cols if pd.notna(row[c])}
            metrics = {c: row[c] for c in metric_cols if pd.notna(row[c])}
            if row["method"] == "ft" and pd.notna(row.get(BEST_VAL_METRIC)) and "test_accuracy" not in metrics:
                metrics["val_accuracy"] = row[BEST_VAL_METRIC]
            fallback = typical.get(str(row.get("dataset")))
            verdict = quality.judge_run(str(row["method"]), str(row["status"]), params, metrics,
                                        losses.get(row["run_id"]), row.get("error_type") if isinstance(
                                            row.get("error_type"), str) else None,
                                        int(fallback) if fallback is not None and pd.notna(fallback) else None)
            judged_q.append(verdict.quality if verdict else np.nan)
            judged_r.append(verdict.reason if verdict else np.nan)
        df.loc[todo, "quality"] = judged_q
        df.loc[todo, "quality_reason"] = judged_r
    # a sweep's parent without a verdict: from its children's
    parents = df["quality"].isna() & df["is_sweep_parent"].astype(bool) & df["status"].eq("FINISHED")
    if parents.any() and "parent_run_id" in df:
        for idx in df.index[parents]:
            kids = df.loc[df["parent_run_id"] == df.at[idx, "run_id"], "quality"]
            verdict = quality.summarize(kids.tolist())
            if verdict is not None:
                df.at[idx, "quality"], df.at[idx, "quality_reason"] = verdict.quality, verdict.reason
    df["weak"] = df["quality"].map(quality.is_weak).astype(bool)
    return df


def _store_error(uri: str, exc: Exception) -> TLError:
    return TLError(f"Could not read runs from {uri} ({type(exc).__name__}: {exc}). Check that the tracking server "
                   "answers, or point TLCORE_MLFLOW_PATH (--mlflow-path) at a results folder.")


def load_view(uri: str, view: str, archived: bool = False) -> pd.DataFrame:
    """``load_runs`` for one of the pages' named column sets (:data:`VIEWS`)."""
    methods = {"tradeoffs": ("fe", "ft"), "quanta": ("quanta", "ft", "source")}.get(view)
    return load_runs(uri, VIEWS[view], methods, archived)


class _NotAnMlflowStore(Exception):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: the analysis pages never write the store through SQL. ``timeout`` waits out a
    # writer's lock instead of failing while a job logs.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)


_REQUIRED_TABLES = {"runs", "experiments", "params", "latest_metrics", "tags", "metrics"}


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _read_sqlite(path: Path, columns: RunColumns, experiment_names: Sequence[str], archived: bool) -> dict:
    try:
        con = _connect(path)
    except sqlite3.Error as exc:
        raise _NotAnMlflowStore(str(exc)) from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables >= _REQUIRED_TABLES:
            if not tables:  # a fresh file nobody migrated yet: no runs
                return _empty_raw()
            raise _NotAnMlflowStore(f"{path} lacks MLflow's tables")
        con.execute("BEGIN")  # one read snapshot for the four queries: a job logging meanwhile cannot skew them
        stage = "deleted" if archived else "active"
        run_filter = (f"SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                      f"WHERE e.name IN ({_placeholders(len(experiment_names))}) AND e.lifecycle_stage = 'active' "
                      f"AND r.lifecycle_stage = ?")
        run_args = [*experiment_names, stage]
        runs = pd.read_sql_query(
            "SELECT r.run_uuid AS run_id, r.name AS run_name, e.name AS experiment, r.experiment_id, r.status, "
            "r.start_time, r.end_time FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            f"WHERE r.run_uuid IN ({run_filter})", con, params=run_args)

        def long(table: str, keys: Sequence[str], prefixes: Sequence[str] = (), extra: str = "") -> pd.DataFrame:
            match, args = _key_clause(keys, prefixes)
            if not match:
                return pd.DataFrame(columns=["run_id", "key", "value"])
            return pd.read_sql_query(
                f"SELECT run_uuid AS run_id, key, value{extra} FROM {table} "
                f"WHERE ({match}) AND run_uuid IN ({run_filter})", con, params=[*args, *run_args])

        params = long("params", columns.params)
        metrics = long("latest_metrics", columns.metrics, columns.metric_prefixes, extra=", is_nan")
        if "is_nan" in metrics:
            metrics.loc[metrics["is_nan"].astype(bool), "value"] = np.nan
            metrics = metrics.drop(columns="is_nan")
        tags = long("tags", columns.tags)
    except sqlite3.DatabaseError as exc:
        raise _NotAnMlflowStore(str(exc)) from None
    finally:
        con.close()
    return {"runs": runs, "params": params, "metrics": metrics, "tags": tags}


def _read_client(uri: str, columns: RunColumns, experiment_names: Sequence[str], archived: bool) -> dict:
    """The same rows through ``MlflowClient`` (tracking servers, or an sqlite file we cannot read)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    experiments = {}
    try:
        client = MlflowClient(tracking_uri=uri)  # an sqlite file that is not a database fails here already
        for name in experiment_names:
            exp = client.get_experiment_by_name(name)
            if exp is not None and exp.lifecycle_stage == "active":
                experiments[exp.experiment_id] = name
    except Exception as exc:  # an unreachable server or unreadable store: one sentence, not a traceback
        raise _store_error(uri, exc) from exc
    rows, params, metrics, tags = [], [], [], []
    if experiments:
        view = ViewType.DELETED_ONLY if archived else ViewType.ACTIVE_ONLY
        token = None
        wanted_metrics, prefixes = set(columns.metrics), tuple(columns.metric_prefixes)
        while True:
            page = client.search_runs(list(experiments), "", run_view_type=view, max_results=1000, page_token=token)
            for run in page:
                info, data = run.info, run.data
                rows.append({"run_id": info.run_id, "run_name": info.run_name,
                             "experiment": experiments.get(info.experiment_id), "experiment_id": info.experiment_id,
                             "status": info.status, "start_time": info.start_time, "end_time": info.end_time})
                params += [(info.run_id, k, data.params[k]) for k in columns.params if k in data.params]
                metrics += [(info.run_id, k, v) for k, v in data.metrics.items()
                            if k in wanted_metrics or (prefixes and k.startswith(prefixes))]
                tags += [(info.run_id, k, data.tags[k]) for k in columns.tags if k in data.tags]
            token = page.token
            if not token:
                break
    frame = lambda items: pd.DataFrame(items, columns=["run_id", "key", "value"])
    return {"runs": pd.DataFrame(rows, columns=_RAW_RUN_COLUMNS), "params": frame(params),
            "metrics": frame(metrics), "tags": frame(tags)}


_RAW_RUN_COLUMNS = ["run_id", "run_name", "experiment", "experiment_id", "status", "start_time", "end_time"]


def _empty_raw() -> dict:
    empty = pd.DataFrame(columns=["run_id", "key", "value"])
    return {"runs": pd.DataFrame(columns=_RAW_RUN_COLUMNS), "params": empty, "metrics": empty, "tags": empty}


def _wide(long: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(index=index)
    return long.pivot(index="run_id", columns="key", values="value").reindex(index)


def _tidy(raw: dict, columns: RunColumns) -> pd.DataFrame:
    runs = raw["runs"].set_index("run_id")
    index = runs.index
    params = _wide(raw["params"], index)
    metrics = _wide(raw["metrics"], index).apply(pd.to_numeric, errors="coerce")
    tags = _wide(raw["tags"], index).rename(columns=TAG_COLUMNS)
    df = pd.concat([runs, params, metrics, tags], axis=1)
    for name in columns.params:
        if name not in df:
            df[name] = pd.Series(np.nan, index=index, dtype=object)
    for name in columns.metrics:
        if name not in df:
            df[name] = np.nan
        df[name] = df[name].astype(float)
    for tag in columns.tags:
        name = TAG_COLUMNS.get(tag, tag)
        if name not in df:
            df[name] = pd.Series(np.nan, index=index, dtype=object)
    df.index.name = "run_id"
    df = df.reset_index()
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(pd.to_numeric(df[col], errors="coerce"), unit="ms", utc=True)
    df["experiment_id"] = df["experiment_id"].astype(str)
    from_param = df["method"] if "method" in df else pd.Series(np.nan, index=df.index, dtype=object)
    df["method"] = df["experiment"].map(METHOD_OF_EXPERIMENT).fillna(from_param)
    df["duration_s"] = (df["end_time"] - df["start_time"]).dt.total_seconds()
    # Derived columns every page uses.
    if BEST_VAL_METRIC in df and "val_accuracy" in df:
        # a fine-tuning run's last val_accuracy is its last epoch's; the model it kept scored best_val_accuracy
        df["val_accuracy"] = df[BEST_VAL_METRIC].combine_first(df["val_accuracy"])
    if "samples_per_class" in df:
        df["spc"] = pd.to_numeric(df["samples_per_class"], errors="coerce")
    if "split" in df:
        df["split_index"] = pd.to_numeric(df["split"], errors="coerce")
    parent_flag = df["sweep_parent"].astype(str).str.lower().eq("true") if "sweep_parent" in df else False
    spc_flag = df["samples_per_class"].astype(str).eq("sweep") if "samples_per_class" in df else False
    df["is_sweep_parent"] = parent_flag | spc_flag
    if "energy_method" in df:
        df["energy_estimated"] = df["energy_method"].astype(str).str.startswith("estimate")
    df["variant"] = variant_labels(df)
    if "source_weights" in df:
        df["source_kind"] = np.where(df["source_weights"].astype(str).str.lower().eq("random"),
                                     RANDOM_SOURCE, TRAINED_SOURCE)
    return df.sort_values("start_time", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def variant_labels(df: pd.DataFrame) -> pd.Series:
    """What a curve is of: "FE linearsvc", "FT config 2", "FT lp-ft", "QUANTA", ..."""
    method = df["method"].astype(str) if "method" in df else pd.Series("", index=df.index)
    out = method.map({"quanta": "QUANTA", "source": "Source training"}).fillna(method.str.upper())
    if "classifier" in df:
        fe = method.eq("fe") & df["classifier"].notna()
        out = out.where(~fe, "FE " + df["classifier"].astype(str))
    if "configuration" in df:
        conf = df["configuration"].astype(str)
        ft = method.eq("ft") & df["configuration"].notna()
        label = np.where(conf.str.isdigit(), "FT config " + conf, "FT " + conf)
        out = out.where(~ft, pd.Series(label, index=df.index))
    return out


def _key_clause(keys: Sequence[str], prefixes: Sequence[str]) -> tuple[str, list[str]]:
    """SQL matching exact metric/param keys or key prefixes (LIKE with escaped wildcards)."""
    clauses, args = [], []
    if keys:
        clauses.append(f"key IN ({_placeholders(len(keys))})")
        args += list(keys)
    for p in prefixes:
        clauses.append("key LIKE ? ESCAPE '\\'")
        args.append(p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    return " OR ".join(clauses), args


def _thin(hist: pd.DataFrame, max_points: int | None) -> pd.DataFrame:
    """Every k-th step (one stride for all runs, so their steps line up) plus each series' last one."""
    if not max_points or hist.empty:
        return hist
    stride = int(np.ceil((hist["step"].max() + 1) / max_points))
    if stride <= 1:
        return hist
    last = hist.groupby(["run_id", "key"])["step"].transform("max")
    return hist[(hist["step"] % stride == 0) | (hist["step"] == last)]


def metric_histories(uri: str, run_ids: Sequence[str], keys: Sequence[str] = (),
                     prefixes: Sequence[str] = (), max_points: int | None = 2000) -> pd.DataFrame:
    """The logged values (run_id, key, step, value) of a few runs' metrics, in step order.

    Meant for the handful of runs a chart draws: one SQL query on sqlite, one call per
    (run, key) otherwise. QUANTA logs lambda_S at every optimizer step (~100k steps for 60
    CIFAR epochs), so series longer than ``max_points`` steps are thinned to every k-th step
    (the same k for every run) plus their last value; ``None`` keeps everything.
    """
    run_ids = list(dict.fromkeys(run_ids))
    out_cols = ["run_id", "key", "step", "value"]
    if not run_ids or not (keys or prefixes):
        return pd.DataFrame(columns=out_cols)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        return pd.DataFrame(columns=out_cols)
    if path is not None:
        try:
            con = _connect(path)
            try:
                match, args = _key_clause(keys, prefixes)
                where = f"run_uuid IN ({_placeholders(len(run_ids))}) AND ({match})"
                params = [*run_ids, *args]
                stride_sql, stride_args = "", []
                if max_points:
                    (top,) = con.execute(f"SELECT MAX(step) FROM metrics WHERE {where}", params).fetchone()
                    stride = int(np.ceil(((top or 0) + 1) / max_points))
                    if stride > 1:  # thin in SQL: the rows never leave sqlite
                        stride_sql = (" AND (step % ? = 0 OR step = (SELECT MAX(m2.step) FROM metrics m2 "
                                      "WHERE m2.run_uuid = metrics.run_uuid AND m2.key = metrics.key))")
                        stride_args = [stride]
                hist = pd.read_sql_query(
                    f"SELECT run_uuid AS run_id, key, step, value, is_nan, timestamp FROM metrics "
                    f"WHERE {where}{stride_sql}", con, params=[*params, *stride_args])
            finally:
                con.close()
            hist.loc[hist["is_nan"].astype(bool), "value"] = np.nan
            # A step logged twice (a resumed run) keeps its latest value, as MLflow's UI does.
            hist = hist.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
            return hist[out_cols].reset_index(drop=True)
        except sqlite3.DatabaseError:
            pass
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    rows = []
    for rid in run_ids:
        run_keys = set(keys)
        if prefixes:
            run_keys |= {k for k in client.get_run(rid).data.metrics if k.startswith(tuple(prefixes))}
        for key in sorted(run_keys):
            rows += [(rid, key, m.step, m.value) for m in client.get_metric_history(rid, key)]
    hist = pd.DataFrame(rows, columns=out_cols).sort_values(["run_id", "key", "step"], kind="stable")
    return _thin(hist, max_points).reset_index(drop=True)


@dataclass
class RunDetails:
    """Everything logged about one run (for the comparison and error views of a few runs)."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifact_uri: str = ""

    @property
    def label(self) -> str:
        return f"{self.run_name or self.run_id[:8]} ({self.run_id[:8]})"

    def error_traceback(self) -> str | None:
        """The traceback a FAILED run kept as ``error.txt`` (local artifact stores only)."""
        from urllib.parse import unquote, urlparse

        uri = self.artifact_uri
        if not uri or not (uri.startswith("file://") or uri.startswith("/")):
            return None
        path = Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri) / "error.txt"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None


def run_details(uri: str, run_ids: Sequence[str]) -> list[RunDetails]:
    """All params, final metrics and tags of a few runs, in the order asked."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out = []
    for rid in dict.fromkeys(run_ids):
        try:
            run = client.get_run(rid)
        except Exception:
            continue  # archived for good by someone else, or a stale id: nothing to show
        out.append(RunDetails(rid, run.info.run_name or "", run.info.experiment_id, run.info.status,
                              dict(run.data.params), dict(run.data.metrics), dict(run.data.tags),
                              run.info.artifact_uri or ""))
    return out


def params_diff(details: Sequence[RunDetails], only_different: bool = True) -> pd.DataFrame:
    """Params side by side (rows: param, columns: runs); by default only those that differ."""
    if not details:
        return pd.DataFrame()
    labels = _distinct_labels([d.label for d in details])
    table = pd.DataFrame({label: pd.Series(d.params, dtype=object) for label, d in zip(labels, details, strict=True)})
    table = table.sort_index()
    if only_different and len(details) > 1:
        filled = table.fillna("—")
        table = table[filled.nunique(axis=1) > 1]
    table.index.name = "param"
    return table.fillna("—")


def metrics_side_by_side(details: Sequence[RunDetails]) -> pd.DataFrame:
    """Final metrics (rows) of a few runs (columns), accuracies left as fractions."""
    if not details:
        return pd.DataFrame()
    labels = _distinct_labels([d.label for d in details])
    table = pd.DataFrame({label: pd.Series(d.metrics, dtype=float) for label, d in zip(labels, details, strict=True)})
    table = table.loc[sorted(table.index, key=lambda k: (QUANTA_PREFIX in k, natural_key(k)))]
    table.index.name = "metric"
    return table


BEST_MARK = "★ "


def metrics_for_people(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`metrics_side_by_side` written as people read it (% with one decimal, FLOPs and energy with
    units, times as durations), the best value of each row marked with a star when it compares runs."""
    from tlcore import units

    out = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    for name, row in table.iterrows():
        direction = units.better(str(name))
        best = None
        values = row.dropna()
        if direction and len(values) > 1 and values.nunique() > 1:
            best = values.idxmax() if direction > 0 else values.idxmin()
        for col, value in row.items():
            text = units.metric(str(name), value)
            out.at[name, col] = (BEST_MARK + text) if col == best and pd.notna(value) else text
    return out


def _distinct_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def archive_runs(uri: str, run_ids: Sequence[str]) -> int:
    """Soft-delete runs (MLflow's ``delete_run``: recoverable with ``restore_runs`` or ``mlflow gc``
    never run); returns how many were archived."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for rid in run_ids:
        client.delete_run(rid)
    return len(run_ids)


def restore_runs(uri: str, run_ids: Sequence[str]) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for rid in run_ids:
        client.restore_run(rid)
    return len(run_ids)


def mlflow_ui_running(base_url: str, timeout_s: float = 0.3) -> bool:
    """Whether an MLflow UI answers at ``base_url`` (its ``/health`` route)."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def mlflow_run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# ---------------------------------------------------------------------------------------------
# Filtering


@dataclass
class RunFilter:
    """What the pages' sidebars choose. ``None`` keeps everything; a classifier choice applies to
    feature-extraction runs only and a configuration choice to fine-tuning runs only."""

    datasets: Sequence[str] | None = None
    backbones: Sequence[str] | None = None
    methods: Sequence[str] | None = None
    classifiers: Sequence[str] | None = None
    configurations: Sequence[str] | None = None
    statuses: Sequence[str] | None = None
    start: date | None = None
    end: date | None = None
    include_sweep_parents: bool = False


def filter_runs(df: pd.DataFrame, f: RunFilter) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for col, allowed in (("dataset", f.datasets), ("backbone", f.backbones), ("method", f.methods),
                         ("status", f.statuses)):
        if allowed is not None and col in df:
            keep &= df[col].astype(str).isin([str(a) for a in allowed])
    if f.classifiers is not None and "classifier" in df:
        keep &= ~df["method"].eq("fe") | df["classifier"].astype(str).isin(list(f.classifiers))
    if f.configurations is not None and "configuration" in df:
        keep &= ~df["method"].eq("ft") | df["configuration"].astype(str).isin([str(c) for c in f.configurations])
    day = df["start_time"].dt.date
    if f.start is not None:
        keep &= day >= f.start
    if f.end is not None:
        keep &= day <= f.end
    if not f.include_sweep_parents:
        keep &= ~df["is_sweep_parent"].astype(bool)
    return df[keep]


def options(df: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-missing values of a column, naturally sorted (for filter widgets)."""
    if column not in df:
        return []
    return sorted({str(v) for v in df[column].dropna()}, key=natural_key)


def natural_key(text: str) -> tuple:
    """Sort key that puts "layer2" before "layer10" and "-1" before "0"."""
    parts = re.split(r"(-?\d+(?:\.\d+)?)", str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p != "")


# ---------------------------------------------------------------------------------------------
# Trade-offs


def pareto_mask(cost: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Points on the Pareto front: no other point is as cheap and as accurate and better in one.

    Exact duplicates of a front point are on the front too (neither dominates the other); a
    point with the same cost but lower accuracy, or the same accuracy at a higher cost, is
    dominated. Points with a missing value are never on the front.
    """
    cost = np.asarray(cost, dtype=float)
    acc = np.asarray(accuracy, dtype=float)
    mask = np.zeros(len(cost), dtype=bool)
    valid = np.flatnonzero(np.isfinite(cost) & np.isfinite(acc))
    order = valid[np.lexsort((-acc[valid], cost[valid]))]  # cost ascending, accuracy descending
    best_acc, best_cost = -np.inf, None
    for i in order:
        if acc[i] > best_acc:
            mask[i] = True
            best_acc, best_cost = acc[i], cost[i]
        elif acc[i] == best_acc and cost[i] == best_cost:
            mask[i] = True
    return mask


def pareto_front(df: pd.DataFrame, cost: str, accuracy: str = "test_accuracy",
                 by: Sequence[str] = ("dataset", "spc")) -> pd.DataFrame:
    """The front's runs per group, by cost. Accuracies compare only within one dataset and one
    samples-per-class value (more labels score higher for any method), so those are the groups;
    weak runs (capped, near chance) never sit on a front."""
    if "weak" in df:
        df = df[~df["weak"].astype(bool)]
    by = [b for b in by if b in df]
    if df.empty:
        return df.assign(on_front=pd.Series(dtype=bool)).iloc[0:0]
    parts = []
    for _, group in df.groupby(list(by), dropna=False, sort=True):
        parts.append(group[pareto_mask(group[cost], group[accuracy])])
    front = pd.concat(parts) if parts else df.iloc[0:0]
    return front.sort_values([*by, cost, accuracy], ascending=[*(True for _ in by), True, False])


def tradeoff_points(df: pd.DataFrame, cost: str, accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Finished, non-parent runs that have both the cost and the accuracy."""
    if df.empty:
        return df
    keep = df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)
    keep &= df[cost].notna() & df[accuracy].notna()
    return df[keep]


def learning_curves(df: pd.DataFrame, accuracy: str = "test_accuracy",
                    keys: Sequence[str] = ("dataset", "backbone", "variant")) -> pd.DataFrame:
    """Accuracy vs samples per class: mean, spread and a 95 % interval over splits, per curve.

    Runs of the same (spc, split) are averaged first, so a re-run does not weigh a split twice;
    the spread is then over splits (std and the interval are NaN with one split). A split whose
    run failed or is missing is simply absent: ``n_splits`` says how many were averaged.
    ``n_weak`` counts the runs with a weak verdict (capped, near chance: :mod:`tlcore.quality`);
    ``weak`` marks a point that rests on any of them, ``weak_reason`` says why.
    """
    cols = [*keys, "spc", "mean", "std", "ci_low", "ci_high", "min", "max", "n_splits", "n_runs", "n_weak", "weak",
            "weak_reason"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pts = df[df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)
             & df["spc"].notna() & df[accuracy].notna()].copy()
    if pts.empty:
        return pd.DataFrame(columns=cols)
    pts["split_key"] = pts["split_index"].fillna(-1)
    pts["is_weak"] = pts["weak"].astype(bool) if "weak" in pts else False
    pts["verdict"] = pts.get("quality", np.nan)
    per_split = pts.groupby([*keys, "spc", "split_key"], dropna=False).agg(
        acc=(accuracy, "mean"), runs=(accuracy, "size"), weak=("is_weak", "sum")).reset_index()
    curves = per_split.groupby([*keys, "spc"], dropna=False).agg(
        mean=("acc", "mean"), std=("acc", "std"), min=("acc", "min"), max=("acc", "max"),
        n_splits=("acc", "size"), n_runs=("runs", "sum"), n_weak=("weak", "sum")).reset_index()
    intervals = per_split.groupby([*keys, "spc"], dropna=False)["acc"].apply(
        lambda a: pd.Series(quality.t_interval(a.tolist())[1:], index=["ci_low", "ci_high"])).unstack()
    curves = curves.merge(intervals.reset_index(), on=[*keys, "spc"], how="left")
    curves["n_weak"] = curves["n_weak"].astype(int)
    curves["weak"] = curves["n_weak"] > 0
    reasons = pts[pts["is_weak"]].groupby([*keys, "spc"], dropna=False)["verdict"].agg(
        lambda v: ", ".join(f"{n} {quality.LABELS.get(k, k)}" for k, n in v.value_counts().items()))
    curves = curves.merge(reasons.rename("weak_reason").reset_index(), on=[*keys, "spc"], how="left")
    curves["weak_reason"] = curves["weak_reason"].where(curves["weak"], "")
    return curves.sort_values([*keys, "spc"]).reset_index(drop=True)[cols]


def paired_differences(df: pd.DataFrame, accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Fine-tuning minus feature extraction at each samples-per-class value, paired by training draw.

    Runs trained on the same images (same ``train_hash``, or, for runs logged before it, the same
    split index) form a pair; ``diff`` is the mean FT - FE difference over pairs with its 95 %
    Student-t interval (NaN with one pair) and ``verdict``: ``ft_higher``/``fe_higher`` when the
    interval excludes 0, else ``not_resolved``. ``n_weak`` counts pairs with a weak run in them:
    such pairs are left out of ``diff`` (and listed) so a capped run never tips a comparison.
    """
    cols = ["dataset", "backbone", "reference", "variant", "spc", "diff", "ci_low", "ci_high", "n_pairs", "n_weak",
            "fe_mean", "ft_mean", "verdict"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pts = df[df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool) & df["spc"].notna()
             & df[accuracy].notna() & df["method"].isin(["fe", "ft"])].copy()
    if pts.empty:
        return pd.DataFrame(columns=cols)
    if "train_hash" in pts and pts["train_hash"].notna().any():
        pts["pair_key"] = pts["train_hash"].astype(object).where(pts["train_hash"].notna(),
                                                                 "split" + pts["split_index"].map(str))
    else:
        pts["pair_key"] = "split" + pts["split_index"].map(str)
    pts["is_weak"] = pts["weak"].astype(bool) if "weak" in pts else False
    per = pts.groupby(["dataset", "backbone", "method", "variant", "spc", "pair_key"], dropna=False).agg(
        acc=(accuracy, "mean"), weak=("is_weak", "any")).reset_index()
    fe = per[per["method"] == "fe"].rename(columns={"variant": "reference", "acc": "fe", "weak": "fe_weak"})
    ft = per[per["method"] == "ft"].rename(columns={"acc": "ft", "weak": "ft_weak"})
    pairs = ft.drop(columns="method").merge(fe.drop(columns="method"),
                                            on=["dataset", "backbone", "spc", "pair_key"])
    rows = []
    for key, g in pairs.groupby(["dataset", "backbone", "reference", "variant", "spc"], sort=True):
        weak = g["fe_weak"] | g["ft_weak"]
        ok = g[~weak]
        diff, lo, hi = quality.t_interval((ok["ft"] - ok["fe"]).tolist()) if len(ok) else (np.nan,) * 3
        if len(ok) >= 2 and np.isfinite(lo) and (lo > 0 or hi < 0):
            verdict = "ft_higher" if diff > 0 else "fe_higher"
        else:
            verdict = "not_resolved"
        rows.append({**dict(zip(["dataset", "backbone", "reference", "variant", "spc"], key, strict=True)),
                     "diff": diff, "ci_low": lo, "ci_high": hi, "n_pairs": len(ok), "n_weak": int(weak.sum()),
                     "fe_mean": float(ok["fe"].mean()) if len(ok) else np.nan,
                     "ft_mean": float(ok["ft"].mean()) if len(ok) else np.nan, "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def crossover_intervals(paired: pd.DataFrame) -> pd.DataFrame:
    """Where fine-tuning overtakes feature extraction, with the range these runs pin it to.

    Per (dataset, backbone, FE variant, FT variant): the crossover is resolved only when FE is
    significantly better at a smaller samples-per-class value and FT significantly better at a
    larger one (paired 95 % intervals); its interval is then [last FE-better value, first
    FT-better value] and ``spc`` the log-interpolated zero of the mean difference inside it.
    Otherwise ``resolved`` is False and ``note`` says what the runs show instead.
    """
    cols = ["dataset", "backbone", "reference", "variant", "resolved", "spc", "spc_low", "spc_high", "note"]
    rows = []
    if paired.empty:
        return pd.DataFrame(columns=cols)
    for key, g in paired.groupby(["dataset", "backbone", "reference", "variant"], sort=True):
        g = g.sort_values("spc")
        fe_better = g[g["verdict"] == "fe_higher"]["spc"].tolist()
        ft_better = g[g["verdict"] == "ft_higher"]["spc"].tolist()
        base = dict(zip(["dataset", "backbone", "reference", "variant"], key, strict=True))
        lows = [v for v in fe_better if any(u > v for u in ft_better)]
        if lows:
            low = max(lows)
            high = min(u for u in ft_better if u > low)
            inside = g[(g["spc"] >= low) & (g["spc"] <= high) & g["diff"].notna()]
            crossing = find_crossings(inside["spc"].to_numpy(float), np.zeros(len(inside)),
                                      inside["diff"].to_numpy(float))
            ups = [x for x, _, d in crossing if d > 0]
            spc = ups[-1] if ups else float(np.sqrt(low * high))
            rows.append({**base, "resolved": True, "spc": spc, "spc_low": low, "spc_high": high,
                         "note": f"{key[3]} overtakes {key[2]} between {low:g} and {high:g} samples per class"})
            continue
        if ft_better and not fe_better:
            note = f"{key[3]} scored higher at {', '.join(f'{v:g}' for v in ft_better)} samples per class; no point " \
                   f"where {key[2]} was clearly higher"
        elif fe_better and not ft_better:
            note = f"{key[2]} scored higher at {', '.join(f'{v:g}' for v in fe_better)} samples per class; " \
                   f"{key[3]} never clearly higher"
        else:
            note = "not resolved by these runs: no samples-per-class value separates them (95% intervals)"
        rows.append({**base, "resolved": False, "spc": np.nan, "spc_low": np.nan, "spc_high": np.nan, "note": note})
    return pd.DataFrame(rows, columns=cols)


def find_crossings(x: Sequence[float], reference: Sequence[float], other: Sequence[float],
                   log_x: bool = True) -> list[tuple[float, float, int]]:
    """Where ``other`` crosses ``reference`` (both sampled at ``x``, ascending).

    Returns (x, y, direction): direction +1 where ``other`` rises above ``reference``, -1 where
    it falls below. Between samples the curves are straight lines in log x (as drawn on the
    page's log axis). Touching without changing sides is not a crossing; a stretch of equality
    between opposite sides crosses at its middle.
    """
    x = np.asarray(x, dtype=float)
    ref = np.asarray(reference, dtype=float)
    oth = np.asarray(other, dtype=float)
    ok = np.isfinite(x) & np.isfinite(ref) & np.isfinite(oth) & ((x > 0) if log_x else True)
    x, ref, oth = x[ok], ref[ok], oth[ok]
    if len(x) < 2:
        return []
    u = np.log(x) if log_x else x
    d = oth - ref
    sign = np.sign(d)
    out = []
    last = None  # index of the last sample strictly on one side
    for i in range(len(d)):
        if sign[i] == 0:
            continue
        if last is not None and sign[i] != sign[last]:
            if i == last + 1:  # straight crossing between two samples
                t = d[last] / (d[last] - d[i])
                ux = u[last] + t * (u[i] - u[last])
                y = ref[last] + t * (ref[i] - ref[last])
            else:  # equal over samples last+1 .. i-1: cross at their middle
                mid = (u[last + 1] + u[i - 1]) / 2
                ux = mid
                y = float(np.interp(mid, u, ref))
            out.append((float(np.exp(ux) if log_x else ux), float(y), int(sign[i])))
        last = i
    return out


def crossovers(curves: pd.DataFrame, log_x: bool = True) -> pd.DataFrame:
    """Where each fine-tuning curve crosses each feature-extraction curve of the same dataset and
    backbone, interpolated between the samples-per-class values either has (within the range both
    cover)."""
    cols = ["dataset", "backbone", "reference", "variant", "spc", "accuracy", "direction"]
    rows = []
    if curves.empty:
        return pd.DataFrame(columns=cols)
    ordered = curves.sort_values("spc")
    arrays = {key: (g["spc"].to_numpy(float), g["mean"].to_numpy(float))
              for key, g in ordered.groupby(["dataset", "backbone", "variant"], sort=True)}
    pairs: dict[tuple, dict[str, list]] = {}
    for dataset, backbone, variant in arrays:
        side = "fe" if str(variant).startswith("FE") else "ft" if str(variant).startswith("FT") else None
        if side:
            pairs.setdefault((dataset, backbone), {"fe": [], "ft": []})[side].append(variant)
    to_axis = np.log if log_x else (lambda v: v)
    for (dataset, backbone), sides in sorted(pairs.items()):
        for ref in sorted(sides["fe"], key=natural_key):
            rx, ry = arrays[(dataset, backbone, ref)]
            for var in sorted(sides["ft"], key=natural_key):
                ox, oy = arrays[(dataset, backbone, var)]
                grid = np.union1d(rx, ox)
                grid = grid[(grid >= max(rx[0], ox[0])) & (grid <= min(rx[-1], ox[-1]))]
                if len(grid) < 2:
                    continue
                on_ref = np.interp(to_axis(grid), to_axis(rx), ry)
                on_var = np.interp(to_axis(grid), to_axis(ox), oy)
                for x, y, direction in find_crossings(grid, on_ref, on_var, log_x):
                    rows.append({"dataset": dataset, "backbone": backbone, "reference": ref, "variant": var,
                                 "spc": x, "accuracy": y,
                                 "direction": f"{var} overtakes {ref}" if direction > 0 else
                                 f"{ref} overtakes {var}"})
    return pd.DataFrame(rows, columns=cols)


def crossover_marks(cross: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The resolved crossovers of :func:`crossover_intervals` placed on their FE curve (``accuracy``
    interpolated on the log samples-per-class axis, as drawn), with ``direction`` for the hover."""
    marks = cross[cross["resolved"].astype(bool)] if not cross.empty else cross
    if marks.empty:
        return marks.assign(accuracy=pd.Series(dtype=float), direction=pd.Series(dtype=object))
    at = []
    for m in marks.itertuples():
        ref = curves[(curves["dataset"] == m.dataset) & (curves["backbone"] == m.backbone)
                     & (curves["variant"] == m.reference)].sort_values("spc")
        at.append(float(np.interp(np.log(m.spc), np.log(ref["spc"].to_numpy(float)), ref["mean"].to_numpy(float)))
                  if len(ref) else np.nan)
    return marks.assign(accuracy=at, direction=marks["note"])


def cost_ratio(df: pd.DataFrame, cost: str = "time_total_s") -> pd.DataFrame:
    """Mean cost of each fine-tuning variant over the mean cost of each feature-extraction variant,
    per dataset, backbone and samples per class (where both have finished runs)."""
    cols = ["dataset", "backbone", "reference", "variant", "spc", "fe_cost", "ft_cost", "ratio", "n_fe", "n_ft"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pts = df[df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool) & df["spc"].notna()
             & df[cost].notna() & df["method"].isin(["fe", "ft"])]
    means = pts.groupby(["dataset", "backbone", "method", "variant", "spc"]).agg(
        cost=(cost, "mean"), n=(cost, "size")).reset_index()
    fe = means[means["method"] == "fe"].rename(columns={"variant": "reference", "cost": "fe_cost", "n": "n_fe"})
    ft = means[means["method"] == "ft"].rename(columns={"cost": "ft_cost", "n": "n_ft"})
    joined = ft.merge(fe.drop(columns="method"), on=["dataset", "backbone", "spc"])
    joined = joined[joined["fe_cost"] > 0]
    joined["ratio"] = joined["ft_cost"] / joined["fe_cost"]
    return joined.sort_values(["dataset", "backbone", "reference", "variant", "spc"])[cols].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# QUANTA


def quanta_layers(df: pd.DataFrame) -> list[str]:
    """The layer names of the ``quanta_source/<layer>`` columns present."""
    return [c[len(QUANTA_PREFIX):] for c in df.columns if str(c).startswith(QUANTA_PREFIX)]


def layer_order(layers: Iterable[str], hint: Sequence[str] | None = None) -> list[str]:
    """Layers in network order: as ``hint`` lists them (a run's ``quanta_layers`` param), the rest
    naturally sorted (transfer indices 0..6, or tap names such as ``blocks.2`` before ``blocks.10``)."""
    layers = list(dict.fromkeys(str(x) for x in layers))
    hint = [h for h in (hint or []) if h in layers]
    return hint + sorted((x for x in layers if x not in hint), key=natural_key)


def layer_hint(df: pd.DataFrame) -> list[str]:
    """The layers in network order as the runs' ``quanta_layers`` param lists them (comma-separated), if logged."""
    if "quanta_layers" not in df:
        return []
    for value in df["quanta_layers"].dropna():
        return [s.strip() for s in str(value).split(",") if s.strip()]
    return []


def quanta_values(df: pd.DataFrame) -> pd.DataFrame:
    """Final lambda_S per (QUANTA run, layer), long: run_id, backbone, dataset (the target),
    source_task, source_kind (trained source or random-source control), layer, lambda_s."""
    cols = ["run_id", "backbone", "dataset", "source_task", "source_kind", "layer", "lambda_s", "status"]
    layers = quanta_layers(df)
    if df.empty or not layers:
        return pd.DataFrame(columns=cols)
    runs = df[df["method"].eq("quanta") & ~df["is_sweep_parent"].astype(bool)]
    if "source_task" not in runs:
        runs = runs.assign(source_task=np.nan)
    long = runs.melt(id_vars=["run_id", "backbone", "dataset", "source_task", "source_kind", "status"],
                     value_vars=[QUANTA_PREFIX + x for x in layers], var_name="layer", value_name="lambda_s")
    long["layer"] = long["layer"].str[len(QUANTA_PREFIX):]
    long = long[long["lambda_s"].notna()]
    return long[cols].reset_index(drop=True)


def quanta_summary(values: pd.DataFrame, hint: Sequence[str] | None = None) -> pd.DataFrame:
    """Final lambda_S per layer: mean, std, min, max and the number of runs, per backbone, target
    dataset and source kind, with ``layer_pos`` (0-based network order) and ``depth`` (0..1]."""
    cols = ["backbone", "dataset", "source_kind", "layer", "layer_pos", "depth", "mean", "std", "min", "max", "n"]
    if values.empty:
        return pd.DataFrame(columns=cols)
    out = values.groupby(["backbone", "dataset", "source_kind", "layer"], dropna=False)["lambda_s"].agg(
        ["mean", "std", "min", "max", "size"]).rename(columns={"size": "n"}).reset_index()
    order = layer_order(values["layer"], hint)
    pos = {name: i for i, name in enumerate(order)}
    out["layer_pos"] = out["layer"].map(pos)
    out["depth"] = (out["layer_pos"] + 1) / len(order)
    return out.sort_values(["backbone", "dataset", "source_kind", "layer_pos"])[cols].reset_index(drop=True)


def quanta_matrix(summary: pd.DataFrame, source_kind: str = TRAINED_SOURCE) -> pd.DataFrame:
    """Mean final lambda_S as a layers x target-dataset table (one backbone's rows expected)."""
    part = summary[summary["source_kind"] == source_kind]
    if part.empty:
        return pd.DataFrame()
    table = part.pivot_table(index="layer", columns="dataset", values="mean", aggfunc="mean")
    return table.reindex(layer_order(part.sort_values("layer_pos")["layer"]))


def quanta_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Per QUANTA run: the transferred layer, the source kind, the target's test accuracy and the
    source network's own test accuracy (when logged)."""
    cols = ["run_id", "backbone", "dataset", "source_task", "source_kind", "layer_to_transfer",
            "target_accuracy", "source_accuracy"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    runs = df[df["method"].eq("quanta") & df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)].copy()
    source = pd.Series(np.nan, index=runs.index)
    for name in SOURCE_ACCURACY_METRICS:
        if name in runs:
            source = source.fillna(runs[name])
    runs["source_accuracy"] = source
    runs["target_accuracy"] = runs["test_accuracy"]
    if "source_task" not in runs:
        runs["source_task"] = np.nan
    runs["layer_to_transfer"] = runs["layer_to_transfer"].astype(str).replace({"-1": "all", "nan": "?"})
    return runs[cols].reset_index(drop=True)


FT_FROZEN_FRACTION = {"0": 0.0, "1": 0.25, "2": 0.5, "3": 0.75}


def freezing_depth_accuracy(df: pd.DataFrame, backbone: str, dataset: str,
                            accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Fine-tuning accuracy per freezing configuration (0-3: about 0, 1/4, 1/2, 3/4 of the network
    frozen) for one backbone and dataset: mean, std and count over finished runs."""
    cols = ["configuration", "frozen_fraction", "mean", "std", "n"]
    if df.empty or "configuration" not in df:
        return pd.DataFrame(columns=cols)
    ft = df[df["method"].eq("ft") & df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)
            & df["backbone"].astype(str).eq(str(backbone)) & df["dataset"].astype(str).eq(str(dataset))
            & df[accuracy].notna()]
    ft = ft[ft["configuration"].astype(str).isin(list(FT_FROZEN_FRACTION))]
    if ft.empty:
        return pd.DataFrame(columns=cols)
    out = ft.groupby(ft["configuration"].astype(str))[accuracy].agg(["mean", "std", "size"]).reset_index()
    out = out.rename(columns={"size": "n"})
    out["frozen_fraction"] = out["configuration"].map(FT_FROZEN_FRACTION)
    return out.sort_values("frozen_fraction")[cols].reset_index(drop=True)


def lambda_steps(histories: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """lambda_S over training steps, averaged over runs, per (source kind, layer, step)."""
    cols = ["source_kind", "layer", "step", "mean", "std", "n"]
    if histories.empty:
        return pd.DataFrame(columns=cols)
    h = histories[histories["key"].str.startswith(QUANTA_PREFIX)].copy()
    h["layer"] = h["key"].str[len(QUANTA_PREFIX):]
    h = h.merge(df[["run_id", "source_kind"]], on="run_id", how="left")
    h["source_kind"] = h["source_kind"].fillna(TRAINED_SOURCE)
    out = h.groupby(["source_kind", "layer", "step"])["value"].agg(["mean", "std", "size"]).reset_index()
    return out.rename(columns={"size": "n"})[cols]


#: The settings a QUANTA run and its random-source control must share to be compared (``transfer_mode``:
#: every layer at once, or one layer per run).
QUANTA_SETTINGS = ("backbone", "dataset", "transfer_mode", "nb_of_target_epochs", "learning_rate", "quanta_lr",
                   "samples_per_class")


def quanta_layer_verdicts(df: pd.DataFrame, with_runs: Iterable[str] | None = None) -> pd.DataFrame:
    """Per layer: final lambda_S of the trained-source runs minus the random-source control's, with
    the same settings (:data:`QUANTA_SETTINGS`), and the verdict of :func:`tlcore.quality.judge_layer`.

    One row per (settings, source task, layer): ``delta`` and its interval (``low``, ``high``),
    ``quality`` (signal / no_signal), ``direction`` (+1 the target keeps the source's features,
    -1 it prefers its own, 0 no signal), ``meaning`` and ``reason``; ``trained``/``control`` are
    the means, ``n_trained``/``n_control`` the runs; ``settings`` names the group for people.
    Trained-source runs with no control of the same settings get ``matched`` False. ``with_runs``
    keeps only the settings groups holding one of those run ids (a job's card).
    """
    cols = ["backbone", "dataset", "source_task", "settings", "settings_key", "layer", "layer_pos", "trained",
            "control", "delta", "low", "high", "n_trained", "n_control", "quality", "direction", "meaning", "reason",
            "matched"]
    layers = quanta_layers(df)
    if df.empty or not layers:
        return pd.DataFrame(columns=cols)
    runs = df[df["method"].eq("quanta") & df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)].copy()
    if runs.empty:
        return pd.DataFrame(columns=cols)
    for col in ("layer_to_transfer", *QUANTA_SETTINGS, "source_task"):
        if col not in runs:
            runs[col] = np.nan
    every = runs["layer_to_transfer"].astype(str).isin(["-1", "all"])
    runs["transfer_mode"] = np.where(every, "every layer at once", "one layer per run")
    runs["settings_key"] = runs[list(QUANTA_SETTINGS)].apply(lambda col: col.map(str)).agg("|".join, axis=1)
    order = layer_order(layers, layer_hint(runs))
    pos = {name: i for i, name in enumerate(order)}
    rows = []
    wanted = set(with_runs) if with_runs is not None else None
    for key, group in runs.groupby("settings_key", sort=False):
        if wanted is not None and not wanted & set(group["run_id"]):
            continue
        control = group[group["source_kind"] == RANDOM_SOURCE]
        trained = group[group["source_kind"] == TRAINED_SOURCE]
        first = group.iloc[0]
        settings = (f"{first['nb_of_target_epochs']} epoch(s), lr {first['learning_rate']}, QUANTA lr "
                    f"{first['quanta_lr']}, {first['samples_per_class']} per class, {first['transfer_mode']}")
        for task, t_runs in trained.groupby(trained["source_task"].astype(str), sort=True):
            for layer in order:
                col = QUANTA_PREFIX + layer
                t_vals = t_runs[col].dropna().to_numpy(float) if col in t_runs else np.array([])
                c_vals = control[col].dropna().to_numpy(float) if col in control else np.array([])
                if len(t_vals) == 0:
                    continue
                v = quality.judge_layer(layer, t_vals, c_vals, [quality.LAMBDA_START])
                rows.append({"backbone": first["backbone"], "dataset": first["dataset"], "source_task": task,
                             "settings": settings, "settings_key": key, "layer": layer, "layer_pos": pos[layer],
                             "trained": float(t_vals.mean()),
                             "control": float(c_vals.mean()) if len(c_vals) else np.nan, "delta": v.delta,
                             "low": v.low, "high": v.high, "n_trained": v.n_trained, "n_control": v.n_control,
                             "quality": v.quality, "direction": v.direction, "meaning": v.meaning,
                             "reason": v.reason, "matched": len(c_vals) > 0})
    return pd.DataFrame(rows, columns=cols)


def quanta_depth(verdicts: pd.DataFrame) -> tuple[int, int] | None:
    """(k, n): the target kept the source's features (signal, above the control) in the first k of its n
    layers; None when no layer shows any signal (then the runs do not speak about depth)."""
    if verdicts.empty or not (verdicts["quality"] == quality.SIGNAL).any():
        return None
    ordered = verdicts.sort_values("layer_pos")
    k = 0
    for direction in ordered["direction"]:
        if direction > 0:
            k += 1
        else:
            break
    return k, len(ordered)


def quanta_caveat(summary: pd.DataFrame) -> str | None:
    """The sentence a page must show when lambda_S has no random-source control beside it."""
    if summary.empty:
        return None
    kinds = set(summary["source_kind"])
    if RANDOM_SOURCE not in kinds:
        return ("No random-source control run here: lambda_S also moves with the scale of the activations, "
                "so a high value alone does not show that a layer transfers. Run QUANTA again with source "
                "weights = random and compare.")
    if TRAINED_SOURCE not in kinds:
        return "Only random-source control runs here: run QUANTA with a trained source to compare against them."
    return None


def describe_counts(df: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and method for the page headers (what is shown, what is left out)."""
    if df.empty:
        return {"total": 0, "by_status": {}, "by_method": {}}
    return {"total": len(df), "by_status": df["status"].value_counts().to_dict(),
            "by_method": df["method"].value_counts().to_dict()}


def display_table(df: pd.DataFrame, accuracy: Sequence[str] = ("test_accuracy",), costs: Sequence[str] = (),
                  extra: Sequence[str] = ()) -> pd.DataFrame:
    """Runs as a readable table (accuracies in %, costs under their axis labels), for the pages'
    tables and CSV exports; the run id stays the last column."""
    out = pd.DataFrame(index=df.index)
    out["run"] = df["run_name"]
    for col, label in (("variant", "variant"), ("dataset", "dataset"), ("backbone", "backbone"), ("spc", "spc"),
                       ("split_index", "split")):
        if col in df:
            out[label] = df[col]
    for col in extra:
        if col in df:
            out[col] = df[col]
    for col in accuracy:
        if col in df:
            out[ACCURACY_METRICS.get(col, col).replace(" (balanced)", "") + " (%)"] = (df[col] * 100.0).round(1)
    for col in costs:
        if col in df:  # three significant digits, in the unit the charts use (Wh, g)
            out[COST_AXES.get(col, col)] = (df[col] * COST_SCALE.get(col, 1.0)).map(
                lambda v: float(f"{v:.3g}") if pd.notna(v) else v)
    if any(c in ENERGY_AXES for c in costs) and "energy_method" in df:
        out["energy method"] = df["energy_method"]
    if "quality" in df:
        out["verdict"] = df["quality"].map(lambda q: quality.LABELS.get(q, q) if isinstance(q, str) else "")
        out["why"] = df["quality_reason"].fillna("") if "quality_reason" in df else ""
    out["status"] = df["status"]
    out["started"] = df["start_time"]
    out["run_id"] = df["run_id"]
    return out.reset_index(drop=True)
