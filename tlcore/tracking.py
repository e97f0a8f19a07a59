"""MLflow tracking through ``MlflowClient`` with explicit run ids.

Never the fluent active-run API: it keeps the active run per thread but the experiment per
process, and from a worker thread it silently opened a second run that stayed RUNNING. The
tracking URI is resolved to an absolute one once (the default depends on the working
directory otherwise). A run ends FINISHED, FAILED (error text kept as a tag and an artifact)
or KILLED (cancelled); metrics logged before the end stay. Each run carries its owner's pid,
host and a heartbeat, so a server restarted after a crash can mark its orphans FAILED.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.errors import Cancelled, TLError, TrainingDiverged
from tlcore.sqlite_store import mlflow_program, open_sqlite_store
from tlcore.version import __version__

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
HEARTBEAT_EVERY_S = 20.0
STALE_AFTER_S = 600.0

TAG_PID, TAG_HOST, TAG_START, TAG_HEARTBEAT = "tlcore.pid", "tlcore.host", "tlcore.process_start", "tlcore.heartbeat"
TAG_ERROR, TAG_ERROR_TYPE = "error", "error_type"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"

#: The method registry (:data:`tlcore.methods.base.methods`), handed down by that module when it is imported (it
#: sits above this one): a run goes to the experiment its method's record names.
_methods: Any = None


def use_method_registry(registry: Any) -> None:
    """Name each method's experiment from ``registry`` (called once by :mod:`tlcore.methods.base`)."""
    global _methods
    _methods = registry


def experiment_of(method: str) -> str:
    """The MLflow experiment of ``method``'s runs: its record's, or the name itself for a method no record names."""
    if _methods is None:
        raise RuntimeError(f"No method registry to name the experiment of {method!r} runs: import tlcore.methods "
                           f"(which registers the methods) before starting runs.")
    return _methods.get(method).experiment if _methods.knows(method) else method

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def _abs_sqlite(uri: str) -> str:
    path = uri[len("sqlite:///"):]
    if path and not path.startswith("/") and ":memory:" not in path:
        path = str(Path(path).resolve())
    return f"sqlite:///{path}"


def is_file_store(folder: Path) -> bool:
    """Whether a folder already is an MLflow file store (the seed's ``../mlruns``): ``<id>/meta.yaml``."""
    try:
        return any(p.is_dir() and p.name.isdigit() and (p / "meta.yaml").exists() for p in folder.iterdir())
    except OSError:
        return False


def _file_store_uri(path: Path) -> str:
    """A file store the user asked for (a ``file:`` URI, or a folder that already is one). MLflow 3
    refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` opts in; asking for one is that opt-in."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return path.resolve().as_uri()


def file_store_path(uri: str) -> Path | None:
    """The folder of a ``file:`` store URI, else None."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return None


def store_folder(uri: str) -> Path | None:
    """The folder things kept *beside* a local store go in (feature cache, journal): the sqlite
    file's folder, or the folder holding a file store; None for a tracking server."""
    if (path := sqlite_path(uri)) is not None:
        return path.parent
    if (path := file_store_path(uri)) is not None:
        return path.parent
    return None


def resolve_tracking_uri(mlflow_path: str | os.PathLike | None = None) -> str:
    """``--mlflow-path`` (a folder: results live inside it, or a URI), else ``MLFLOW_TRACKING_URI``,
    else ``sqlite:///<cwd>/mlflow.db``; always absolute.

    A folder gets an sqlite store inside (``mlflow ui`` started in that folder opens it: MLflow's
    default store is ``./mlflow.db``), unless it already is a file store (the seed's ``../mlruns``
    with its runs), which is kept as one; a ``file:`` URI is a file store.
    """
    if mlflow_path:
        s = str(mlflow_path)
        if s.startswith("file:"):
            return _file_store_uri(file_store_path(s) or Path(s[5:]))
        if "://" in s:
            return _abs_sqlite(s) if s.startswith("sqlite:///") else s
        folder = Path(s).expanduser().resolve()
        if is_file_store(folder):
            return _file_store_uri(folder)
        if folder.suffix == ".db":
            folder.parent.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{folder}"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / DB_NAME}"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        if env.startswith("file:"):
            return resolve_tracking_uri(env)
        if env.startswith("sqlite:///"):
            return _abs_sqlite(env)
        if "://" not in env:
            return resolve_tracking_uri(env)
        return env
    return f"sqlite:///{Path.cwd().resolve() / DB_NAME}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI, else None (a server or another backend)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def artifact_root(uri: str) -> str | None:
    """Artifacts sit beside a sqlite store (``<folder>/mlartifacts``); servers keep their own."""
    path = sqlite_path(uri)
    return str(path.parent / ARTIFACTS_DIR) if path is not None else None


def store_description(uri: str) -> str:
    """One line for the UI: where results are stored and how to open them in the MLflow UI."""
    root = artifact_root(uri)
    extra = f" (artifacts in {root})" if root else ""
    return f"{uri}{extra}"


def mlflow_ui_command(uri: str) -> str:
    """The command that opens this store in MLflow's UI, runnable as printed (a file store needs MLflow 3's
    opt-in; a virtual environment need not be active). A tracking server serves its own UI: its address."""
    if uri.startswith(("http://", "https://")):
        return uri
    root = artifact_root(uri)
    cmd = f"{mlflow_program()} ui --backend-store-uri {uri}"
    if file_store_path(uri) is not None:
        cmd = f"MLFLOW_ALLOW_FILE_STORE=true {cmd}"
    if root:
        cmd += f" --default-artifact-root {root}"
    return cmd


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def owner_alive(pid: int, start: float | None) -> bool:
    try:
        import psutil

        if not psutil.pid_exists(pid):
            return False
        if start is None:
            return True
        return abs(psutil.Process(pid).create_time() - start) < 1.0
    except Exception:
        return False


def _stringify(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "none"
    return str(v)


class Tracker:
    """One tracking store. Thread-safe: a worker thread and the UI can share it."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(uri)
        self._client = None
        self._experiment_ids: dict[str, str] = {}

    @property
    def client(self):
        if self._client is None:
            # our reporter draws progress; MLflow's own artifact bars would print on stderr even with --quiet
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            # nor print "View run ... at: http://..." on stdout when a run on a server ends (it broke `rank --json`)
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            from mlflow.tracking import MlflowClient

            if (path := sqlite_path(self.uri)) is not None:
                self._client = open_sqlite_store(self.uri, path)
            else:
                self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self, name: str, create: bool = True) -> str | None:
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            if not create:
                return None
            root = artifact_root(self.uri)
            location = None
            if root:
                location = (Path(root) / name.lower().replace(" ", "_")).as_uri()
            try:
                # classic training runs: MLflow 3's UI otherwise opens runs in its GenAI evaluation view
                eid = self.client.create_experiment(name, artifact_location=location,
                                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                exp = self.client.get_experiment_by_name(name)  # created meanwhile by another thread
                if exp is None:
                    raise
                eid = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            eid = exp.experiment_id
            if create and exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # a store made before this tag
                with contextlib.suppress(Exception):
                    self.client.set_experiment_tag(eid, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self._experiment_ids[name] = eid
        return eid

    def start_run(self, method: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                  parent_run_id: str | None = None, run_name: str | None = None, defer: bool = False) -> RunHandle:
        """Create a RUNNING run in the method's experiment (design.md names), owned by this process.

        ``defer``: hold the run's params, metrics and tags until it ends, then write them in one batch with its
        verdict (judged from what it logged, without reading the run back): for runs of a fraction of a
        second, such as a sweep's feature-extraction points, where each store round trip (~10-30 ms on
        sqlite) costs more than the work. A crash before the end leaves such a run with its tags only.
        """
        experiment = experiment_of(method)
        eid = self.experiment_id(experiment)
        pid = os.getpid()
        all_tags = {
            "tlcore_version": __version__,
            TAG_PID: str(pid),
            TAG_HOST: socket.gethostname(),
            TAG_START: str(_process_start_time(pid) or ""),
            TAG_HEARTBEAT: f"{time.time():.0f}",
            "method": method,
        }
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run = self.client.create_run(eid, tags=all_tags, run_name=run_name)
        handle = RunHandle(self, run.info.run_id, eid, _last_heartbeat=time.time())  # the tags hold a heartbeat
        if defer:
            handle._pending = _Pending(tags=dict(all_tags))
        if all_tags.get("seed_metric_names") == "true":
            handle.seed_names = method
        if params:
            handle.log_params(params)
        return handle

    def resume_run(self, run_id: str) -> RunHandle:
        """Reopen a run (FAILED or KILLED) to continue it; ownership moves to this process."""
        try:
            run = self.client.get_run(run_id)
        except Exception:
            raise TLError(f"No run with id {run_id!r} in {self.uri}; check the id and --mlflow-path.") from None
        handle = RunHandle(self, run_id, run.info.experiment_id)
        if run.data.tags.get("seed_metric_names") == "true":
            handle.seed_names = run.data.tags.get("method")
        self.client.update_run(run_id, status="RUNNING")
        pid = os.getpid()
        handle.set_tags({TAG_PID: str(pid), TAG_HOST: socket.gethostname(),
                         TAG_START: str(_process_start_time(pid) or ""), TAG_HEARTBEAT: f"{time.time():.0f}",
                         TAG_ERROR: "", "resumed": "true"})
        return handle

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def fail_orphaned_runs(self, stale_after_s: float = STALE_AFTER_S) -> list[str]:
        """Mark FAILED the runs left RUNNING by a process that is gone; returns their ids.

        A run of this host is orphaned when its owner pid is dead (or reused by another
        process); a run of another host when its heartbeat is older than ``stale_after_s``.
        """
        from mlflow.entities import ViewType

        if (path := sqlite_path(self.uri)) is not None and not path.exists():
            return []  # no store yet, so no run left behind (and looking must not create one)
        exps = self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
        if not exps:
            return []
        host = socket.gethostname()
        failed = []
        runs = self.client.search_runs([e.experiment_id for e in exps], "attributes.status = 'RUNNING'",
                                       max_results=5000)
        for run in runs:
            tags = run.data.tags
            pid = int(tags.get(TAG_PID, "0") or 0)
            start = float(tags[TAG_START]) if tags.get(TAG_START) else None
            heartbeat = float(tags.get(TAG_HEARTBEAT, "0") or 0)
            if tags.get(TAG_HOST) == host:
                if owner_alive(pid, start):
                    continue
                reason = (f"The process that ran this run (pid {pid} on {host}) ended without finishing it, e.g. the "
                          "server was killed or crashed; metrics logged before that are kept.")
            else:
                age = time.time() - heartbeat
                if age < stale_after_s:
                    continue
                reason = (f"No heartbeat from the process that ran this run ({tags.get(TAG_HOST, 'unknown host')}) "
                          f"for {age / 60:.0f} minutes; it is assumed dead. Metrics logged before that are kept.")
            handle = RunHandle(self, run.info.run_id, run.info.experiment_id)
            handle.set_tags({TAG_ERROR: reason, TAG_ERROR_TYPE: "orphaned"})
            self.client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
        return failed


@dataclass
class _Pending:
    """What a deferred run logged and has not written yet; with the tags it was created with, the whole run."""

    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # mlflow Param by key: a key logged twice is written once
    metrics: list = field(default_factory=list)
    written_tags: frozenset[str] = frozenset()  # the creation tags, already in the store

    def __post_init__(self) -> None:
        self.written_tags = frozenset(self.tags)


@dataclass
class RunHandle:
    """One MLflow run, addressed by id. As a context manager it ends the run by how the block ends."""

    tracker: Tracker
    run_id: str
    experiment_id: str
    _last_heartbeat: float = 0.0
    ended: str | None = None
    seed_names: str | None = None  # a method: also log the seed's metric and param names (--seed-metric-names)
    reopened: bool = False  # an earlier attempt's run, continued (a cluster task retried after its worker died)
    _artifact_uri: str | None = None  # never changes for a run: asked once, not once per checkpoint
    _pending: _Pending | None = None  # a deferred run (Tracker.start_run(defer=True)): writes wait for its end

    @property
    def client(self):
        return self.tracker.client

    def _param_items(self, params: Mapping[str, Any]) -> list:
        from mlflow.entities import Param

        params = dict(params)
        if self.seed_names:
            from tlcore.seed_names import seed_params

            params.update(seed_params(self.seed_names, params))
        return [Param(str(k), _stringify(v)[:6000]) for k, v in params.items()]

    def _metric_items(self, metrics: Mapping[str, float | None], step: int = 0) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items() if v is not None]
        if self.seed_names:
            from tlcore.seed_names import seed_metrics

            named, seed_step = seed_metrics(self.seed_names, dict(metrics), int(step))
            items += [Metric(k, v, now, seed_step) for k, v in named.items()]
        return items

    @staticmethod
    def _step_items(series: Mapping[str, Sequence[float]]) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(str(k), float(v), now, i) for k, values in series.items() for i, v in enumerate(values)
                if v is not None and math.isfinite(v)]

    def _send(self, params: Sequence = (), metrics: Sequence = (), tags: Sequence = ()) -> None:
        """One store round trip per 100 params / 500 metrics / 100 tags (MLflow's batch limits), not one per
        value; a deferred run keeps them for its end."""
        if self._pending is not None:
            self._pending.params.update((p.key, p) for p in params)
            self._pending.metrics.extend(metrics)
            self._pending.tags.update((t.key, t.value) for t in tags)
            return
        params, metrics, tags = list(params), list(metrics), list(tags)
        while params or metrics or tags:
            self.client.log_batch(self.run_id, params=params[:100], metrics=metrics[:500], tags=tags[:100])
            params, metrics, tags = params[100:], metrics[500:], tags[100:]

    def flush(self) -> None:
        """Write what a deferred run holds, in as few batches as MLflow allows; later writes go straight out."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in pending.tags.items() if k not in pending.written_tags]
        self._send(list(pending.params.values()), pending.metrics, tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._send(params=self._param_items(params))

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        self._send(metrics=self._metric_items(metrics, step))
        self.heartbeat()

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step)

    def log_steps(self, series: Mapping[str, Sequence[float]]) -> None:
        """Each ``key``'s values at steps 0, 1, ... in one batch (a per-tap or per-draw series: one call, not one
        store round trip per value, which costs ~10 ms each on sqlite)."""
        self._send(metrics=self._step_items(series))

    def log_all(self, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float | None] | None = None,
                steps: Mapping[str, Sequence[float]] | None = None) -> None:
        """Params, metrics (step 0) and step series in as few round trips as MLflow's batch limits allow: what a
        run learns at its end is one write, not one per kind."""
        self._send(params=self._param_items(params or {}),
                   metrics=self._metric_items(metrics or {}) + self._step_items(steps or {}))
        self.heartbeat()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._send(tags=[RunTag(str(k), str(v)[:5000]) for k, v in tags.items()])

    def heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if self._pending is not None:  # a deferred run is short: its creation tags hold its heartbeat
            return
        if force or now - self._last_heartbeat > HEARTBEAT_EVERY_S:
            self._last_heartbeat = now
            self.client.set_tag(self.run_id, TAG_HEARTBEAT, f"{now:.0f}")

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dict(self, data: dict, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, default=str), name)

    def artifact_dir(self) -> Path | None:
        """Local folder of this run's artifacts (sqlite stores), for checkpoints written in place; None on a
        tracking server that serves them (``mlflow-artifacts:``)."""
        if self._artifact_uri is None:
            self._artifact_uri = self.client.get_run(self.run_id).info.artifact_uri
        uri = self._artifact_uri
        if uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            return Path(unquote(urlparse(uri).path))
        if uri.startswith("/"):
            return Path(uri)
        return None

    # -- lifecycle ------------------------------------------------------------------------------
    def finish(self) -> None:
        if self.ended is None:
            self.record_verdict()
            self.flush()
            self.client.set_terminated(self.run_id, "FINISHED")
            self.ended = "FINISHED"

    def _logged(self) -> tuple[dict[str, str], dict[str, float], dict[str, str], list[float]]:
        """(params, latest metrics, tags, val_loss per epoch) as the store holds them, or, for a deferred
        run, as it will once written: judging it then costs no read."""
        if self._pending is not None:
            p = self._pending
            params = {k: v.value for k, v in p.params.items()}
            ordered = sorted(p.metrics, key=lambda m: (m.step, m.timestamp))
            metrics = {m.key: m.value for m in ordered}
            by_step = {m.step: m.value for m in ordered if m.key == "val_loss"}
            return params, metrics, dict(p.tags), [by_step[k] for k in sorted(by_step)]
        run = self.client.get_run(self.run_id)
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        losses = []
        if (tags.get("method") or params.get("method", "")) in ("ft", "source", "quanta"):
            history = sorted(self.client.get_metric_history(self.run_id, "val_loss"),
                             key=lambda m: (m.step, m.timestamp))
            by_step = {m.step: m.value for m in history}  # a resumed epoch keeps its latest value
            losses = [by_step[k] for k in sorted(by_step)]
        return params, metrics, tags, losses

    def record_verdict(self, status: str = "FINISHED") -> None:
        """Tag what the run earned (``quality``, ``quality_reason``: :mod:`tlcore.quality`) from what it
        logged. Judging never fails a run: on any error the run simply carries no verdict (the pages
        judge it again when they read it)."""
        from tlcore import quality

        try:
            params, metrics, tags, losses = self._logged()
            method = tags.get("method") or params.get("method", "")
            if params.get("samples_per_class") == "sweep" or tags.get("sweep_parent") == "true":
                children = self.client.search_runs([self.experiment_id],
                                                   f"tags.`mlflow.parentRunId` = '{self.run_id}'", max_results=10000)
                verdict = quality.summarize([c.data.tags.get(quality.QUALITY_TAG) for c in children])
            else:
                verdict = quality.judge_run(method, status, params, metrics, losses, tags.get(TAG_ERROR_TYPE))
            if verdict is not None:
                self.set_tags(verdict.tags())
        except Exception as exc:  # a verdict is a label, never a reason to lose a run
            logging.getLogger(__name__).debug("no verdict for run %s: %s", self.run_id, exc)

    def kill(self, reason: str = "Cancelled by the user; metrics logged before that are kept.") -> None:
        if self.ended is None:
            self.set_tags({TAG_ERROR: reason, TAG_ERROR_TYPE: "cancelled"})
            self.flush()
            self.client.set_terminated(self.run_id, "KILLED")
            self.ended = "KILLED"

    def fail(self, exc: BaseException) -> None:
        """End FAILED, keeping the one-sentence message as a tag and the traceback as ``error.txt``."""
        if self.ended is not None:
            return
        message = str(exc) if isinstance(exc, TLError) else f"{type(exc).__name__}: {exc}"
        try:
            tags = {TAG_ERROR: message or type(exc).__name__, TAG_ERROR_TYPE: type(exc).__name__}
            if isinstance(exc, TrainingDiverged):
                from tlcore.quality import DIVERGED_VERDICT

                tags.update(DIVERGED_VERDICT.tags())
            self.set_tags(tags)
            self.flush()
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log_text(tb, "error.txt")
        finally:
            self.client.set_terminated(self.run_id, "FAILED")
            self.ended = "FAILED"

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.finish()
        elif isinstance(exc, (Cancelled, KeyboardInterrupt)):
            reason = getattr(exc, "reason", None)  # e.g. the job runner's "the server was stopped"
            self.kill(reason) if reason else self.kill()
        else:
            self.fail(exc)
        return False


def params_from(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {k: _stringify(v) for k, v in items}
