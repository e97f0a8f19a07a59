"""Feature extraction (the seed's FE): a full-network embedding and a linear classifier.

1. Activations at the taps of a model description (spatially averaged conv maps), concatenated.
2. Standardised per feature with the *training* statistics (``standardize="per_set"`` repeats the
   seed, which standardised each set with its own statistics, and says so), then discretised
   to {-1, 0, 1} at 0.15 / -0.25.
3. A registered classifier (``auto`` by default: scikit-learn's LinearSVC up to 1,000 training rows,
   ``linear``, its objective in torch, above); with crops every crop is a training sample and an image's prediction
   is the majority vote of its crops.

A few-shot curve costs one extraction: every image any point needs is extracted once (or read
from the on-disk cache) by :class:`~tlcore.features.Extractor`, then each point is one
classifier fit. Each point's run logs what it alone would have cost (its images x the measured
per-image extraction time, energy and FLOPs, plus its own post-processing and fit), so
trade-off plots compare like with like; the sweep's parent run logs what the sweep really cost.

One energy tracker per sweep: a CodeCarbon start and stop (30-50 ms here) and a handful of store
writes per point cost more than a small point's fit. The sweep's tracker measures the whole sweep,
the extraction's energy is read off it, and the rest (fits, post-processing, bookkeeping) is shared
among the points by their measured fit time, then logged on each point's run when the sweep ends
(``energy_method`` says so). The points' runs write their params, metrics and verdict in one batch.

Live progress: ``reporter.update`` during extraction and per point, and per finished point
``reporter.log_metrics({"<eval>_accuracy", "samples_per_class", "split"}, step=point index,
series="curve")`` so a page can draw the curve as it grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.classifiers import classifiers, fit_predict
from tlcore.data import ImageDataset
from tlcore.devices import resolve_device
from tlcore.errors import BackboneError, DatasetError
from tlcore.features import (
    ExtractionCost,
    ExtractionStats,
    Extractor,
    FeatureBank,
    FeatureCache,
    cache_identity,
    default_cache_root,
    full_network_embedding,
    tap_flops_per_input,
)

# The `name as name` imports re-export what moved to tlcore.features, for its old import path (tests, bench).
from tlcore.features import discretize as discretize
from tlcore.features import iter_features as iter_features
from tlcore.features import standardization_stats as standardization_stats
from tlcore.features import standardize as standardize
from tlcore.measure import CostMeter, CostReport, EnergySettings, apportion
from tlcore.methods.base import EXPERIMENTS, RunResult
from tlcore.methods.common import SplitPoint, Sweep, common_params, load_data, plan_points, score_metrics
from tlcore.models import Backbone, create_backbone, default_description, load_description
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams
from tlcore.tracking import Tracker

PER_SET_WARNING = ("standardize='per_set' reproduces the seed: each set is standardised with its own statistics, "
                   "so test features use test-set statistics; scores are optimistic and not comparable with "
                   "runs that use the training statistics (the default).")


# ---------------------------------------------------------------------------------------------
# Taps


@dataclass(frozen=True)
class TapSelection:
    taps: tuple[str, ...]
    layers: str  # the description's name, or "custom"


def resolve_taps(spec: ExperimentSpec) -> TapSelection:
    """Taps from ``params.taps``, else the model description, else the backbone's default taps;
    checked on the architecture (meta device, no weights) so a bad name fails before any run."""
    from tlcore.models.catalog import meta_backbone

    p: FeatureExtractionParams = spec.params
    where = ""
    if p.taps:
        sel = TapSelection(tuple(p.taps), "custom")
        where = "--taps"
    elif p.model_description:
        d = load_description(p.model_description, backbone=spec.backbone)
        sel = TapSelection(d.taps, d.name)
        where = f"Model description {d.path or d.name}"
    else:
        d = default_description(spec.backbone, 100)
        sel = TapSelection(d.taps, d.name)
    dupes = sorted({t for t in sel.taps if sel.taps.count(t) > 1})
    if dupes:
        raise BackboneError(f"{where or 'The tap list'} names {dupes[0]!r} more than once; list each tap once.")
    try:
        meta_backbone(spec.backbone).validate_taps(sel.taps)
    except BackboneError as exc:
        raise BackboneError(f"{where}: {exc}" if where else str(exc)) from None
    return sel


def upscale_note(image_size: tuple[int, int], input_size: int, backbone: str, name: str) -> str | None:
    """A hint when images are blown up many times to the backbone's input size (default resolution only).

    Measured here: 8x8 digits score 0.85 at efficientnet_lite0's 224 px and 0.92 at 64 px (10 spc).
    """
    factor = input_size / max(image_size)
    if factor < 4:
        return None
    w, h = image_size
    return (f"Images of {name} are {w}x{h} px, upscaled {factor:.0f}x to {backbone}'s {input_size} px input; a smaller "
            "--resolution (e.g. 64) costs many times less and can score as well or better: compare on a "
            "--model-selection run.")


# ---------------------------------------------------------------------------------------------
# One point of the curve


@dataclass
class PointOutcome:
    point: SplitPoint
    run_id: str
    metrics: dict[str, float]
    converged: bool = True
    run: Any = None  # its RunHandle: the sweep logs the point's energy share there at its end

    @property
    def accuracy(self) -> float:
        return self.metrics[f"{self.point.eval_set}_accuracy"]


#: A point's own meter only times it: its energy is its share of the sweep's tracker (see :func:`point_energy`).
TIMING_ONLY = EnergySettings(enabled=False)
#: How a point's energy was obtained, after the tracker's own label (which keeps its estimate/counters prefix).
APPORTIONED = "; fit apportioned from the sweep's tracker by time"


def fit_point(point: SplitPoint, bank: FeatureBank, ds: ImageDataset, params: FeatureExtractionParams,
              seed: int, device: torch.device, cost: ExtractionCost,
              flops_per_input: int, n_crops: int) -> tuple[dict[str, float], dict[str, Any], bool]:
    """Post-process, fit and score one point; returns (metrics, params, converged).

    The cost metrics are what this point alone would cost: its images x the per-image
    extraction cost, plus its own measured post-processing and classifier time. Its energy
    needs the sweep's tracker stopped first: :func:`point_energy` adds it.
    """
    x_train, train_idx = bank.take(point.train)
    x_eval, eval_idx = bank.take(point.eval)
    y_train, y_eval = ds.labels[train_idx], ds.labels[eval_idx]
    if len(np.unique(y_train)) < 2:
        raise DatasetError(f"After skipping unreadable images the training split {point.label} of {ds.name} holds "
                           f"{len(np.unique(y_train))} class; a classifier needs at least two.")
    if len(y_eval) == 0:
        raise DatasetError(f"After skipping unreadable images the {point.eval_set} set of {ds.name} is empty.")
    with CostMeter(device, TIMING_ONLY) as meter:
        with meter.lap("postprocess"):
            z_train, z_eval = full_network_embedding(x_train, [x_eval], params.standardize, params.discretize,
                                                     params.threshold_high, params.threshold_low)
        with meter.lap("classifier"):
            fit = fit_predict(params.classifier, z_train, y_train, z_eval, random_state=seed, device=str(device))
    r = meter.report
    n_images = len(train_idx) + len(eval_idx)
    inputs = n_images * n_crops
    t_extract = n_images * cost.seconds_per_image
    t_post, t_clf = r.laps["postprocess"], r.laps["classifier"]
    total = t_extract + t_post + t_clf
    metrics: dict[str, float] = {
        **score_metrics(point.eval_set, y_eval, fit.predictions),
        "time_extract_s": t_extract, "time_postprocess_s": t_post, "time_classifier_s": t_clf,
        "time_total_s": total, "device_hours": total / 3600.0,
        "images_processed": float(inputs), "flops_total": float(inputs * flops_per_input),
        "n_train_images_used": float(len(train_idx)), "n_eval_images": float(len(eval_idx)),
    }
    measured = cost.energy_method.startswith(("estimate", "counters"))
    run_params = {
        "energy_method": cost.energy_method + (APPORTIONED if measured else ""),
        "cost_basis": f"standalone: {n_images} images x extraction cost per image ({cost.basis}) + this run's "
                      "measured post-processing and classifier fit"
                      + (" (its energy: the sweep's energy outside extraction, shared by fit time)"
                         if measured else ""),
        "classifier_converged": fit.converged,
        "classifier_fitted": fit.fitted,
    }
    return metrics, run_params, fit.converged


def point_energy(metrics: dict[str, float], cost: ExtractionCost, share_kwh: float | None,
                 intensity: float | None) -> dict[str, float]:
    """A point's standalone energy and CO2: its images x the per-image extraction energy, plus ``share_kwh``,
    its share of the sweep's other energy; empty when either is unknown (missing, never zero)."""
    if cost.kwh_per_image is None or share_kwh is None:
        return {}
    n_images = metrics["n_train_images_used"] + metrics["n_eval_images"]
    energy_kwh = n_images * cost.kwh_per_image + share_kwh
    intensity = intensity or cost.carbon_intensity_g_per_kwh
    out = {"energy_kwh": energy_kwh}
    if intensity is not None:
        out.update(co2_kg=energy_kwh * intensity / 1000.0, carbon_intensity_g_per_kwh=intensity)
    return out


def fit_shares(report: CostReport, stats: ExtractionStats | None,
               outcomes: Sequence[PointOutcome]) -> list[float] | None:
    """Each point's share of what the sweep's tracker measured outside extraction, by its post-processing and
    fit time; with the extraction's energy they add up to the sweep's. None without a measurement."""
    if report.energy_kwh is None or not outcomes:
        return None
    extract_kwh = stats.energy_kwh if stats is not None and stats.energy_kwh is not None else 0.0
    return apportion(max(report.energy_kwh - extract_kwh, 0.0),
                     [o.metrics["time_postprocess_s"] + o.metrics["time_classifier_s"] for o in outcomes])


def _log_point_energy(report: CostReport, stats: ExtractionStats | None, outcomes: Sequence[PointOutcome]) -> None:
    shares = fit_shares(report, stats, outcomes)
    if shares is None or stats is None or stats.cost is None:
        return
    for o, share in zip(outcomes, shares, strict=True):
        energy = point_energy(o.metrics, stats.cost, share, report.carbon_intensity_g_per_kwh)
        if energy:
            o.metrics.update(energy)
            if o.run is not None:
                o.run.log_metrics(energy)


# ---------------------------------------------------------------------------------------------
# Summary


def format_summary(outcomes: Sequence[PointOutcome], header: str, footer: Sequence[str] = ()) -> str:
    """The CLI's closing table: per samples-per-class, mean ± std accuracy over splits and cost per run."""
    if not outcomes:
        return header
    eval_set = outcomes[0].point.eval_set
    by_spc: dict[int, list[PointOutcome]] = {}
    for o in outcomes:
        by_spc.setdefault(o.point.spc, []).append(o)
    title = f"{eval_set} balanced acc."
    lines = [header, f"  {'spc':>5} {'runs':>5}  {title:>22}  {'plain acc.':>10}  {'time/run':>9}  {'energy/run':>11}"]
    for spc in sorted(by_spc):
        group = by_spc[spc]
        acc = np.array([o.accuracy for o in group])
        plain = np.mean([o.metrics[f"{eval_set}_plain_accuracy"] for o in group])
        t = np.mean([o.metrics["time_total_s"] for o in group])
        energies = [o.metrics.get("energy_kwh") for o in group]
        e = f"{np.mean(energies):.2e} kWh" if all(v is not None for v in energies) else "n/a"
        spread = f"{acc.mean():.3f} ± {acc.std():.3f}" if len(acc) > 1 else f"{acc.mean():.3f}"
        lines.append(f"  {spc:>5} {len(group):>5}  {spread:>22}  {plain:>10.3f}  {t:>8.2f}s  {e:>11}")
    return "\n".join([*lines, *footer])


# ---------------------------------------------------------------------------------------------
# The method


def _needed_images(points: Sequence[SplitPoint]) -> np.ndarray:
    return np.unique(np.concatenate([np.concatenate([p.train, p.eval]) for p in points]))


def _fe_params(p: FeatureExtractionParams, sel: TapSelection, device: torch.device, bb: Backbone,
               cache: FeatureCache | None, n_crops: int) -> dict[str, Any]:
    return {
        "classifier": p.classifier, "layers": sel.layers, "taps": list(sel.taps), "n_taps": len(sel.taps),
        "standardize": p.standardize, "discretize": p.discretize, "threshold_high": p.threshold_high,
        "threshold_low": p.threshold_low, "device": str(device), "weights_used": bb.weights_name,
        "crops_per_image": n_crops, "feature_cache": str(cache.folder) if cache is not None else "off",
    }


def run_feature_extraction(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    """Extract once, fit one classifier per point; see the module docstring."""
    params: FeatureExtractionParams = spec.params
    # -- everything that can be wrong is checked before a run opens ------------------------------
    classifiers.get(params.classifier)
    sel = resolve_taps(spec)
    ds, splits = load_data(spec, reporter)
    points = plan_points(spec, ds, splits)
    device = resolve_device(spec.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # a random network is the same one for the same seed (its cache entries)
        bb = create_backbone(spec.backbone, spec.weights, download=spec.download_weights).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        bb = bb.to(device, memory_format=torch.channels_last)
    else:
        bb = bb.to(device)
    prep = replace(bb.preprocessing, input_size=spec.input_size)
    n_crops = 10 if spec.use_crops else 1
    flops_per_input = tap_flops_per_input(bb, sel.taps, prep.input_size)
    cache = None
    if params.cache:
        root = Path(params.cache_dir).expanduser() if params.cache_dir else default_cache_root(tracker.uri)
        cache = FeatureCache.open(root, cache_identity(spec, ds, bb, sel.taps, prep, device))
    energy = EnergySettings(spec.country_iso_code, spec.carbon_intensity_g_per_kwh, spec.measure_energy)
    extractor = Extractor(spec, ds, bb, sel.taps, prep, device, cache, energy, flops_per_input)
    needed = extractor.prepare(_needed_images(points))
    if params.standardize == "per_set":
        reporter.message(PER_SET_WARNING, "warning")
    if spec.resolution is None:
        note = upscale_note(ds.source.load(int(needed[0])).size, prep.input_size, spec.backbone, ds.name)
        if note:
            reporter.message(note)

    # -- runs: a parent for the sweep, one child per point ---------------------------------------
    run_params = {**common_params(spec, ds, splits), **_fe_params(params, sel, device, bb, cache, n_crops)}
    sweep_spec = replace(spec, tags={**spec.tags, **({"standardize_note": PER_SET_WARNING}
                                                     if params.standardize == "per_set" else {})})
    extract_share = 0.85 if extractor.misses else 0.1  # of the progress bar
    ctx = _PointContext(ds, params, spec.seed, device, flops_per_input, n_crops, len(points))
    outcomes: list[PointOutcome] = []
    stats: ExtractionStats | None = None
    with Sweep(sweep_spec, tracker, reporter, len(points), run_params, defer_children=True) as sweep:
        meter = CostMeter(device, energy).start()  # what the whole sweep really costs: its one energy tracker
        try:
            if sweep.parent is None:  # one point (model selection): its own run holds the extraction
                with sweep.child(points[0], {}) as (run, sub):
                    with meter.lap("extract"):
                        bank, stats = extractor.run(needed, sub.scaled(0.0, extract_share), meter)
                    run.log_metrics({"feature_cache_hits": stats.hits, "images_skipped": stats.skipped})
                    outcomes.append(_run_point(ctx, points[0], 0, bank, stats, run, sub.scaled(extract_share, 1.0),
                                               meter))
            else:
                with meter.lap("extract"):
                    bank, stats = extractor.run(needed, reporter.scaled(0.0, extract_share), meter)
                sweep.progress = (extract_share, 1.0)
                for i, point in enumerate(points):
                    with sweep.child(point, {}) as (run, sub):
                        outcomes.append(_run_point(ctx, point, i, bank, stats, run, sub, meter))
        finally:
            report = meter.stop()
            _log_point_energy(report, stats, outcomes)
            if sweep.parent is not None:
                _log_parent(sweep.parent, report, stats, outcomes)
    return _result(spec, ds, sel, bank, stats, report, outcomes, sweep, tracker)


@dataclass(frozen=True)
class _PointContext:
    ds: ImageDataset
    params: FeatureExtractionParams
    seed: int
    device: torch.device
    flops_per_input: int
    n_crops: int
    n_points: int


def _run_point(ctx: _PointContext, point: SplitPoint, index: int, bank: FeatureBank, stats: ExtractionStats, run,
               reporter: Reporter, sweep_meter: CostMeter) -> PointOutcome:
    """Fit and score one point in its open run, log it, and tell the reporter (live curve)."""
    reporter.update(stage=f"{ctx.params.classifier} on {point.label} ({index + 1}/{ctx.n_points})", fraction=0.0)
    metrics, extra, converged = fit_point(point, bank, ctx.ds, ctx.params, ctx.seed, ctx.device,
                                          stats.cost, ctx.flops_per_input, ctx.n_crops)
    run.log_all(params={**extra, "n_features": bank.n_features}, metrics=metrics)
    if not converged:
        reporter.message(f"{ctx.params.classifier} did not converge on {point.label} (its iteration cap was "
                         "reached); the score is still logged, with param classifier_converged=false and the run's "
                         "verdict capped.", "warning")
    for lap in ("postprocess", "classifier"):
        sweep_meter.laps[lap] = sweep_meter.laps.get(lap, 0.0) + metrics[f"time_{lap}_s"]
    acc_key = f"{point.eval_set}_accuracy"
    reporter.log_metrics({acc_key: metrics[acc_key], "samples_per_class": point.spc, "split": point.split},
                         step=index, series="curve")
    reporter.update(fraction=1.0)
    return PointOutcome(point, run.run_id, metrics, converged, run)


def _log_parent(parent, report, stats: ExtractionStats | None, outcomes: Sequence[PointOutcome]) -> None:
    """The sweep's real cost (one extraction, every fit) and its curve, also when it ended early."""
    metrics = report.metrics()
    if stats is not None:
        metrics.update({"feature_cache_hits": stats.hits, "feature_cache_misses": stats.needed - stats.hits,
                        "images_skipped": stats.skipped, "images_needed": stats.needed})
    if outcomes:
        metrics["children_time_total_s"] = float(sum(o.metrics["time_total_s"] for o in outcomes))
    parent.log_metrics(metrics)
    parent.log_params({"energy_method": report.energy_method})
    if not outcomes:
        return
    eval_set = outcomes[0].point.eval_set
    for spc in sorted({o.point.spc for o in outcomes}):
        acc = np.array([o.accuracy for o in outcomes if o.point.spc == spc])
        parent.log_metrics({f"curve_{eval_set}_accuracy_mean": float(acc.mean()),
                            f"curve_{eval_set}_accuracy_std": float(acc.std())}, step=spc)
    rows = ["samples_per_class,split,run_id,accuracy,plain_accuracy,time_total_s"]
    rows += [f"{o.point.spc},{o.point.split},{o.run_id},{o.accuracy:.6f},"
             f"{o.metrics[f'{eval_set}_plain_accuracy']:.6f},{o.metrics['time_total_s']:.4f}" for o in outcomes]
    parent.log_text("\n".join(rows) + "\n", "curve.csv")


def _result(spec: ExperimentSpec, ds: ImageDataset, sel: TapSelection, bank: FeatureBank, stats: ExtractionStats,
            report, outcomes: list[PointOutcome], sweep: Sweep, tracker: Tracker) -> RunResult:
    eval_set = outcomes[0].point.eval_set
    curve: dict[str, float] = {}
    for spc in sorted({o.point.spc for o in outcomes}):
        curve[f"{eval_set}_accuracy_spc_{spc}"] = float(np.mean([o.accuracy for o in outcomes if o.point.spc == spc]))
    header = (f"Feature extraction: {ds.name}, {spec.backbone} ({len(sel.taps)} taps, {bank.n_features:,} features), "
              f"{spec.params.classifier}, {len(outcomes)} run(s)")
    energy = f", {report.energy_kwh:.2e} kWh, {report.co2_kg * 1000:.3g} g CO2 ({report.energy_method})" \
        if report.energy_kwh is not None and report.co2_kg is not None else ""
    cached = f" ({stats.hits} of {stats.needed} from the cache)" if stats.hits else ""
    skipped = f", {stats.skipped} unreadable image(s) skipped" if stats.skipped else ""
    footer = [
        f"Whole sweep, actual: {stats.needed} images needed, {stats.extracted} extracted in {stats.seconds:.1f} s"
        f"{cached}{skipped}; total {report.time_total_s:.1f} s{energy}.",
        "Per-run cost columns are standalone (each run's images x the per-image extraction cost + its own fit).",
        f"MLflow: experiment '{EXPERIMENTS['fe']}' in {tracker.uri}"
        + (f", parent run {sweep.parent.run_id} (sweep_id {sweep.sweep_id})" if sweep.parent else
           f", run {sweep.child_ids[0]}") + ".",
    ]
    return RunResult("fe", run_ids=list(sweep.child_ids), parent_run_id=sweep.parent.run_id if sweep.parent else None,
                     metrics=curve, summary=format_summary(outcomes, header, footer),
                     artifacts={"feature_cache": stats.cache_folder} if stats.cache_folder else {})
