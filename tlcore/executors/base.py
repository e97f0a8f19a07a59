"""The seam between "what to run" and "where it runs": what an executor must do for the job runner.

The runner (:mod:`tlcore.jobs.runner`) keeps the queue, the journal, cancel and recovery; it hands
each job's work to an executor and hears back once, when the work has ended. The local executor runs
the work on a thread of this process (:mod:`tlcore.executors.local`); the Ray executor runs the
same :func:`tlcore.experiments.run` (or a sweep's points) as tasks on a cluster
(:mod:`tlcore.executors.ray`). Like a Hydra launcher, the seam is small: start,
cancel, shut down, and one ``done`` call per work with how it ended.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import Tracker

if TYPE_CHECKING:
    from tlcore.experiments import RunResult


@dataclass(frozen=True)
class Work:
    """One job's work as an executor receives it.

    ``reporter`` takes progress, metrics and opened runs, and its ``check_cancelled()`` raises
    :class:`~tlcore.errors.Cancelled` once the runner has asked the job to stop. ``device`` is
    the runner's queue key: it starts one work per device at a time.
    """

    job_id: str
    spec: ExperimentSpec
    reporter: Reporter
    tracker: Tracker
    device: str


@dataclass(frozen=True)
class Outcome:
    """How a work ended: its result, or the exception it raised (with the traceback, formatted
    where it was raised, so a remote worker's frames survive the trip)."""

    result: RunResult | None = None
    error: Exception | None = None
    traceback: str | None = None


Done = Callable[[Work, Outcome], None]


class Executor(Protocol):
    """What the job runner needs from whatever runs its jobs (``name``: its key in ``EXECUTORS``)."""

    name: str

    def describe(self) -> str:
        """One line for the home page: where jobs run (and, for a cluster, what is free there)."""

    def start(self, work: Work, done: Done) -> None:
        """Begin ``work`` and return at once; call ``done(work, outcome)`` exactly once when it has
        ended, from any thread."""

    def cancel(self, work: Work, reason: str) -> None:
        """The runner has asked ``work`` to stop (its reporter's ``check_cancelled()`` now raises with
        ``reason``); pass that on where the work cannot see the reporter itself. ``done`` follows."""

    def shutdown(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for started work to end (the runner cancelled it first);
        work still running after that is abandoned to the runner's clean-up."""


def run_work(work: Work) -> Outcome:
    """Run ``work`` here and now through :func:`tlcore.experiments.run`; never raises."""
    from tlcore import experiments

    try:
        return Outcome(result=experiments.run(work.spec, work.reporter, work.tracker))
    except Exception as exc:  # the runner decides what each kind of error means for the job
        return Outcome(error=exc, traceback=traceback.format_exc())


class ThreadPerWork:
    """An executor's threads: each work is driven by a daemon thread of its own, which calls ``execute(work)``
    (never raising) and then ``done``. Why not a ``ThreadPoolExecutor``: its non-daemon threads keep the server
    from shutting down until the job ends."""

    thread_prefix = "tlcore-jobs"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def execute(self, work: Work) -> Outcome:
        raise NotImplementedError

    def start(self, work: Work, done: Done) -> None:
        t = threading.Thread(target=self._run, args=(work, done), name=f"{self.thread_prefix}-{work.device}",
                             daemon=True)
        with self._lock:
            self._threads[work.job_id] = t
        t.start()

    def _run(self, work: Work, done: Done) -> None:
        try:
            outcome = self.execute(work)
        finally:
            with self._lock:
                self._threads.pop(work.job_id, None)
        done(work, outcome)

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)
