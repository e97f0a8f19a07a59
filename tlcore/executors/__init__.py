"""Where jobs run: the :class:`Executor` seam and today's in-process :class:`LocalExecutor`."""

from tlcore.executors.base import Done, Executor, Outcome, Work, run_work
from tlcore.executors.local import LocalExecutor

__all__ = ["Done", "Executor", "LocalExecutor", "Outcome", "Work", "run_work"]
