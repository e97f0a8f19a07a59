"""Extraction: run a backbone over images and collect its tap activations, through the feature cache.

Activations at the taps (spatially averaged conv maps) are concatenated into one row per image
(or per crop). :class:`Extractor` reads what the :class:`~tlcore.features.cache.FeatureCache`
already holds, extracts the rest in batches (caching them as it goes) and measures what one more
image costs, so a method that needs features for many points pays for each image once and can
still say what any one point alone would have cost. Below the methods: any method (feature
extraction, ranking backbones, probing layers) can use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.data import ImageDataset, split_class_filter
from tlcore.data.loading import ImageBatches, Preprocessing, make_loader, normalize_batch
from tlcore.errors import DatasetError
from tlcore.features.cache import FeatureCache
from tlcore.measure import CostMeter, EnergySettings, count_flops
from tlcore.models import Backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec

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
    energy_kwh: float | None = None  # what extracting the misses used in this sweep (None: not measured)
    cost: ExtractionCost | None = None
    cache_folder: str = ""


def device_key(device: torch.device) -> str:
    """The device a stored per-image extraction cost was measured on (a cost is only reused there)."""
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


def cost_record(cost: ExtractionCost, images: int, batch_size: int, note: str = "") -> dict[str, Any]:
    """What the feature cache keeps of a measured per-image cost (``FeatureCache.record_extraction_cost``);
    :func:`stored_cost` reads it back."""
    record = {"seconds_per_image": cost.seconds_per_image, "kwh_per_image": cost.kwh_per_image,
              "energy_method": cost.energy_method, "carbon_intensity_g_per_kwh": cost.carbon_intensity_g_per_kwh,
              "images": images, "batch_size": batch_size}
    return {**record, "note": note} if note else record


def stored_cost(known: dict[str, Any]) -> ExtractionCost:
    """A per-image cost the feature cache recorded (``FeatureCache.extraction_cost``)."""
    note = f"; {known['note']}" if known.get("note") else ""
    return ExtractionCost(known["seconds_per_image"], known.get("kwh_per_image"), known["energy_method"],
                          known.get("carbon_intensity_g_per_kwh"),
                          f"measured earlier on this device over {known['images']} images (feature cache{note})")


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
        """Features of ``needed``: cache hits read, misses extracted in batches (and cached).

        With ``sweep_meter`` the extraction's energy is read off the sweep's tracker (one CodeCarbon start
        per sweep); without it, the extraction starts its own.
        """
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
            with self._meter(sweep_meter) as meter, writer as w:
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
            stats.energy_kwh = report.energy_kwh
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
            stats.cost = self._known_cost(needed, reporter, sweep_meter)
        return FeatureBank(needed, features, available), stats

    def _meter(self, sweep_meter: CostMeter | None) -> CostMeter:
        return sweep_meter.part() if sweep_meter is not None else CostMeter(self.device, self.energy)

    # -- per-image cost when the cache served (almost) everything ---------------------------------
    def _remember_cost(self, cost: ExtractionCost, n: int) -> ExtractionCost:
        """Store a fresh measurement, unless an earlier one over many more images is the better estimate
        (a handful of changed images mostly measures the DataLoader's start-up); returns the one to use."""
        if self.cache is None:
            return cost
        key = device_key(self.device)
        previous = self.cache.extraction_cost(key)
        if previous and previous.get("images", 0) > n and n < 2 * self.spec.batch_size:
            return self._stored_cost(previous)
        self.cache.record_extraction_cost(key, cost_record(cost, n, self.spec.batch_size))
        return cost

    @staticmethod
    def _stored_cost(known: dict[str, Any]) -> ExtractionCost:
        return stored_cost(known)

    def _known_cost(self, needed: np.ndarray, reporter: Reporter, sweep_meter: CostMeter | None = None
                    ) -> ExtractionCost:
        key = device_key(self.device)
        known = self.cache.extraction_cost(key) if self.cache is not None else None
        if known:
            return self._stored_cost(known)
        # Everything came from a cache filled on another device: time one batch here.
        sample = needed[: min(len(needed), self.spec.batch_size)]
        reporter.update(stage=f"Timing feature extraction on {len(sample)} images (features were cached)")
        n = 0
        with self._meter(sweep_meter) as meter:
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
# FLOPs of the truncated forward


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
