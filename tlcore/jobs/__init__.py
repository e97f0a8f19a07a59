"""Background jobs for the app: what a job is (:mod:`.state`), its journal on disk (:mod:`.journal`), what its method
reports to (:mod:`.reporter`) and the runner that queues, cancels and recovers jobs over an executor (:mod:`.runner`).

Every name pages, the CLI and tests import from ``tlcore.jobs`` is re-exported here.
"""

from tlcore.jobs.journal import JOURNAL_KEEP, JOURNAL_NAME, JOURNAL_VERSION, JobJournal, journal_path_for
from tlcore.jobs.reporter import USER_CANCEL_REASON, JobReporter
from tlcore.jobs.runner import DEDUP_WINDOW_S, MEMORY_KEEP, SHUTDOWN_REASON, JobRunner
from tlcore.jobs.state import (
    ACTIVE_STATES,
    MAX_MESSAGES,
    MAX_METRIC_POINTS,
    Job,
    JobMessage,
    JobState,
    MetricPoint,
    RunRef,
    Submitted,
    describe_spec,
)
from tlcore.units import format_duration

__all__ = [
    "ACTIVE_STATES", "DEDUP_WINDOW_S", "JOURNAL_KEEP", "JOURNAL_NAME", "JOURNAL_VERSION", "MAX_MESSAGES",
    "MAX_METRIC_POINTS", "MEMORY_KEEP", "SHUTDOWN_REASON", "USER_CANCEL_REASON", "Job",
    "JobJournal", "JobMessage", "JobReporter", "JobRunner", "JobState", "MetricPoint", "RunRef", "Submitted",
    "describe_spec", "format_duration", "journal_path_for",
]
