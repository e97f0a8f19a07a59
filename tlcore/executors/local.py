"""Today's executor: each job's work runs in this process, on a daemon thread of its own.

Why not a ``ThreadPoolExecutor``: its non-daemon threads keep the server from shutting down until
the job ends. The runner starts at most one work per device, so threads never share a device.
"""

from __future__ import annotations

import threading

from tlcore.executors.base import Done, Work, run_work


class LocalExecutor:
    """Runs :func:`tlcore.experiments.run` on a daemon thread per work (see :class:`Executor`)."""

    name = "local"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def describe(self) -> str:
        """One line for the home page."""
        return "Jobs run in this process, one at a time per device (TLCORE_EXECUTOR=ray runs them on a Ray cluster)."

    def start(self, work: Work, done: Done) -> None:
        t = threading.Thread(target=self._run, args=(work, done), name=f"tlcore-jobs-{work.device}", daemon=True)
        with self._lock:
            self._threads[work.job_id] = t
        t.start()

    def _run(self, work: Work, done: Done) -> None:
        try:
            done(work, run_work(work))
        finally:
            with self._lock:
                self._threads.pop(work.job_id, None)

    def cancel(self, work: Work, reason: str) -> None:
        """Nothing to pass on: the method polls, on its own thread, the reporter the runner has flagged."""

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)
