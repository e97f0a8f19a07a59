"""Ranking backbones before training: training-free transferability scores from cached features.

For each backbone (and, on request, the same architecture with random weights as a control) the
labelled images the user will train on are embedded once through the shared feature cache
(:mod:`tlcore.features`, the cache feature extraction fills: a backbone FE already extracted costs no
forward), then each score (:mod:`.scores`) is computed per draw on the whole embedding and per tap.
LEEP and NCE also need the backbone's ImageNet head: its outputs are extracted (and cached) as one
more tap, for pretrained backbones only.

Features are standardised per dimension with the scored images' own statistics before any score, so
that no tap dominates the whole embedding by its scale (the scores are not scale-free across taps).

MLflow: a parent run per ranking (experiment ``Transferability``), one child per backbone with the
mean of each score over draws (``<score>``), its spread (``<score>_std``), each draw's value
(``<score>_draw``, step = draw) and, per tap, the mean over draws (``<score>_tap``, step = tap index;
the tap names are the ``taps`` param). A backbone whose pretrained weights are not on this machine
fails before any run opens.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from tlcore.devices import resolve_device
from tlcore.errors import DatasetError, SpecError
from tlcore.features import (
    ExtractionStats,
    Extractor,
    FeatureBank,
    FeatureCache,
    cache_identity,
    default_cache_root,
    tap_flops_per_input,
)
from tlcore.features.extractor import cost_record, device_key, stored_cost
from tlcore.measure import CostMeter, EnergySettings
from tlcore.methods.base import EXPERIMENTS, RunResult
from tlcore.methods.common import common_params, load_data, split_hash
from tlcore.methods.ranking.plan import Candidate, candidates, fe_curve_images, ranking_points
from tlcore.methods.ranking.scores import (
    SCORES,
    hscore_many,
    logme_many,
    sfda_many,
    standardize_features,
    thin_svd,
)
from tlcore.models import create_backbone, default_description
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, RankingParams
from tlcore.tracking import Tracker


def _check_weights(cands: Sequence[Candidate]) -> None:
    from tlcore.models import weights_status

    for c in cands:
        if not c.control and not any(weights_status(c.backbone).values()):
            raise SpecError(f"The pretrained weights of {c.backbone} are not on this machine, so it cannot be ranked; "
                            "leave it out of --backbones (Backbones), or put its weights file in the torch hub cache.")


def _taps(params: RankingParams, backbone: str) -> tuple[str, ...]:
    return tuple(params.taps) if params.taps else default_description(backbone, params.tap_percent).taps


@dataclass
class Scored:
    """What one candidate earned: per score, one value per draw, and per tap the mean over draws."""

    candidate: Candidate
    run_id: str = ""
    taps: tuple[str, ...] = ()
    draws: dict[str, list[float]] = field(default_factory=dict)
    per_tap: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def mean(self, score: str) -> float:
        values = [v for v in self.draws.get(score, []) if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class _WeightsName:
    """All :func:`~tlcore.features.cache_identity` reads of a backbone: which weights it carries. A candidate
    whose features are all cached is looked up with this and never builds its network."""

    weights_name: str


class _Features:
    """Extracts (through the shared cache) what the scores of one candidate need; builds the network only
    when some image is not cached."""

    def __init__(self, spec: ExperimentSpec, ds, cand: Candidate, device: torch.device, energy: EnergySettings,
                 cache_root: Path | None) -> None:
        from tlcore.models import backbone_config

        self.spec = replace(spec, backbone=cand.backbone, weights="random" if cand.control else "default")
        self.ds, self.device, self.energy, self.cache_root = ds, device, energy, cache_root
        self.cfg = backbone_config(cand.backbone)
        self.weights_name = "random" if cand.control else str(self.cfg.default_weights)
        self.prep = replace(self.cfg.preprocessing, input_size=spec.input_size)
        self.head = not cand.control and bool(self.cfg.head_path) and bool(
            (self.cfg.weights.get(self.weights_name) or _NoCategories).categories)
        self._bb = None
        self.built = False

    @property
    def bb(self):
        if self._bb is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.spec.seed)  # the same random control for the same seed (its cache entries)
                self._bb = create_backbone(self.spec.backbone, self.spec.weights).eval().to(self.device)
            self.built = True
        return self._bb

    def extract(self, taps: Sequence[str], needed: np.ndarray, reporter: Reporter, meter: CostMeter):
        """(FeatureBank, ExtractionStats) of ``needed`` at ``taps``: from the cache alone when it holds them all."""
        cache = self._cache(taps)
        if cache is not None and (cached := _all_cached(cache, self.ds, needed, self.device)) is not None:
            return cached
        flops = tap_flops_per_input(self.bb, taps, self.prep.input_size)
        ex = Extractor(self.spec, self.ds, self.bb, taps, self.prep, self.device, cache, self.energy, flops)
        return ex.run(needed, reporter, meter)

    def _cache(self, taps: Sequence[str]) -> FeatureCache | None:
        if self.cache_root is None:
            return None
        return FeatureCache.open(self.cache_root, cache_identity(self.spec, self.ds, _WeightsName(self.weights_name),
                                                                 taps, self.prep, self.device))

    def extract_with_head(self, taps: Sequence[str], needed: np.ndarray, reporter: Reporter, meter: CostMeter
                          ) -> tuple[FeatureBank, ExtractionStats, FeatureBank]:
        """(taps bank, its stats, head bank): both in ONE forward when neither cache holds any of ``needed`` (a
        network ranked for the first time), else each through its own cache as :meth:`extract` does.

        The two stay separate caches, so the taps' entries are the ones feature extraction shares. The per-image
        cost of the shared forward is scaled to the taps' share of its counted FLOPs: what the taps alone cost.
        """
        head = (self.cfg.head_path,)
        caches = [self._cache(taps), self._cache(head)]
        unique = np.unique(needed)
        keys = [self.ds.source.key(int(i)) for i in unique]
        fps = [self.ds.source.fingerprint(int(i)) for i in unique]
        if any(c is not None and c.lookup(keys, fps).any() for c in caches):
            bank, stats = self.extract(taps, needed, reporter.scaled(0.0, 0.8), meter)
            probs, _ = self.extract(head, needed, reporter.scaled(0.8, 1.0), meter)
            return bank, stats, probs
        both = (*taps, *head)
        flops_taps = tap_flops_per_input(self.bb, taps, self.prep.input_size)
        flops_both = tap_flops_per_input(self.bb, both, self.prep.input_size)
        ex = Extractor(self.spec, self.ds, self.bb, both, self.prep, self.device, None, self.energy, flops_both)
        joint, stats = ex.run(needed, reporter, meter)
        width = sum(self.tap_widths(taps, -1))
        taps_bank = FeatureBank(joint.indices, np.ascontiguousarray(joint.features[:, :width]), joint.available)
        head_bank = FeatureBank(joint.indices, np.ascontiguousarray(joint.features[:, width:]), joint.available)
        rows = np.flatnonzero(joint.available)
        for cache, bank in zip(caches, (taps_bank, head_bank), strict=True):
            if cache is not None:
                with cache.writer() as w:
                    w.add([keys[r] for r in rows], [fps[r] for r in rows], bank.features[rows])
        if stats.cost is not None:
            share = flops_taps / flops_both
            note = f"taps and ImageNet head in one forward, scaled to the taps' {share:.0%} of its FLOPs"
            c = stats.cost
            stats.cost = replace(c, seconds_per_image=c.seconds_per_image * share, basis=f"{c.basis}, {note}",
                                 kwh_per_image=None if c.kwh_per_image is None else c.kwh_per_image * share)
            if caches[0] is not None and stats.extracted:  # what feature extraction will read as the taps' cost
                caches[0].record_extraction_cost(device_key(self.device), cost_record(
                    stats.cost, stats.extracted, self.spec.batch_size, note))
        return taps_bank, stats, head_bank

    def tap_widths(self, taps: Sequence[str], n_features: int) -> list[int]:
        """How a feature row of ``n_features`` (-1: not known yet) splits into ``taps``: recorded in the feature
        cache, else from a forward of two blank images (the network when it is built, else shapes alone on the
        meta device), then recorded."""
        cache = self._cache(taps)
        if cache is not None:
            known = cache.tap_widths()
            if known is not None and len(known) == len(taps) and n_features in (sum(known), -1):
                return known
        if self.built:
            with torch.inference_mode():
                outs = self.bb.extract_taps(torch.zeros(2, 3, self.prep.input_size, self.prep.input_size,
                                                        device=self.device), taps)
            widths = [int(o.shape[1]) for o in outs]
        else:
            widths = tap_widths(self.spec.backbone, taps, self.prep.input_size)
        if cache is not None:
            cache.record_tap_widths(widths)
        return widths


def _all_cached(cache: FeatureCache, ds, needed: np.ndarray, device: torch.device
                ) -> tuple[FeatureBank, ExtractionStats] | None:
    needed = np.unique(needed)
    keys = [ds.source.key(int(i)) for i in needed]
    if not cache.lookup(keys, [ds.source.fingerprint(int(i)) for i in needed]).all():
        return None
    known = cache.extraction_cost(device_key(device))
    stats = ExtractionStats(len(needed), len(needed), cost=stored_cost(known) if known else None,
                            cache_folder=str(cache.folder))
    return FeatureBank(needed, cache.read(keys), np.ones(len(needed), dtype=bool)), stats


def tap_widths(backbone: str, taps: Sequence[str], size: int) -> list[int]:
    """Each tap's feature width, from shapes alone (the meta device: no weights, no compute)."""
    from tlcore.models.catalog import meta_backbone

    with torch.device("meta"):
        outs = meta_backbone(backbone).extract_taps(torch.zeros(2, 3, size, size), taps)
    return [int(o.shape[1]) for o in outs]


class _NoCategories:
    categories = None


#: Scores that need more images than dimensions (SFDA's Fisher projection, H-score's covariance inverse) run on
#: the top principal components of the features: at most this many, and at most a quarter of the images. Without
#: it, with fewer images than features (every few-shot case), SFDA is 0 for any features (each class separates
#: on its own samples) and H-score's D x D covariance costs seconds per call.
MAX_COMPONENTS = 128
COMPONENT_SCORES = ("sfda", "hscore")


def n_components(n_images: int, n_features: int) -> int:
    """Principal components SFDA and H-score read: fixed by the images alone, so every backbone gets the same."""
    return max(2, min(n_features, MAX_COMPONENTS, n_images // 4))


def _score_all(params: RankingParams, x: np.ndarray, y: np.ndarray, widths: Sequence[int],
               probs: np.ndarray | None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Every requested score on the whole embedding, and (feature scores) on each tap.

    Each block (the whole embedding, then each tap) is standardised (so centred) and decomposed once: LogME
    reads the decomposition, and the principal components SFDA and H-score read are its leading directions
    (U S). Each of these scores runs on all blocks at once (``logme_many``, ``sfda_many``, ``hscore_many``).
    """
    feature_scores = [s for s in params.scores if SCORES[s].needs == "features"]
    z = standardize_features(x)
    bounds = [(0, z.shape[1])]
    if params.per_tap and len(widths) > 1:
        bounds += list(itertools.pairwise(np.cumsum([0, *widths])))
    blocks: list[dict[str, float]] = [{} for _ in bounds]
    svds, reduced = [], []
    for block, (a, b) in zip(blocks, bounds, strict=True):
        part = z[:, a:b]
        u, s = thin_svd(part)
        svds.append((u, s, part.shape[1]))
        k = n_components(*part.shape)
        reduced.append(part if part.shape[1] <= k else u[:, :k] * s[:k])
        for name in feature_scores:
            if name not in COMPONENT_SCORES and name != "logme":
                block[name] = float(SCORES[name].function(part, y))
    batched = {"logme": lambda: logme_many(svds, y), "sfda": lambda: sfda_many(reduced, y),
               "hscore": lambda: hscore_many(reduced, y)}
    for name in feature_scores:
        if name in batched:
            for block, value in zip(blocks, batched[name](), strict=True):
                block[name] = value
    whole = {name: blocks[0][name] for name in feature_scores}
    for name in params.scores:
        if SCORES[name].needs == "source_probs":
            whole[name] = float(SCORES[name].function(probs, y)) if probs is not None else float("nan")
    taps = {name: [block[name] for block in blocks[1:]] for name in feature_scores}
    return whole, {k: v for k, v in taps.items() if v}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_ranking(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    """Score every candidate on the same draws; see the module docstring."""
    params: RankingParams = spec.params
    cands = candidates(params)
    _check_weights(cands)
    if params.taps is not None:  # a wrong layer name fails before any run opens
        from tlcore.models.catalog import meta_backbone

        meta_backbone(params.backbones[0]).validate_taps(params.taps)
    ds, splits = load_data(spec, reporter)
    points = ranking_points(spec, ds, splits)
    needed = np.unique(np.concatenate([p.train for p in points]))
    device = resolve_device(spec.device)
    energy = EnergySettings(spec.country_iso_code, spec.carbon_intensity_g_per_kwh, spec.measure_energy)
    cache_root = None
    if params.cache:
        cache_root = Path(params.cache_dir).expanduser() if params.cache_dir else default_cache_root(tracker.uri)
    fe_images = fe_curve_images(spec)
    spc = sorted({p.spc for p in points})
    shared = {**common_params(spec, ds, splits), "samples_per_class": ",".join(map(str, spc)),
              "n_draws": len(points), "n_images": len(points[0].train),
              "n_images_embedded": len(needed), "scores": ",".join(params.scores),
              "tap_percent": params.tap_percent if params.taps is None else "custom",
              "train_hashes": ",".join(split_hash(p.train) for p in points), "device": str(device)}
    shared.pop("backbone"), shared.pop("weights")
    tags = {**spec.tags, **({"job": spec.job} if spec.job else {})}
    scored: list[Scored] = []
    parent = tracker.start_run(spec.method, {**shared, "backbones": ",".join(c.name for c in cands),
                                             "random_control": params.random_control},
                               tags={**tags, "sweep_parent": "true"},
                               run_name=f"Ranking · {spec.dataset} · {len(cands)} networks")
    reporter.run_started(parent.run_id, EXPERIMENTS[spec.method], "ranking parent")
    with parent:
        meter = CostMeter(device, energy).start()
        try:
            for i, cand in enumerate(cands):
                reporter.check_cancelled()
                sub = reporter.scaled(i / len(cands), (i + 1) / len(cands))
                scored.append(_rank_one(spec, ds, points, needed, cand, device, energy, cache_root, shared, tags,
                                        parent.run_id, tracker, sub, meter, fe_images))
        finally:
            report = meter.stop()
            parent.log_metrics({**report.metrics(), "fe_curve_images": float(fe_images)})
            if scored:
                parent.log_text(_table_csv(scored, params.scores), "ranking.csv")
    return _result(spec, ds, points, cands, scored, parent.run_id, tracker)


def _rank_one(spec, ds, points, needed, cand: Candidate, device, energy, cache_root, shared, tags, parent_id,
              tracker: Tracker, reporter: Reporter, sweep_meter: CostMeter, fe_images: int) -> Scored:
    params: RankingParams = spec.params
    taps = _taps(params, cand.backbone)
    out = Scored(cand, taps=taps)
    started = time.perf_counter()
    feats = _Features(spec, ds, cand, device, energy, cache_root)
    run = tracker.start_run(spec.method, {
        **shared, "backbone": cand.backbone, "weights": "random" if cand.control else "default",
        "control": cand.control, "taps": list(taps), "n_taps": len(taps), "weights_used": feats.weights_name,
        "resolution": feats.prep.input_size}, tags={**tags},
        parent_run_id=parent_id, run_name=f"Ranking · {cand.name} · {spec.dataset}")
    out.run_id = run.run_id
    reporter.run_started(run.run_id, EXPERIMENTS[spec.method], cand.name)
    with run:
        reporter.update(stage=f"{cand.name}: loading", fraction=0.0)
        with CostMeter(device, energy) as meter:
            with meter.lap("extract"):
                probs_bank = None
                if feats.head and any(SCORES[s].needs == "source_probs" for s in params.scores):
                    bank, stats, probs_bank = feats.extract_with_head(taps, needed, reporter.scaled(0.0, 0.9),
                                                                      sweep_meter)
                else:
                    bank, stats = feats.extract(taps, needed, reporter.scaled(0.0, 0.9), sweep_meter)
            reporter.update(stage=f"{cand.name}: scoring {len(points)} draw(s)", fraction=0.9)
            widths = feats.tap_widths(taps, bank.n_features)
            with meter.lap("score"), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                for p in points:
                    x, idx = bank.take(p.train)
                    y = ds.labels[idx]
                    if len(np.unique(y)) < 2:
                        raise DatasetError(f"The training split {p.label} of {ds.name} holds a single readable "
                                           "class; a score needs at least two.")
                    probs = _softmax(probs_bank.take(p.train)[0]) if probs_bank is not None else None
                    whole, per_tap = _score_all(params, x, y, widths, probs)
                    for name, v in whole.items():
                        out.draws.setdefault(name, []).append(v)
                    for name, values in per_tap.items():
                        acc = out.per_tap.setdefault(name, [0.0] * len(values))
                        out.per_tap[name] = [a + v / len(points) for a, v in zip(acc, values, strict=True)]
        capped = sum("did not converge" in str(w.message) for w in caught)
        if capped:
            reporter.message(f"{cand.name}: LogME's fixed-point iteration reached its cap on {capped} of the scored "
                             "feature sets (whole embedding or taps; uninformative features converge slowly); their "
                             "values are where the iteration stopped, a little below the maximum.", "warning")
        r = meter.report
        metrics: dict[str, float] = {}
        for name in params.scores:
            values = [v for v in out.draws.get(name, []) if np.isfinite(v)]
            if values:
                metrics[name] = float(np.mean(values))
                if len(values) > 1:  # one draw has no spread: none is logged (not a spread of 0)
                    metrics[f"{name}_std"] = float(np.std(values, ddof=1))
        flops_per_input = tap_flops_per_input(feats.bb, taps, feats.prep.input_size) if stats.extracted else 0
        per_image = stats.cost.seconds_per_image if stats.cost is not None else float("nan")
        metrics.update({
            "time_extract_s": r.laps.get("extract", 0.0), "time_score_s": r.laps.get("score", 0.0),
            "time_total_s": time.perf_counter() - started, "feature_cache_hits": float(stats.hits),
            "images_processed": float(stats.extracted), "flops_total": float(stats.extracted * flops_per_input),
            "extract_seconds_per_image": per_image, "fe_curve_images": float(fe_images),
        })
        if np.isfinite(per_image) and fe_images:
            metrics["fe_curve_extract_s"] = fe_images * per_image  # what one FE curve's extraction alone costs
        if r.energy_kwh is not None:
            metrics["energy_kwh"] = r.energy_kwh
            if r.co2_kg is not None:
                metrics["co2_kg"] = r.co2_kg
        run.log_all(params={"logme_converged": capped == 0}, metrics=metrics,
                    steps={**{f"{n}_draw": v for n, v in out.draws.items()},
                           **{f"{n}_tap": v for n, v in out.per_tap.items()}})
        out.metrics = metrics
    return out


def _table_csv(scored: Sequence[Scored], scores: Sequence[str]) -> str:
    rows = ["network,control,run_id," + ",".join(scores) + ",time_total_s"]
    for s in scored:
        rows.append(f"{s.candidate.backbone},{s.candidate.control},{s.run_id},"
                    + ",".join(f"{s.mean(n):.6g}" for n in scores) + f",{s.metrics.get('time_total_s', 0):.3f}")
    return "\n".join(rows) + "\n"


def format_ranking(scored: Sequence[Scored], scores: Sequence[str]) -> list[str]:
    """The CLI's table: one row per network, best first by the first score."""
    first = scores[0]
    order = sorted(scored, key=lambda s: -s.mean(first) if np.isfinite(s.mean(first)) else np.inf)
    width = max(len(s.candidate.name) for s in scored)
    lines = [f"  {'#':>2}  {'network':<{width}}  " + "  ".join(f"{SCORES[n].label:>10}" for n in scores)
             + f"  {'time':>7}"]
    for i, s in enumerate(order, 1):
        cells = []
        for n in scores:
            v = s.mean(n)
            cells.append(f"{v:>10.4g}" if np.isfinite(v) else f"{'n/a':>10}")
        lines.append(f"  {i:>2}  {s.candidate.name:<{width}}  " + "  ".join(cells)
                     + f"  {s.metrics.get('time_total_s', 0):>6.1f}s")
    return lines


def _result(spec: ExperimentSpec, ds, points, cands, scored: list[Scored], parent_id: str,
            tracker: Tracker) -> RunResult:
    params: RankingParams = spec.params
    header = (f"Transferability ranking: {ds.name}, {len(cands)} network(s), {len(points)} draw(s) of "
              f"{','.join(str(s) for s in sorted({p.spc for p in points}))} per class at {spec.input_size} px")
    lines = [header, *format_ranking(scored, params.scores)]
    lines += suspicious_controls(scored, params.scores)
    head_note = " n/a: the score needs the backbone's ImageNet head." if {"leep", "nce"} & set(params.scores) else ""
    lines.append(f"Ranked by {SCORES[params.scores[0]].label} (higher is better).{head_note}")
    lines.append(f"MLflow: experiment '{EXPERIMENTS[spec.method]}' in {tracker.uri}, parent run {parent_id}.")
    metrics = {f"{s.candidate.name}/{n}": s.mean(n) for s in scored for n in params.scores
               if np.isfinite(s.mean(n))}
    rows = [{"network": s.candidate.name, "backbone": s.candidate.backbone, "control": s.candidate.control,
             "run_id": s.run_id, "draws": len(points), "time_s": s.metrics.get("time_total_s"),
             "scores": {n: {"mean": s.mean(n), "std": s.metrics.get(f"{n}_std"), "per_draw": s.draws.get(n, [])}
                        for n in params.scores if np.isfinite(s.mean(n))},
             "per_tap": {n: dict(zip(s.taps, v, strict=True)) for n, v in s.per_tap.items()}}
            for s in sorted(scored, key=lambda s: -s.mean(params.scores[0]) if np.isfinite(s.mean(params.scores[0]))
                            else np.inf)]
    return RunResult(spec.method, run_ids=[s.run_id for s in scored], parent_run_id=parent_id, metrics=metrics,
                     summary="\n".join(lines), rows=rows)


def suspicious_controls(scored: Sequence[Scored], scores: Sequence[str]) -> list[str]:
    """One line per score that does not put every random control below every pretrained network."""
    out = []
    for n in scores:
        trained = [s.mean(n) for s in scored if not s.candidate.control and np.isfinite(s.mean(n))]
        controls = [s.mean(n) for s in scored if s.candidate.control and np.isfinite(s.mean(n))]
        if trained and controls and max(controls) >= min(trained):
            out.append(f"Suspect: {SCORES[n].label} ranks a random-weights control at or above a pretrained network "
                       "here, so its ranking of these networks says little on these images.")
    return out


