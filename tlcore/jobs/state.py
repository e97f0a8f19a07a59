"""What a job is: its state, what the UI shows of it, and the words for it.

Plain data the runner fills and hands out as copies; nothing here starts work or touches disk, so
pages, the journal and any executor can read a :class:`Job` without pulling in the runner.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tlcore.methods.base import methods
from tlcore.specs import ExperimentSpec
from tlcore.units import format_duration

MAX_METRIC_POINTS = 20_000  # per job; older points are thinned, so charts keep their shape
MAX_MESSAGES = 200


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the server stopped or died while the job was queued or running


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
@dataclass(frozen=True)
class MetricPoint:
    """One value a method reported for the live charts."""

    name: str
    value: float
    step: int | None
    series: str
    time: float


@dataclass(frozen=True)
class RunRef:
    run_id: str
    experiment: str
    name: str | None = None


@dataclass(frozen=True)
class JobMessage:
    time: float
    level: str
    text: str


@dataclass
class Job:
    """A job's state. The runner hands out copies (:meth:`JobRunner.get`), safe to read anywhere."""

    id: str
    number: int
    spec: ExperimentSpec
    label: str
    device: str
    token: str | None = None
    state: JobState = JobState.QUEUED
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    stage: str = "Waiting in the queue"
    fraction: float = 0.0
    metrics: list[MetricPoint] = field(default_factory=list)
    messages: list[JobMessage] = field(default_factory=list)
    runs: list[RunRef] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    summary: str = ""
    result_metrics: dict[str, float] = field(default_factory=dict)
    cancel_requested: bool = False
    note: str = ""  # what happened to a job of a previous server (interrupted jobs)
    acknowledged: bool = False
    owner: dict[str, Any] = field(default_factory=dict)
    # ETA anchor: the first moment the fraction moved past zero
    _anchor: tuple[float, float] | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left, from the pace since progress first moved (model loading is not progress)."""
        if self.state is not JobState.RUNNING or self.fraction <= 0 or self.started_at is None:
            return None
        now = now or time.time()
        if self._anchor is not None and self.fraction > self._anchor[1] and now > self._anchor[0]:
            rate = (self.fraction - self._anchor[1]) / (now - self._anchor[0])
        else:
            rate = self.fraction / max(now - self.started_at, 1e-6)
        if rate <= 0:
            return None
        return max(0.0, (1.0 - self.fraction) / rate)

    def status_line(self, now: float | None = None) -> str:
        """One line for badges and tables: state, stage, percentage and time left or taken."""
        if self.state is JobState.QUEUED:
            return "queued"
        if self.state is JobState.RUNNING:
            eta = self.eta_s(now)
            left = f" · {format_duration(eta)} left" if eta is not None else ""
            return f"{self.stage} · {self.fraction:.0%}{left}"
        took = f" in {format_duration(self.elapsed_s)}" if self.elapsed_s is not None else ""
        return f"{self.state}{took}"

    def to_journal(self) -> dict[str, Any]:
        return {
            "id": self.id, "number": self.number, "label": self.label, "device": self.device,
            "state": str(self.state), "submitted_at": self.submitted_at, "started_at": self.started_at,
            "ended_at": self.ended_at, "stage": self.stage, "fraction": round(self.fraction, 4),
            "runs": [[r.run_id, r.experiment, r.name] for r in self.runs], "error": self.error,
            "error_type": self.error_type, "summary": self.summary, "note": self.note,
            "acknowledged": self.acknowledged, "owner": self.owner, "spec": self.spec.to_dict(),
        }

    @classmethod
    def from_journal(cls, d: Mapping[str, Any]) -> Job:
        try:
            spec = ExperimentSpec.from_dict(d["spec"])
        except Exception:  # a spec from another version of tlcore: keep the record, not the spec
            raw = d.get("spec") or {}
            spec = ExperimentSpec(str(raw.get("method", "fe")), str(raw.get("dataset", "?")))
        return cls(
            id=d["id"], number=int(d.get("number", 0)), spec=spec, label=d.get("label", ""),
            device=d.get("device", "cpu"), state=JobState(d.get("state", "failed")),
            submitted_at=float(d.get("submitted_at") or 0), started_at=d.get("started_at"),
            ended_at=d.get("ended_at"), stage=d.get("stage", ""), fraction=float(d.get("fraction") or 0),
            runs=[RunRef(*r) for r in d.get("runs", [])], error=d.get("error"), error_type=d.get("error_type"),
            summary=d.get("summary", ""), note=d.get("note", ""), acknowledged=bool(d.get("acknowledged")),
            owner=dict(d.get("owner") or {}),
        )


@dataclass(frozen=True)
class Submitted:
    """What :meth:`JobRunner.submit` did: ``new`` is False when the token named a job already queued."""

    job: Job
    new: bool


def describe_spec(spec: ExperimentSpec) -> str:
    """A short label: method, dataset, backbone and the protocol."""
    record = methods.get(spec.method) if methods.knows(spec.method) else None
    parts = [record.label if record else spec.method, spec.dataset]
    if record is None or record.picks_backbone:
        parts.append(spec.backbone)
    backbones = getattr(spec.params, "backbones", None)
    if record is not None and not record.picks_backbone:
        parts.append(f"{len(backbones)} backbones" if backbones else "every backbone here")
    if record is not None and record.takes_samples:
        if spec.model_selection:
            parts.append("model selection")
        elif spec.samples_per_class:
            draws = f" x {spec.splits} draws" if spec.splits else ""
            parts.append(f"{len(spec.samples_per_class)} points ({','.join(map(str, spec.samples_per_class))}{draws})")
        else:
            parts.append("seed grid" if record.sweep else "largest balanced set")
    if spec.method == "ft":
        parts.append(f"config {spec.params.configuration}")
    if spec.method == "quanta":
        layer = spec.params.layer_to_transfer
        parts.append("every layer" if layer in (-1, "-1") else f"layer {layer}")
    return " · ".join(str(p) for p in parts)
