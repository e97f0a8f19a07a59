"""Feature extraction (the seed's FE): a full-network embedding and a linear classifier.

1. Activations at the taps of a model description (spatially averaged conv maps), concatenated.
2. Standardised per feature with the *training* statistics (``standardize="per_set"`` repeats the
   seed, which standardised each set with its own statistics, and says so), then discretised
   to {-1, 0, 1} at 0.15 / -0.25.
3. A registered classifier (scikit-learn's LinearSVC by default; ``linear`` fits its objective in
   torch, for large points); with crops every crop is a training sample and an image's prediction
   is the majority vote of its crops.

A few-shot curve costs one extraction: every image any point needs is extracted once (or read
from the on-disk :class:`~tlcore.methods.feature_cache.FeatureCache`), then each point is one
classifier fit. Each point's run logs what it alone would have cost (its images x the measured
per-image extraction time, energy and FLOPs, plus its own post-processing and fit), so
trade-off plots compare like with like; the sweep's parent run logs what the sweep really cost.

Live progress: ``reporter.update`` during extraction and per point, and per finished point
``reporter.log_metrics({"<eval>_accuracy", "samples_per_class", "split"}, step=point index,
series="curve")`` so a page can draw the curve as it grows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.classifiers import classifiers, fit_predict
from tlcore.data import ImageDataset, split_class_filter
from tlcore.data.loading import ImageBatches, Preprocessing, make_loader, normalize_batch
from tlcore.devices import resolve_device
from tlcore.errors import BackboneError, DatasetError
from tlcore.measure import CostMeter, EnergySettings, count_flops
from tlcore.methods.base import RunResult
from tlcore.methods.common import SplitPoint, Sweep, common_params, load_data, plan_points, score_metrics
from tlcore.methods.feature_cache import FeatureCache, default_cache_root
from tlcore.models import Backbone, create_backbone, default_description, load_description
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams
from tlcore.tracking import EXPERIMENTS, Tracker

ZERO_STD = 1e-8  # features whose training std is below this are constant: standardised to 0
PER_SET_WARNING = ("standardize='per_set' reproduces the seed: each set is standardised with its own statistics, "
                   "so test features use test-set statistics; scores are optimistic and not comparable with "
                   "runs that use the training statistics (the default).")


# ---------------------------------------------------------------------------------------------
# Full-network embedding post-processing (pure numpy)


def standardization_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over every row (every crop) of ``x`` (..., D), in float64."""
    rows = x.reshape(-1, x.shape[-1])
    return rows.mean(axis=0, dtype=np.float64), rows.std(axis=0, dtype=np.float64)


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """z-scores with given statistics; a feature constant in the statistics' set becomes 0 everywhere."""
    scale = np.where(std > ZERO_STD, 1.0 / np.maximum(std, ZERO_STD), 0.0).astype(np.float32)
    return (np.asarray(x, dtype=np.float32) - mean.astype(np.float32)) * scale


def discretize(z: np.ndarray, high: float = 0.15, low: float = -0.25) -> np.ndarray:
    """FNE's ternary code: > high -> 1, < low -> -1, else 0 (int8)."""
    out = np.zeros(z.shape, dtype=np.int8)
    out[z > high] = 1
    out[z < low] = -1
    return out


def full_network_embedding(train: np.ndarray, others: Sequence[np.ndarray], statistics: str = "train",
                           discretize_values: bool = True, high: float = 0.15,
                           low: float = -0.25) -> list[np.ndarray]:
    """Post-process raw features: ``[train, *others]`` standardised (and discretised).

    ``statistics="train"`` applies the training statistics to every set (FNE); ``"per_set"``
    gives each set its own (the seed's behaviour, which leaks test statistics).
    """
    if statistics not in ("train", "per_set"):
        raise ValueError(f"statistics must be 'train' or 'per_set', got {statistics!r}")
    mean, std = standardization_stats(train)
    out = []
    for x in (train, *others):
        if statistics == "per_set" and x is not train:
            mean, std = standardization_stats(x) if len(x) else (mean, std)
        z = standardize(x, mean, std)
        out.append(discretize(z, high, low) if discretize_values else z)
    return out


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
# Extraction


def iter_features(bb: Backbone, images: ImageBatches, taps: Sequence[str], device: torch.device, batch_size: int,
                  num_workers: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, list[int]]]:
    """Yield ``(dataset indices, features, skipped indices)`` per batch.

    Workers decode and resize into uint8 batches; on CUDA they are pinned, copied
    non-blocking, laid out channels_last and run under bf16 autocast. Features are float32,
    (n, D) or (n, n_crops, D).
    """
    cuda = device.type == "cuda"
    loader = make_loader(images, batch_size, device=device, num_workers=num_workers)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    was_training = bb.training
    bb.eval()  # BatchNorm running statistics, no dropout / drop-connect: features must not depend on the batch
    try:
        with torch.inference_mode():
            for batch in loader:
                if batch.images.numel() == 0:
                    yield np.empty(0, dtype=np.int64), np.empty((0,), dtype=np.float32), batch.skipped
                    continue
                x = batch.images
                n = x.shape[0]
                if x.dim() == 5:  # (n, crops, 3, S, S): every crop is one network input
                    x = x.flatten(0, 1)
                x = normalize_batch(x, images.prep, device, channels_last=cuda)
                with autocast:
                    pooled = bb.extract_taps(x, taps)
                feats = torch.cat([t.float() for t in pooled], dim=1)
                if images.crops:
                    feats = feats.view(n, -1, feats.shape[1])
                yield batch.indices.numpy(), feats.cpu().numpy(), batch.skipped
    finally:
        bb.train(was_training)


@dataclass
class FeatureBank:
    """Raw features of every image a sweep needs, rows in sorted dataset-index order."""

    indices: np.ndarray
    features: np.ndarray
    available: np.ndarray  # False for images skipped as unreadable

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features, indices) of the available images among ``idx``."""
        rows = np.searchsorted(self.indices, idx)
        rows = rows[self.available[rows]]
        return self.features[rows], self.indices[rows]

    @property
    def n_features(self) -> int:
        return int(self.features.shape[-1])


@dataclass
class ExtractionCost:
    """Per-image extraction cost: what one more image costs, and where that figure came from."""

    seconds_per_image: float
    kwh_per_image: float | None
    energy_method: str
    carbon_intensity_g_per_kwh: float | None
    basis: str


@dataclass
class ExtractionStats:
    needed: int
    hits: int
    extracted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    cost: ExtractionCost | None = None
    cache_folder: str = ""


def _device_key(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    from tlcore.devices import hardware_info

    return f"{device.type}: {hardware_info().cpu}"


def cache_identity(spec: ExperimentSpec, ds: ImageDataset, bb: Backbone, taps: Sequence[str], prep: Preprocessing,
                   device: torch.device) -> dict[str, Any]:
    """What the cached features depend on (their hash names the cache folder)."""
    weights = bb.weights_name
    if weights == "random":
        weights = f"random (seed {spec.seed})"
    elif Path(weights).is_file():
        st = os.stat(weights)
        weights = f"{weights} ({st.st_size} bytes, mtime {st.st_mtime_ns})"
    crops = "none"
    if spec.precomputed_crops:
        crops = f"precomputed: {Path(spec.precomputed_crops).expanduser().resolve()}"
    elif spec.use_crops:
        crops = "ten"
    return {
        "dataset": split_class_filter(ds.name)[0],  # class filters share their base dataset's entries
        "backbone": spec.backbone,
        "weights": weights,
        "taps": list(taps),
        "crops": crops,
        "resolution": prep.input_size,
        "normalization": [list(prep.mean), list(prep.std)],
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
    }


class Extractor:
    """Fills a :class:`FeatureBank` from the cache and the backbone, measuring per-image cost."""

    def __init__(self, spec: ExperimentSpec, ds: ImageDataset, bb: Backbone, taps: Sequence[str],
                 prep: Preprocessing, device: torch.device, cache: FeatureCache | None, energy: EnergySettings,
                 flops_per_input: int) -> None:
        self.spec, self.ds, self.bb, self.taps, self.prep = spec, ds, bb, tuple(taps), prep
        self.device, self.cache, self.energy = device, cache, energy
        self.flops_per_input = flops_per_input
        self.n_crops = 10 if spec.use_crops else 1
        self._needed: np.ndarray | None = None
        self._keys: list[str] = []
        self._fps: list[str] = []
        self._hit = np.zeros(0, dtype=bool)

    def _batches(self, indices: np.ndarray) -> ImageBatches:
        return ImageBatches(self.ds, indices, self.prep, crops=self.spec.use_crops,
                            precomputed_crops=self.spec.precomputed_crops, skip_bad=self.spec.skip_bad_images)

    def prepare(self, needed: np.ndarray) -> np.ndarray:
        """Look ``needed`` up in the cache (keys and fingerprints); returns the sorted indices."""
        needed = np.unique(needed)
        source = self.ds.source
        self._needed = needed
        self._keys = [source.key(int(i)) for i in needed]
        self._fps = [source.fingerprint(int(i)) for i in needed]
        self._hit = (self.cache.lookup(self._keys, self._fps) if self.cache is not None
                     else np.zeros(len(needed), dtype=bool))
        self._batches(needed[:1])  # a crops folder that is missing or unusable is refused now, before any run
        return needed

    @property
    def misses(self) -> int:
        return int((~self._hit).sum())

    def run(self, needed: np.ndarray, reporter: Reporter, sweep_meter: CostMeter | None = None
            ) -> tuple[FeatureBank, ExtractionStats]:
        """Features of ``needed``: cache hits read, misses extracted in batches (and cached)."""
        if self._needed is None or not np.array_equal(self._needed, np.unique(needed)):
            self.prepare(needed)
        needed, keys, fps, hit = self._needed, self._keys, self._fps, self._hit
        stats = ExtractionStats(len(needed), int(hit.sum()),
                                cache_folder=str(self.cache.folder) if self.cache is not None else "")
        features: np.ndarray | None = None
        available = hit.copy()
        if hit.any():
            cached = self.cache.read([k for k, h in zip(keys, hit, strict=True) if h])
            features = np.empty((len(needed), *cached.shape[1:]), dtype=np.float32)
            features[hit] = cached
        misses = needed[~hit]
        stage = f"Extracting features of {len(misses)} images"
        if stats.hits:
            stage += f" ({stats.hits} from the cache)"
        reporter.update(stage=stage, fraction=0.0)
        if len(misses):
            writer = self.cache.writer() if self.cache is not None else nullcontext()
            with CostMeter(self.device, self.energy) as meter, writer as w:
                done = 0
                for idx, feats, skipped in iter_features(self.bb, self._batches(misses), self.taps, self.device,
                                                         self.spec.batch_size, self.spec.num_workers):
                    if len(idx):
                        rows = np.searchsorted(needed, idx)
                        if features is None:
                            features = np.empty((len(needed), *feats.shape[1:]), dtype=np.float32)
                        features[rows] = feats
                        available[rows] = True
                        if w is not None:
                            w.add([keys[r] for r in rows], [fps[r] for r in rows], feats)
                        inputs = len(idx) * self.n_crops
                        meter.add_images(inputs)
                        meter.add_flops(inputs * self.flops_per_input)
                        if sweep_meter is not None:
                            sweep_meter.add_images(inputs)
                            sweep_meter.add_flops(inputs * self.flops_per_input)
                    stats.extracted += len(idx)
                    stats.skipped += len(skipped)
                    done += len(idx) + len(skipped)
                    reporter.update(stage=f"Extracting features: {done}/{len(misses)} images",
                                    fraction=done / len(misses))
                    reporter.check_cancelled()
            report = meter.report
            stats.seconds = report.time_total_s
            if stats.extracted:
                stats.cost = self._remember_cost(ExtractionCost(
                    report.time_total_s / stats.extracted,
                    None if report.energy_kwh is None else report.energy_kwh / stats.extracted,
                    report.energy_method, report.carbon_intensity_g_per_kwh,
                    f"measured in this sweep over {stats.extracted} images"), stats.extracted)
        if features is None or not available.any():
            raise DatasetError(f"No image of {self.ds.name} could be read ({stats.skipped} skipped as unreadable); "
                               "check the dataset files.")
        if stats.cost is None:
            stats.cost = self._known_cost(needed, reporter)
        return FeatureBank(needed, features, available), stats

    # -- per-image cost when the cache served (almost) everything ---------------------------------
    def _remember_cost(self, cost: ExtractionCost, n: int) -> ExtractionCost:
        """Store a fresh measurement, unless an earlier one over many more images is the better estimate
        (a handful of changed images mostly measures the DataLoader's start-up); returns the one to use."""
        if self.cache is None:
            return cost
        key = _device_key(self.device)
        previous = self.cache.extraction_cost(key)
        if previous and previous.get("images", 0) > n and n < 2 * self.spec.batch_size:
            return self._stored_cost(previous)
        self.cache.record_extraction_cost(key, {
            "seconds_per_image": cost.seconds_per_image, "kwh_per_image": cost.kwh_per_image,
            "energy_method": cost.energy_method, "carbon_intensity_g_per_kwh": cost.carbon_intensity_g_per_kwh,
            "images": n, "batch_size": self.spec.batch_size})
        return cost

    @staticmethod
    def _stored_cost(known: dict[str, Any]) -> ExtractionCost:
        return ExtractionCost(known["seconds_per_image"], known.get("kwh_per_image"), known["energy_method"],
                              known.get("carbon_intensity_g_per_kwh"),
                              f"measured earlier on this device over {known['images']} images (feature cache)")

    def _known_cost(self, needed: np.ndarray, reporter: Reporter) -> ExtractionCost:
        key = _device_key(self.device)
        known = self.cache.extraction_cost(key) if self.cache is not None else None
        if known:
            return self._stored_cost(known)
        # Everything came from a cache filled on another device: time one batch here.
        sample = needed[: min(len(needed), self.spec.batch_size)]
        reporter.update(stage=f"Timing feature extraction on {len(sample)} images (features were cached)")
        n = 0
        with CostMeter(self.device, self.energy) as meter:
            for idx, _, _ in iter_features(self.bb, self._batches(sample), self.taps, self.device,
                                           self.spec.batch_size, 0):
                n += len(idx)
        r = meter.report
        n = max(n, 1)
        cost = ExtractionCost(r.time_total_s / n, None if r.energy_kwh is None else r.energy_kwh / n,
                              r.energy_method, r.carbon_intensity_g_per_kwh,
                              f"timed on {n} images (features came from the cache)")
        return self._remember_cost(cost, n)


# ---------------------------------------------------------------------------------------------
# One point of the curve


@dataclass
class PointOutcome:
    point: SplitPoint
    run_id: str
    metrics: dict[str, float]
    converged: bool = True

    @property
    def accuracy(self) -> float:
        return self.metrics[f"{self.point.eval_set}_accuracy"]


def fit_point(point: SplitPoint, bank: FeatureBank, ds: ImageDataset, params: FeatureExtractionParams,
              seed: int, device: torch.device, energy: EnergySettings, cost: ExtractionCost,
              flops_per_input: int, n_crops: int) -> tuple[dict[str, float], dict[str, Any], bool]:
    """Post-process, fit and score one point; returns (metrics, params, converged).

    The cost metrics are what this point alone would cost: its images x the per-image
    extraction cost, plus its own measured post-processing and classifier time and energy.
    """
    x_train, train_idx = bank.take(point.train)
    x_eval, eval_idx = bank.take(point.eval)
    y_train, y_eval = ds.labels[train_idx], ds.labels[eval_idx]
    if len(np.unique(y_train)) < 2:
        raise DatasetError(f"After skipping unreadable images the training split {point.label} of {ds.name} holds "
                           f"{len(np.unique(y_train))} class; a classifier needs at least two.")
    if len(y_eval) == 0:
        raise DatasetError(f"After skipping unreadable images the {point.eval_set} set of {ds.name} is empty.")
    with CostMeter(device, energy) as meter:
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
    if cost.kwh_per_image is not None and r.energy_kwh is not None:
        energy_kwh = n_images * cost.kwh_per_image + r.energy_kwh
        intensity = r.carbon_intensity_g_per_kwh or cost.carbon_intensity_g_per_kwh
        metrics["energy_kwh"] = energy_kwh
        if intensity is not None:
            metrics["co2_kg"] = energy_kwh * intensity / 1000.0
            metrics["carbon_intensity_g_per_kwh"] = intensity
    run_params = {
        "energy_method": cost.energy_method,
        "cost_basis": f"standalone: {n_images} images x extraction cost per image ({cost.basis}) + this run's "
                      "measured post-processing and classifier fit",
        "classifier_converged": fit.converged,
    }
    return metrics, run_params, fit.converged


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


class _TapForward(torch.nn.Module):
    """The truncated forward extraction runs, for counting its FLOPs."""

    def __init__(self, bb: Backbone, taps: Sequence[str]) -> None:
        super().__init__()
        self.bb, self.taps = bb, tuple(taps)
        self.train(bb.training)  # count_flops restores this mode afterwards: it must be the backbone's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.bb.extract_taps(x, self.taps), dim=1)


_TAP_FLOPS: dict[tuple[str, tuple[str, ...], int], int] = {}


def tap_flops_per_input(bb: Backbone, taps: Sequence[str], input_size: int) -> int:
    """FLOPs of the forward up to the last tap for one input, counted once per (backbone, taps, size)."""
    key = (bb.cfg.name, tuple(taps), int(input_size))
    if key not in _TAP_FLOPS:
        # batch 2: counting runs in train mode, where BatchNorm refuses a 1x1 map of one image (small inputs)
        _TAP_FLOPS[key] = count_flops(_TapForward(bb, taps), input_size, batch=2).forward
    return _TAP_FLOPS[key]


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
    ctx = _PointContext(ds, params, spec.seed, device, energy, flops_per_input, n_crops, len(points))
    outcomes: list[PointOutcome] = []
    stats: ExtractionStats | None = None
    with Sweep(sweep_spec, tracker, reporter, len(points), run_params) as sweep:
        meter = CostMeter(device, energy).start()  # what the whole sweep really costs
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
            if sweep.parent is not None:
                _log_parent(sweep.parent, report, stats, outcomes)
    return _result(spec, ds, sel, bank, stats, report, outcomes, sweep, tracker)


@dataclass(frozen=True)
class _PointContext:
    ds: ImageDataset
    params: FeatureExtractionParams
    seed: int
    device: torch.device
    energy: EnergySettings
    flops_per_input: int
    n_crops: int
    n_points: int


def _run_point(ctx: _PointContext, point: SplitPoint, index: int, bank: FeatureBank, stats: ExtractionStats, run,
               reporter: Reporter, sweep_meter: CostMeter) -> PointOutcome:
    """Fit and score one point in its open run, log it, and tell the reporter (live curve)."""
    reporter.update(stage=f"{ctx.params.classifier} on {point.label} ({index + 1}/{ctx.n_points})", fraction=0.0)
    metrics, extra, converged = fit_point(point, bank, ctx.ds, ctx.params, ctx.seed, ctx.device, ctx.energy,
                                          stats.cost, ctx.flops_per_input, ctx.n_crops)
    run.log_metrics(metrics)
    run.log_params({**extra, "n_features": bank.n_features})
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
    return PointOutcome(point, run.run_id, metrics, converged)


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
