"""Jobs as Ray tasks: on a cluster (``--ray-address``), or on a Ray started for this process.

A fine-tuning sweep or a QUANTA job of several runs (methods whose ``task_points`` lists independent
points) runs each point as a task of its own: the driver opens the parent run
(:func:`tlcore.experiments.split_sweep`), each task calls the same :func:`tlcore.experiments.run_point` a
local run would, and the driver ends the parent (:func:`tlcore.experiments.finish_split_sweep`). Any other
job (a feature-extraction curve, which extracts once for all its points; source training; ranking) is one
task calling :func:`tlcore.experiments.run`.

Retries: a task whose worker died is run again up to ``max_retries`` times (Ray's own retry; Python
exceptions are never retried). Sweeps are idempotent (:class:`tlcore.methods.common.Sweep`): the retry
finds the runs the dead attempt opened by (sweep id, point) and continues them, a fine-tuning run from
its checkpoint, so a point never has two runs. Methods that are not idempotent are not retried.

Progress and cancel travel through one small actor per job (:class:`_Channel`): tasks post their
reporter calls to it, the driver replays them into the job's reporter (the app's live view, the
CLI's bar), and a cancel posted there makes the tasks' ``check_cancelled()`` raise, so their runs end
KILLED as they do in-process; tasks that do not stop within a grace period are cancelled by Ray and
their runs marked KILLED by the driver.

``import ray`` happens only here, and only when a Ray job starts: local runs never pay for it.
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tlcore.errors import Cancelled, SpecError, TLError
from tlcore.executors.base import Outcome, ThreadPerWork, Work
from tlcore.reporting import Reporter

#: Settings a worker must see as the driver does (stores, caches, checkpoint interval, MLflow, CodeCarbon).
FORWARDED_ENV_PREFIXES = ("TLCORE_", "MLFLOW_", "CODECARBON_")
POLL_S = 0.5  # how often the driver forwards progress and looks for ended tasks
CANCEL_GRACE_S = 5.0  # after a cancel, how long tasks get to stop at their next check before Ray interrupts them
FORCE_AFTER_S = 20.0  # ... and before their worker processes are killed
CTRL_C_REASON = "Cancelled by the user (Ctrl-C); metrics logged before that are kept."
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # a Ray started here: tasks pass specs and results, not tensors


@dataclass(frozen=True)
class RayOptions:
    """Where and how jobs run on Ray (the CLI's ``--ray-address``, ``--cpus-per-run``, ``--gpus-per-run``,
    ``--max-retries``; the app's ``TLCORE_RAY_ADDRESS``). No address: a local Ray is started."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3

    def validate(self) -> RayOptions:
        if not self.cpus_per_run > 0:
            raise SpecError(f"--cpus-per-run must be more than 0 (got {self.cpus_per_run:g}); e.g. 1.")
        if not self.gpus_per_run >= 0:
            raise SpecError(f"--gpus-per-run must be 0 or more (got {self.gpus_per_run:g}); e.g. 0.25 packs four "
                            "runs on one GPU.")
        if self.max_retries < 0:
            raise SpecError(f"--max-retries must be 0 or more (got {self.max_retries}).")
        return self


def cluster_address(options: RayOptions) -> str | None:
    """The cluster to join: ``--ray-address``, else the one ``ray job submit`` runs this command on
    (``$RAY_ADDRESS``); None: start a Ray of our own on this machine."""
    return options.address or os.environ.get("RAY_ADDRESS") or None


def connect(options: RayOptions) -> None:
    """Join the cluster at :func:`cluster_address`, or start a Ray on this machine; once per process."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    address = cluster_address(options)
    try:
        if address:
            if not os.environ.get("RAY_JOB_SUBMISSION_ID"):  # `ray job submit --working-dir` brings tlcore itself
                kwargs["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
            ray.init(address=address, **kwargs)
        else:
            # "local": a new Ray of our own, even where `ray start` left a cluster this machine would join
            # Ray keeps at most as many idle workers as CPUs and kills the others after a second; a task worker
            # has imported torch and loaded a network (~6 s cold), and with the mailbox actor beside them each
            # job paid a cold one: twice as many kept, the second of two 4-point sweeps took 15 s, not 25 s.
            ray.init(address="local", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                     _system_config={"num_workers_soft_limit": 2 * (os.cpu_count() or 1)}, **kwargs)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise TLError(f"Could not start or reach {where} ({type(exc).__name__}: {str(exc).splitlines()[0]}); check "
                      "--ray-address (TLCORE_RAY_ADDRESS in the app) and that `ray status` works there.") from exc


def cluster_resources(options: RayOptions) -> dict[str, float]:
    """The cluster's free and total CPUs and GPUs (the app's home page shows them)."""
    import ray

    connect(options)
    free, total = ray.available_resources(), ray.cluster_resources()
    return {"cpus_free": free.get("CPU", 0.0), "cpus": total.get("CPU", 0.0),
            "gpus_free": free.get("GPU", 0.0), "gpus": total.get("GPU", 0.0)}


def _task_runtime_env(options: RayOptions) -> dict[str, Any]:
    """What each task's worker needs: the driver's settings now, and this ``tlcore`` on its path (a Ray started
    here; :func:`connect` ships it to a cluster at an address, at the job level as Ray requires)."""
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    if not cluster_address(options):
        root = str(Path(__file__).resolve().parents[2])
        env_vars["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": env_vars}


class _Channel:
    """The jobs' mailboxes on the cluster: reporter calls from their tasks, and the driver's cancels. One actor
    per executor, not per job: an actor takes a worker process for its life, and one per job took a warm
    task worker (torch imported) each time, so every job paid a cold worker (~6 s here)."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple]] = {}
        self.reasons: dict[str, str] = {}

    def put(self, job: str, events: list[tuple]) -> None:
        self.events.setdefault(job, []).extend(events)

    def take(self, job: str) -> list[tuple]:
        return self.events.pop(job, [])

    def cancel(self, job: str, reason: str) -> None:
        self.reasons[job] = reason

    def cancelled(self, job: str) -> str | None:
        return self.reasons.get(job)

    def forget(self, job: str) -> None:
        self.events.pop(job, None)
        self.reasons.pop(job, None)


class ChannelReporter(Reporter):
    """A task's reporter: posts its calls to the job's channel (batched, at most every ``POLL_S``) and asks
    the channel whether the job was cancelled (at most once a second)."""

    def __init__(self, channel: Any, job: str, key: int) -> None:
        self.channel, self.job, self.key = channel, job, key
        self._buffer: list[tuple] = []
        self._last_flush = self._last_poll = 0.0
        self._reason: str | None = None

    def _post(self, kind: str, *args: Any, now: bool = False) -> None:
        self._buffer.append((self.key, kind, args))
        if now or time.monotonic() - self._last_flush > POLL_S:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self.channel.put.remote(self.job, self._buffer)  # one caller's calls reach an actor in order
            self._buffer = []
        self._last_flush = time.monotonic()

    def update(self, *, stage: str | None = None, fraction: float | None = None) -> None:
        self._post("update", stage, fraction)

    def log_metrics(self, metrics, step=None, series=""):
        self._post("metrics", dict(metrics), step, series)

    def run_started(self, run_id, experiment, name=None):
        self._post("run", run_id, experiment, name, now=True)

    def message(self, text, level="info"):
        self._post("message", str(text), level, now=True)

    @property
    def cancel_requested(self) -> bool:
        if self._reason is None and time.monotonic() - self._last_poll > 1.0:
            import ray

            self._last_poll = time.monotonic()
            self._reason = ray.get(self.channel.cancelled.remote(self.job))
        return self._reason is not None

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            self.flush()
            exc = Cancelled(self._reason)
            exc.reason = self._reason  # its runs end KILLED with the driver's reason
            raise exc


def run_task(spec, point: tuple[int, int] | None, parent_run_id: str | None, sweep_id: str | None,
             tracking_uri: str, channel: Any, job: str, key: int, threads: int):
    """The body of every task: one point of a split sweep, or a whole job, as a local run would do it."""
    import torch

    from tlcore import experiments
    from tlcore.tracking import Tracker

    torch.set_num_threads(max(1, threads))
    reporter = ChannelReporter(channel, job, key)
    try:
        if point is None:
            return experiments.run(spec, reporter, Tracker(tracking_uri))
        return experiments.run_point(spec, point, reporter, Tracker(tracking_uri), parent_run_id, sweep_id)
    finally:
        reporter.flush()


@dataclass
class _Job:
    """What the driver knows of one job's tasks."""

    work: Work
    channel: Any
    key: str  # the job's mailbox in the channel
    labels: list[str]
    retries: int
    fractions: dict[int, float] = field(default_factory=dict)
    stages: dict[int, str] = field(default_factory=dict)
    run_ids: dict[int, list[str]] = field(default_factory=dict)
    cancel_reason: str | None = None


class RayExecutor(ThreadPerWork):
    """Runs each job's work as Ray tasks (see the module docstring and :class:`~tlcore.executors.Executor`)."""

    name = "ray"
    thread_prefix = "tlcore-ray"

    def __init__(self, options: RayOptions | None = None) -> None:
        super().__init__()
        self.options = (options or RayOptions()).validate()
        self._jobs: dict[str, _Job] = {}
        self._mailbox: tuple[str, Any] | None = None  # (the Ray job it lives in, the _Channel actor)

    def describe(self) -> str:
        """One line for the home page: where jobs run and what is free there."""
        address = self.options.address
        where = f"the Ray cluster at {address}" if address else "a Ray started on this machine"
        try:
            r = cluster_resources(self.options)
        except TLError as exc:
            return f"Jobs run as Ray tasks on {where}, which cannot be reached now: {exc}"
        gpus = f", {r['gpus_free']:g} of {r['gpus']:g} GPUs" if r["gpus"] else ", no GPU"
        return (f"Jobs run as Ray tasks on {where}: {r['cpus_free']:g} of {r['cpus']:g} CPUs free{gpus}; each run "
                f"takes {self.options.cpus_per_run:g} CPU{'s' if self.options.cpus_per_run != 1 else ''}"
                + (f" and {self.options.gpus_per_run:g} GPU" if self.options.gpus_per_run else "") + ".")

    # -- the Executor seam (start and shutdown: ThreadPerWork) --------------------------------------
    def cancel(self, work: Work, reason: str) -> None:
        with self._lock:
            job = self._jobs.get(work.job_id)
        if job is not None and job.cancel_reason is None:
            job.cancel_reason = reason

    # -- the driver ----------------------------------------------------------------------------------
    def execute(self, work: Work) -> Outcome:
        try:
            return self.run(work)
        except Exception as exc:  # the runner decides what each kind of error means for the job
            return Outcome(error=exc, traceback=traceback.format_exc())
        finally:
            with self._lock:
                self._jobs.pop(work.job_id, None)

    def run(self, work: Work) -> Outcome:
        """Run ``work`` on Ray and wait for it; never raises for the work's own errors. The CLI calls this on
        its main thread, so that Ray starts there and Ctrl-C reaches the wait (a cancel)."""
        import ray

        from tlcore import experiments
        from tlcore.methods.base import get

        work.reporter.update(stage="Connecting to Ray", fraction=0.0)
        connect(self.options)
        split = experiments.split_sweep(work.spec, work.tracker, work.reporter)
        method = get(work.spec.method)
        # only methods whose runs a retry finds again (their Sweep is idempotent) may run twice
        retries = self.options.max_retries if method.sweep or method.task_points else 0
        runtime_env = _task_runtime_env(self.options)
        task = ray.remote(run_task).options(
            num_cpus=self.options.cpus_per_run, num_gpus=self.options.gpus_per_run, max_retries=retries,
            retry_exceptions=False, runtime_env=runtime_env, name=f"tlcore {work.spec.method}")
        channel, job_key = self._channel(runtime_env), f"{work.job_id}-{uuid.uuid4().hex[:8]}"
        uri, threads = work.tracker.uri, max(1, int(self.options.cpus_per_run))
        if split is None:
            # a sweep id makes a retried task find its runs (methods.common.Sweep); others are not retried
            spec = work.spec
            if retries:
                spec = replace(spec, tags={**spec.tags, "sweep_id": uuid.uuid4().hex[:12]})
            refs = {task.remote(spec, None, None, None, uri, channel, job_key, 0, threads): 0}
            labels = [""]
        else:
            refs = {task.remote(split.spec, point, split.parent_run_id, split.sweep_id, uri, channel, job_key, i,
                                threads): i
                    for i, point in enumerate(split.points)}
            labels = [f"spc={spc} split={k}" if method.sweep else f"run {k}" for spc, k in split.points]
        job = _Job(work, channel, job_key, labels, retries)
        with self._lock:
            self._jobs[work.job_id] = job
        try:
            results, error = self._wait(job, refs)
        finally:
            channel.forget.remote(job_key)
        if split is not None:
            run_ids = [rid for i in sorted(results) for rid in results[i].run_ids]
            try:
                result = experiments.finish_split_sweep(split, work.tracker, run_ids, error)
            except Exception as exc:
                return Outcome(error=error or exc, traceback=traceback.format_exc())
            return Outcome(result=result) if error is None else Outcome(error=error)
        if error is not None:
            return Outcome(error=error)
        return Outcome(result=results[0])

    def _channel(self, runtime_env: dict[str, Any]) -> Any:
        """The executor's one mailbox actor, made on first use (again after Ray was restarted)."""
        import ray

        owner = ray.get_runtime_context().get_job_id()
        with self._lock:
            if self._mailbox is None or self._mailbox[0] != owner:
                actor = ray.remote(num_cpus=0)(_Channel).options(runtime_env=runtime_env).remote()
                self._mailbox = (owner, actor)
            return self._mailbox[1]

    def _wait(self, job: _Job, refs: dict) -> tuple[dict[int, Any], BaseException | None]:
        """Collect the tasks' results, forwarding progress; the first error cancels the others (as a
        sweep in one process stops at its first failing point)."""
        import ray

        results: dict[int, Any] = {}
        error: BaseException | None = None
        pending = list(refs)
        cancelled_at: float | None = None
        interrupted = forced = False
        while pending:
            try:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            except KeyboardInterrupt:  # Ctrl-C in the CLI, which waits here: a cancel; twice: stop them now
                if job.cancel_reason is not None and cancelled_at is not None:
                    cancelled_at -= FORCE_AFTER_S
                job.cancel_reason = job.cancel_reason or CTRL_C_REASON
                ready = []
            for ref in ready:
                i = refs[ref]
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:
                    error = error or self._task_error(job, i, exc)
            self._forward(job, results)
            if job.cancel_reason is None and job.work.reporter.cancel_requested:
                try:
                    job.work.reporter.check_cancelled()
                except Cancelled as exc:
                    job.cancel_reason = getattr(exc, "reason", None) or str(exc)
            if (job.cancel_reason or error is not None) and cancelled_at is None and pending:
                job.channel.cancel.remote(job.key, job.cancel_reason or "Stopped: another point of this sweep failed.")
                cancelled_at = time.monotonic()
            if cancelled_at is not None and pending:
                waited = time.monotonic() - cancelled_at
                if waited > CANCEL_GRACE_S and not interrupted:
                    interrupted = True
                    for ref in pending:
                        ray.cancel(ref, force=False)
                elif waited > FORCE_AFTER_S and not forced:
                    forced = True
                    for ref in pending:
                        ray.cancel(ref, force=True)
        self._forward(job, results)
        if job.cancel_reason is not None:
            self._kill_leftovers(job)
            exc = Cancelled(job.cancel_reason)
            exc.reason = job.cancel_reason
            return results, exc
        return results, error

    def _task_error(self, job: _Job, i: int, exc: Exception) -> BaseException:
        """The exception a task raised, as the method raised it; a dead worker or a Ray cancel in words."""
        import ray

        if isinstance(exc, ray.exceptions.TaskCancelledError):
            return Cancelled(job.cancel_reason or "Cancelled.")
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return cause
        what = f"point {job.labels[i]}" if job.labels[i] else "job"
        again = (f"was retried {job.retries} time{'s' if job.retries != 1 else ''}; raise --max-retries, or look"
                 if job.retries else "is not retried (its method cannot continue a dead attempt's runs); look")
        return TLError(f"The Ray worker running the {what} died ({type(exc).__name__}) and {again} at the worker's "
                       "log (`ray logs`) for why it died.")

    def _forward(self, job: _Job, results: dict[int, Any]) -> None:
        """Replay the tasks' reporter calls into the job's reporter; one bar over all points."""
        import ray

        reporter = job.work.reporter
        for key, kind, args in ray.get(job.channel.take.remote(job.key)):
            if kind == "update":
                stage, fraction = args
                if stage is not None:
                    job.stages[key] = stage
                if fraction is not None:
                    job.fractions[key] = fraction
            elif kind == "metrics":
                metrics, step, series = args
                reporter.log_metrics(metrics, step, series or job.labels[key])
            elif kind == "run":
                job.run_ids.setdefault(key, []).append(args[0])
                reporter.run_started(*args)
            elif kind == "message":
                reporter.message(*args)
        n = len(job.labels)
        fraction = sum(1.0 if i in results else job.fractions.get(i, 0.0) for i in range(n)) / n
        running = [job.stages[i] for i in range(n) if i not in results and i in job.stages]
        if n == 1:
            stage = running[0] if running else None
        else:
            stage = f"{len(results)} of {n} points done on Ray" + (f" · {running[-1]}" if running else "")
        reporter.update(stage=stage, fraction=fraction)

    def _kill_leftovers(self, job: _Job) -> None:
        """Runs whose task Ray had to stop were left RUNNING: end them KILLED with the cancel's reason."""
        from tlcore.tracking import TAG_ERROR, TAG_ERROR_TYPE

        client = job.work.tracker.client
        for ids in job.run_ids.values():
            for run_id in ids:
                try:
                    if client.get_run(run_id).info.status == "RUNNING":
                        client.set_tag(run_id, TAG_ERROR, job.cancel_reason)
                        client.set_tag(run_id, TAG_ERROR_TYPE, "cancelled")
                        client.set_terminated(run_id, "KILLED")
                except Exception:  # one run we cannot mark must not keep the others RUNNING
                    continue


def make_ray_executor(address: str | None = None, cpus_per_run: float | None = None,
                      gpus_per_run: float | None = None, max_retries: int | None = None) -> RayExecutor:
    """A :class:`RayExecutor` from the flags' values (None: the default)."""
    given = {k: v for k, v in {"address": address, "cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run,
                               "max_retries": max_retries}.items() if v is not None}
    return RayExecutor(RayOptions(**given))
