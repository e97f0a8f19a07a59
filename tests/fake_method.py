"""A tiny stand-in method for runner and page tests (test scaffolding, never shipped).

It behaves like a real method where the runner can see it: it opens a real MLflow run through
the :class:`Tracker` it is given, reports progress and metrics, checks for cancel between
steps, and raises when told to. What it does is chosen by ``spec.tags["fake"]``:

- ``quick`` (default): 3 steps, ends FINISHED with ``test_accuracy``;
- ``gate``: after its first step, waits on :data:`GATE` (tests hold the job running, then cancel it);
- ``user_error``: raises a :class:`DatasetError` (one sentence) after one step;
- ``bug``: raises a ``ZeroDivisionError`` after one step.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tlcore.errors import DatasetError
from tlcore.methods import base
from tlcore.methods.base import RunResult

GATE = threading.Event()
STARTED = threading.Event()
DEFAULT = {"behaviour": "quick"}  # for specs built by a page, which carry no "fake" tag


def fake_method(spec, reporter, tracker) -> RunResult:
    behaviour = spec.tags.get("fake", DEFAULT["behaviour"])
    steps = 3
    params = {"method": spec.method, "dataset": spec.dataset, "backbone": spec.backbone, "device": "cpu",
              "samples_per_class": 5, "split": 0}
    with tracker.start_run(spec.method, params, tags={"job": spec.job or ""}, run_name="fake") as run:
        reporter.run_started(run.run_id, "Feature extraction", "fake")
        STARTED.set()
        for step in range(steps):
            reporter.check_cancelled()
            if behaviour == "gate" and step >= 1:  # step 0 is logged, so a cancel has metrics to keep
                while not GATE.wait(0.02):
                    reporter.check_cancelled()
            reporter.update(stage=f"Step {step + 1} of {steps}", fraction=(step + 1) / steps)
            reporter.log_metrics({"train_loss": 1.0 / (step + 1), "val_accuracy": 0.5 + 0.1 * step}, step, "fake")
            run.log_metrics({"train_loss": 1.0 / (step + 1)}, step)
            if behaviour == "user_error":
                raise DatasetError("Class 'cat' is not in dataset 'digits'; use class indices 0-9.")
            if behaviour == "bug":
                _ = 1 / 0
        metrics = {"test_accuracy": 0.875, "time_total_s": 0.3, "flops_total": 3e9, "images_processed": 100.0}
        run.log_metrics(metrics)
    return RunResult(spec.method, [run.run_id], metrics=metrics, summary="Fake run: test accuracy 87.5%.")


def use_fake(monkeypatch, name: str) -> None:
    """Run :func:`fake_method` for the registered method ``name`` (its record stays, only ``run`` changes)."""
    monkeypatch.setitem(base.methods._entries, name, dataclasses.replace(base.get(name), run=fake_method))


@pytest.fixture
def fake_fe(monkeypatch):
    """Replace the registered ``fe`` method by :func:`fake_method` for one test."""
    use_fake(monkeypatch, "fe")
    GATE.clear()
    STARTED.clear()
    DEFAULT["behaviour"] = "quick"
    yield fake_method
    GATE.set()  # never leave a worker waiting
    DEFAULT["behaviour"] = "quick"
