"""Progress reporting: the small protocol between a running method and whoever watches it.

A method calls ``update(stage=..., fraction=...)`` (fraction of the whole run, 0..1),
``log_metrics(...)`` for live charts, ``run_started(...)`` when an MLflow run opens, and
``check_cancelled()`` between steps. The CLI shows a progress bar; the job runner keeps the
state for the app. Methods never know which one they talk to.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping

from tlcore.errors import Cancelled


class Reporter:
    """A reporter that ignores everything and is never cancelled (tests, scripts)."""

    def update(self, *, stage: str | None = None, fraction: float | None = None) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, series: str = "") -> None:
        pass

    def run_started(self, run_id: str, experiment: str, name: str | None = None) -> None:
        pass

    def message(self, text: str, level: str = "info") -> None:
        pass

    @property
    def cancel_requested(self) -> bool:
        return False

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise Cancelled("Cancelled by the user.")

    def scaled(self, lo: float, hi: float) -> Reporter:
        """A view whose fractions 0..1 map to lo..hi of this one (one point of a sweep)."""
        return ScaledReporter(self, lo, hi)


class ScaledReporter(Reporter):
    def __init__(self, parent: Reporter, lo: float, hi: float) -> None:
        self.parent, self.lo, self.hi = parent, lo, hi

    def update(self, *, stage: str | None = None, fraction: float | None = None) -> None:
        f = None if fraction is None else self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0)
        self.parent.update(stage=stage, fraction=f)

    def log_metrics(self, metrics, step=None, series=""):
        self.parent.log_metrics(metrics, step, series)

    def run_started(self, run_id, experiment, name=None):
        self.parent.run_started(run_id, experiment, name)

    def message(self, text, level="info"):
        self.parent.message(text, level)

    @property
    def cancel_requested(self) -> bool:
        return self.parent.cancel_requested

    def check_cancelled(self) -> None:
        self.parent.check_cancelled()  # the parent's exception, with its reason (e.g. a server shutdown)


class TerminalReporter(Reporter):
    """A tqdm progress bar on stderr; Ctrl-C cancels (the run ends KILLED)."""

    def __init__(self, enabled: bool = True) -> None:
        # A bar only on a terminal; in logs (CI, nohup) the stage lines are printed every few seconds.
        self.enabled = enabled and sys.stderr.isatty()
        self.quiet = not enabled
        self._bar = None
        self._stage = ""
        self._lock = threading.Lock()
        self._last_log = 0.0

    def _ensure_bar(self):
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=1000, file=sys.stderr, bar_format="{desc} |{bar}| {percentage:3.0f}% "
                             "[{elapsed}<{remaining}]{postfix}", dynamic_ncols=True, disable=not self.enabled)
        return self._bar

    def update(self, *, stage=None, fraction=None):
        with self._lock:
            bar = self._ensure_bar()
            if stage is not None and stage != self._stage:
                self._stage = stage
                bar.set_description_str(stage[:60], refresh=False)
                if not self.enabled and not self.quiet and time.time() - self._last_log > 5:
                    print(f"[tlcore] {stage}", file=sys.stderr)
                    self._last_log = time.time()
            if fraction is not None:
                bar.n = round(min(max(fraction, 0.0), 1.0) * 1000)
            bar.refresh()

    def log_metrics(self, metrics, step=None, series=""):
        with self._lock:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in list(metrics.items())[:4]}
            self._ensure_bar().set_postfix(shown, refresh=True)

    def run_started(self, run_id, experiment, name=None):
        self.message(f"MLflow run {run_id} ({experiment}{', ' + name if name else ''})")

    def message(self, text, level="info"):
        if self.quiet and level != "warning":
            return
        with self._lock:
            prefix = "warning: " if level == "warning" else ""
            if self._bar is not None and self.enabled:
                self._bar.write(prefix + text, file=sys.stderr)
            else:
                print(prefix + text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
