"""One call from a practitioner's situation to a recommendation: the Guidelines page and
``python -m tlcore advise`` both call :func:`advise`.

It reads the store's runs (with their verdicts), grades the evidence they hold
(:mod:`tlcore.evidence`), projects what each option costs on the user's labelled set at this
machine's measured pace or a named GPU's (:mod:`tlcore.guidelines`), and recommends. The answer
carries every reason with its source and strength, and the evidence used and ignored with why;
:meth:`Advice.to_dict` is what ``--json`` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tlcore.guidelines import (
    STRENGTH_LABELS,
    Evidence,
    Projection,
    Recommendation,
    RuleBook,
    Situation,
    Speed,
    gpu_speed,
    load_rules,
    project_costs,
    recommend,
)


@dataclass
class Advice:
    """The recommendation and everything it rests on."""

    situation: Situation
    recommendation: Recommendation
    evidence: Evidence | None
    projection: Projection
    speed: Speed | None
    store_error: str | None = None
    book: RuleBook | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything a script needs, JSON-ready (NaN becomes None)."""
        rec = self.recommendation
        cost = rec.chosen_cost
        ev = self.evidence

        def num(v):
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

        expected = None
        if rec.expected_accuracy is not None:
            mean, lo, hi = rec.expected_accuracy
            expected = {"mean": num(mean), "low": num(lo), "high": num(hi)}
        return {
            "method": rec.method,
            "configuration": rec.configuration,
            "title": rec.title,
            "expected_accuracy": {"text": rec.accuracy_note, **(expected or {})},
            "projected_cost": None if cost is None else {
                "option": cost.label, "flops": cost.flops, "seconds": num(cost.seconds),
                "energy_kwh": num(cost.energy_kwh)},
            "reasons": [r.to_dict() for r in rec.reasons],
            "caution": rec.caution or None,
            "pilot_recommended": rec.pilot,
            "alternatives": [{"option": o.label, "method": o.method, "configuration": o.configuration,
                              "flops": o.flops, "seconds": num(o.seconds), "energy_kwh": num(o.energy_kwh),
                              "compared": note} for o, note in rec.alternatives],
            "evidence": {
                "used": [i.to_dict() for i in (ev.items if ev else ()) if i.used],
                "ignored": [i.to_dict() for i in (ev.items if ev else ()) if not i.used],
            },
            "strengths": STRENGTH_LABELS,
            "assumptions": list(self.projection.assumptions),
            "speed": None if self.speed is None else self.speed.how,
            "store_error": self.store_error,
            "situation": {k: v for k, v in self.situation.__dict__.items()},
        }


def _missing_store(uri: str) -> bool:
    """A local store that does not exist yet (reading must not create it)."""
    from tlcore.tracking import sqlite_path

    path = sqlite_path(uri)
    return path is not None and not path.exists()


def situation_from_dataset(dataset: str, data_dir: str | None = None, **answers: Any) -> Situation:
    """A situation whose labels are counted from a dataset (the smallest class sets the per-class count
    unless ``samples_per_class`` is given) and whose input size follows its images."""
    from tlcore.data import load_dataset
    from tlcore.data.resolution import input_size_for, native_image_size
    from tlcore.models import backbone_config

    ds = load_dataset(dataset, data_dir, download=False)
    counts = ds.class_counts()
    spc = answers.pop("samples_per_class", None) or int(counts.sum() // max(len(counts), 1))
    backbone = answers.get("backbone", "efficientnet_lite0")
    cfg = backbone_config(backbone)
    resolution = answers.pop("resolution", None)
    if resolution is None and not cfg.fixed_input_size:
        size = input_size_for(native_image_size(ds), cfg.preprocessing.input_size)
        resolution = size if size != cfg.preprocessing.input_size else None
    return Situation(samples_per_class=int(spc), num_classes=ds.num_classes, dataset=dataset,
                     resolution=resolution, **answers).validate()


def advise(situation: Situation, uri: str | None = None, *, runs: pd.DataFrame | None = None,
           quanta_runs: pd.DataFrame | None = None, speed: Speed | None = None,
           flops: tuple[float, dict] | None = None, book: RuleBook | None = None) -> Advice:
    """Recommend a method for ``situation`` from the rules and the runs in the store at ``uri``.

    The page passes the frames, pace and FLOP counts it already holds (cached); the CLI passes
    only the store. An unreadable store is not fatal: the answer then rests on the published
    findings, and ``store_error`` says why.
    """
    from tlcore import results
    from tlcore.evidence import gather_evidence, machine_speed
    from tlcore.planning import device_type, option_flops
    from tlcore.tracking import Tracker, resolve_tracking_uri

    s = situation.validate()
    book = book or load_rules()
    store_error = None
    uri = resolve_tracking_uri(uri) if uri is not None or runs is None else uri
    if runs is None or quanta_runs is None:
        try:
            runs = results.load_view(uri, "tradeoffs") if runs is None else runs
            quanta_runs = results.load_view(uri, "quanta") if quanta_runs is None else quanta_runs
        except Exception as exc:  # an unreadable store: the generic rules still answer
            store_error = str(exc) or type(exc).__name__
            runs = quanta_runs = pd.DataFrame()
    evidence = gather_evidence(runs, quanta_runs, s)
    if speed is None:
        if s.device != "this_machine":
            speed = gpu_speed(s.device)
        elif uri is not None and not _missing_store(uri):
            try:
                speed = machine_speed(Tracker(uri), runs, s.backbone, device_type("auto"))
            except Exception:  # no pace: the projection gives compute only
                speed = None
    if flops is None:
        flops = option_flops(s.backbone, s.num_classes, s.resolution)
    projection = project_costs(s, speed, *flops)
    rec = recommend(s, book, projection, evidence)
    return Advice(s, rec, evidence, projection, speed, store_error, book)


__all__ = ["Advice", "advise", "situation_from_dataset"]
