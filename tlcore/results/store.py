"""Reading the MLflow store into one tidy row per run, and the few calls that touch single runs.

Reading is the slow part of an analysis page: ``search_runs`` builds a Python object per run
(~1 ms each: 5 s for 5,000 runs), with every param, metric and tag. A page asks instead for a
:class:`RunColumns` (the params, final metrics and tags it draws) and gets one row per run. On
an sqlite store (the default) the rows come from three read-only SQL queries over MLflow's
``runs``/``params``/``latest_metrics``/``tags`` tables, pivoted by pandas, without importing
mlflow; any other store (a tracking server) goes through ``MlflowClient.search_runs``. Both paths
return the same frame (a test holds them equal). Metric histories are read only for the few runs
a chart needs. Archiving a run is MLflow's soft delete; nothing here deletes for good.
"""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tlcore import quality
from tlcore.errors import TLError
from tlcore.methods.base import EXPERIMENTS, method_of_experiment
from tlcore.results.columns import (
    BEST_VAL_METRIC,
    RANDOM_SOURCE,
    TAG_COLUMNS,
    TRAINED_SOURCE,
    VERDICT_METRICS,
    VERDICT_PARAMS,
    VIEWS,
    RunColumns,
)
from tlcore.tracking import sqlite_path


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
        param_cols = [c for c in df.columns if c in {*VERDICT_PARAMS, "samples_per_class", "classifier"}]
        metric_cols = [c for c in df.columns if c in {*VERDICT_METRICS, "test_accuracy", "val_accuracy"}]
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


def store_marker(uri: str) -> tuple | None:
    """A value that changes whenever an sqlite store is written: the database file's size, mtime and
    sqlite's own file change counter (header bytes 24-27, bumped by every committed write), and the
    write-ahead log's size and mtime. A cache keyed by it re-reads at once after any write (a job's,
    or another process's) and never re-reads an unchanged store, which costs seconds at 50,000 runs.
    A tracking server's marker is its newest run and its latest-ended run (two one-row searches, ~10 ms
    each on a LAN): a run started or ended anywhere changes it. ``None`` when neither works (an
    unreachable server, another backend): callers keep a TTL."""
    path = sqlite_path(uri)
    if path is None:
        return _server_marker(uri) if uri.startswith(("http://", "https://")) else None
    marker: list = []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            st = file.stat()
            marker.append((st.st_size, st.st_mtime_ns))
        except OSError:
            marker.append(None)
    try:
        with open(path, "rb") as f:
            marker.append(f.read(100)[24:28])
    except OSError:
        marker.append(None)
    return tuple(marker)


def _check_server(uri: str) -> None:
    """Raise at once when a tracking server does not answer: MLflow's client retries one for minutes.
    (Unlike :func:`mlflow_ui_running`, any HTTP answer counts, and the error is kept for the message.)"""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2).close()
        except urllib.error.HTTPError:
            pass  # it answered (perhaps asking for credentials MLflow's client sends): let the client go on


def _server_marker(uri: str) -> tuple | None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    try:
        _check_server(uri)
        client = MlflowClient(tracking_uri=uri)
        ids = sorted(e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL))
        if not ids:
            return ("server",)
        newest = client.search_runs(ids, "", run_view_type=ViewType.ALL, max_results=1,
                                    order_by=["attributes.start_time DESC"])
        ended = client.search_runs(ids, "attributes.status != 'RUNNING'", run_view_type=ViewType.ALL, max_results=1,
                                   order_by=["attributes.end_time DESC"])
    except Exception:  # the reader says what is wrong; the cache just falls back to its TTL
        return None
    mark = lambda runs: (runs[0].info.run_id, runs[0].info.end_time, runs[0].info.status) if runs else None
    return ("server", tuple(ids), mark(newest), mark(ended))


def _store_error(uri: str, exc: Exception) -> TLError:
    return TLError(f"Could not read runs from {uri} ({type(exc).__name__}: {exc}). Check that the tracking server "
                   "answers, or point TLCORE_MLFLOW_PATH (--mlflow-path) at a results folder.")


def load_view(uri: str, view: str, archived: bool = False) -> pd.DataFrame:
    """``load_runs`` for one of the pages' named column sets (:data:`VIEWS`)."""
    methods = {"tradeoffs": ("fe", "ft"), "quanta": ("quanta", "ft", "source"), "ranking": ("rank",)}.get(view)
    return load_runs(uri, VIEWS[view], methods, archived)


class _NotAnMlflowStore(Exception):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: the analysis pages never write the store through SQL. ``timeout`` waits out a
    # writer's lock instead of failing while a job logs.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)


#: Scan the params/metrics/tags tables whole when the page's runs are at least 1/this of the store's.
SCAN_ABOVE_FRACTION = 4

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

        # When the page's runs are most of the store (the usual case), one pass over each table beats
        # sqlite's plan of an index lookup per matching key row: 3x faster with 50,000 runs
        # (docs/benchmarks.md). A page reading a small part of a big store keeps the index.
        (n_all,) = con.execute("SELECT COUNT(*) FROM runs").fetchone()
        scan = " NOT INDEXED" if len(runs) * SCAN_ABOVE_FRACTION >= n_all else ""

        def long(table: str, keys: Sequence[str], prefixes: Sequence[str] = (), extra: str = "") -> pd.DataFrame:
            match, args = _key_clause(keys, prefixes)
            if not match:
                return pd.DataFrame(columns=["run_id", "key", "value"])
            return pd.read_sql_query(
                f"SELECT run_uuid AS run_id, key, value{extra} FROM {table}{scan} "
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
        _check_server(uri)
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
    df["method"] = df["experiment"].map(method_of_experiment).fillna(from_param)
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
