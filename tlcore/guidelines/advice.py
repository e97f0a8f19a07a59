"""The facade: one call from a practitioner's situation to everything the answer shows. The
Guidelines page and ``python -m tlcore advise`` both call :func:`advise`.

It reads the store's runs (with their verdicts), grades the evidence they hold
(:mod:`tlcore.guidelines.evidence`), projects what each option costs on the user's labelled set
at this machine's measured pace or a named GPU's (:mod:`tlcore.guidelines.projection`), and
recommends (:mod:`tlcore.guidelines.recommend`). The :class:`Advice` carries every reason with its
source and strength, the evidence used and ignored with why, the budget verdict, the cost table and
the pilot that would confirm it; :meth:`Advice.to_dict` is what ``--json`` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tlcore import units
from tlcore.guidelines.backbone import PROXY, PROXY_LABEL, BackboneSuggestion, suggest_backbone
from tlcore.guidelines.evidence import STRENGTH_LABELS, Evidence, gather_evidence
from tlcore.guidelines.projection import Projection, fits_budget, gpu_speed, machine_speed, project_costs
from tlcore.guidelines.recommend import Recommendation, recommend
from tlcore.guidelines.rules import RuleBook, Source, load_rules
from tlcore.guidelines.situation import Situation
from tlcore.speed import Speed


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
    backbone_suggestion: BackboneSuggestion | None = None  # the top of the user's ranking (a measured proxy)

    @property
    def over_budget(self) -> bool | None:
        """Whether the recommended option runs over the user's hours or kWh; None without a budget."""
        s, cost = self.situation, self.recommendation.chosen_cost
        if not (s.budget_hours or s.budget_kwh):
            return None
        return cost is not None and not fits_budget(s, cost)

    @property
    def cost_text(self) -> str:
        """The recommended option's projected cost in one line: compute, then time and energy when known."""
        option = self.recommendation.chosen_cost
        if option is None:
            return "not projected"
        parts = [units.flops(option.flops)]
        if option.seconds is not None:
            parts.append(units.duration(option.seconds))
        if option.energy_kwh is not None:
            parts.append(units.energy(option.energy_kwh))
        return " · ".join(parts)

    @property
    def cited_sources(self) -> list[Source]:
        """The sources the reasons cite, each once, in the order first cited."""
        return list({r.source.key: r.source for r in self.recommendation.reasons}.values())

    def alternatives_table(self) -> pd.DataFrame:
        """The other options, as the page lists them: compute, time, energy, and how each compares."""
        return pd.DataFrame([{
            "option": o.label, "compute": units.flops(o.flops),
            "time": units.duration(o.seconds) if o.seconds is not None else "unknown",
            "energy": units.energy(o.energy_kwh) if o.energy_kwh is not None else "unknown",
            "compared with the recommendation": note or "",
        } for o, note in self.recommendation.alternatives])

    def pilot(self, dataset: str, resolution: int | None = None) -> list:
        """The pilot's two specs on ``dataset`` (see :func:`pilot_specs`)."""
        return pilot_specs(self.situation, self.recommendation, dataset, resolution)

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
            "backbone_suggestion": (self.backbone_suggestion.to_dict()
                                    if self.backbone_suggestion is not None else None),
            "strengths": {**STRENGTH_LABELS, PROXY: PROXY_LABEL},
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
           flops: tuple[float, dict] | None = None, book: RuleBook | None = None,
           ranking_runs: pd.DataFrame | None = None) -> Advice:
    """Recommend a method for ``situation`` from the rules and the runs in the store at ``uri``.

    The page passes the frames and this machine's pace it already holds (cached); the CLI passes
    only the store. FLOPs are counted here unless given (the counts are cached per process). An
    unreadable store is not fatal: the answer then rests on the published findings, and
    ``store_error`` says why. ``ranking_runs`` (the Ranking view) give the backbone suggestion, a
    measured proxy that never decides the method.
    """
    from tlcore import results
    from tlcore.planning import option_flops
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
    if ranking_runs is None and store_error is None and uri is not None and not _missing_store(uri):
        try:
            ranking_runs = results.load_view(uri, "ranking")
        except Exception:  # the suggestion is an extra: never a reason to fail the advice
            ranking_runs = None
    suggestion = suggest_backbone(ranking_runs, s.dataset) if ranking_runs is not None else None
    evidence = gather_evidence(runs, quanta_runs, s)
    if speed is None:
        if s.device != "this_machine":
            speed = gpu_speed(s.device)
        elif uri is not None and not _missing_store(uri):
            try:
                speed = machine_speed(Tracker(uri), runs, s.backbone)
            except Exception:  # no pace: the projection gives compute only
                speed = None
    if flops is None:
        flops = option_flops(s.backbone, s.num_classes, s.resolution)
    projection = project_costs(s, speed, *flops)
    rec = recommend(s, book, projection, evidence)
    return Advice(s, rec, evidence, projection, speed, store_error, book, suggestion)


# ---------------------------------------------------------------------------------------------
# The pilot


PILOT_SPC = (1, 2, 5, 10)
PILOT_DRAWS = 3  # draws per value: the fewest that give a paired 95% interval a chance to exclude 0


def pilot_specs(situation: Situation, rec: Recommendation, dataset: str, resolution: int | None = None,
                seed: int = 0) -> list:
    """The cheap experiments that would confirm ``rec`` on the user's data: a feature-extraction
    curve at small samples per class and one fine-tuning configuration at the two largest of them,
    three draws each (so FE and FT compare on the same draws with an interval), at the input size
    the images call for: minutes, not the budget."""
    from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams

    grid = tuple(v for v in PILOT_SPC if v <= situation.samples_per_class) or (situation.samples_per_class,)
    config = rec.configuration if rec.method == "ft" and rec.configuration is not None else (
        0 if situation.shift == "input" else 2)
    common = dict(backbone=situation.backbone, resolution=resolution or situation.resolution, seed=seed,
                  splits=PILOT_DRAWS, tags={"pilot": "guidelines"})
    fe = ExperimentSpec("fe", dataset, samples_per_class=grid, params=FeatureExtractionParams(), **common)
    # fine-tuning on the two largest values only, but with as many draws as FE: a paired comparison needs
    # several draws to carry an interval, and fine-tuning costs far more per point
    ft = ExperimentSpec("ft", dataset, samples_per_class=grid[-2:], params=FineTuningParams(configuration=config),
                        **common)
    return [fe.validate(), ft.validate()]
