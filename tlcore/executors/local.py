"""Today's executor: each job's work runs in this process, on a daemon thread of its own
(:class:`~tlcore.executors.base.ThreadPerWork`). The runner starts at most one work per device, so threads
never share a device.
"""

from __future__ import annotations

from tlcore.executors.base import Outcome, ThreadPerWork, Work, run_work


class LocalExecutor(ThreadPerWork):
    """Runs :func:`tlcore.experiments.run` on a daemon thread per work (see :class:`Executor`)."""

    name = "local"

    def describe(self) -> str:
        """One line for the home page."""
        return "Jobs run in this process, one at a time per device (TLCORE_EXECUTOR=ray runs them on a Ray cluster)."

    def execute(self, work: Work) -> Outcome:
        return run_work(work)

    def cancel(self, work: Work, reason: str) -> None:
        """Nothing to pass on: the method polls, on its own thread, the reporter the runner has flagged."""
