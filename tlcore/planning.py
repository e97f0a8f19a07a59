"""From the Run page's inputs to a validated spec, and what it will cost, before anything starts.

The page stays thin: it draws the fields :func:`method_fields` lists, collects the values in a
:class:`RunForm`, calls :func:`build_spec` (one :class:`~tlcore.errors.SpecError` sentence when
a value is wrong), :func:`check_dataset` as the user types a path, and :func:`estimate_cost`
for the FLOPs (counted on the meta device) and the time this machine took for similar runs.
Nothing here imports streamlit; the guideline page reuses the estimate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.errors import DatasetError, SpecError, TLError
from tlcore.methods.base import FormField, methods
from tlcore.specs import ExperimentSpec
from tlcore.units import format_duration


def method_fields(method: str, backbone: str | None = None) -> list[FormField]:
    """The parameters of ``method`` the Run page shows, with their defaults (the app's where it has its own)."""
    return methods.get(method).form_fields(backbone)


def default_spc_grid(method: str, gpu: bool) -> str:
    """The Run page's samples-per-class grid: the method's, or its shorter CPU grid without a GPU (fine-tuning
    trains each point for up to 40 epochs; two values keep the job to minutes on a laptop CPU)."""
    return methods.get(method).default_grid(gpu)


def coerce_value(f: FormField, raw: Any) -> Any:
    """A widget's value as the params class wants it (empty optional fields become None)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if f.optional:
            return None
        if f.kind in ("text", "layer"):
            raise SpecError(f"The '{f.label}' field must not be empty.")
        return raw
    if f.kind == "int" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if f.kind == "float" and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if f.kind == "layer":
        text = str(raw).strip()
        try:
            return int(text)
        except ValueError:
            return text
    if f.kind == "text":
        return str(raw).strip()
    if f.kind == "multichoice":
        values = tuple(raw) if isinstance(raw, list | tuple) else tuple(
            v.strip() for v in str(raw).split(",") if v.strip())
        if not values:
            if f.optional:
                return None
            raise SpecError(f"The '{f.label}' field needs at least one choice.")
        return values
    return raw


# ---------------------------------------------------------------------------------------------
# Form -> spec


def parse_spc_grid(text: str | None) -> tuple[int, ...] | None:
    """'1, 2, 5,10' -> (1, 2, 5, 10); empty -> None (the split set's own values)."""
    if text is None or not str(text).strip():
        return None
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"The 'samples per class' field must be comma-separated integers >= 1 such as 1,2,5,10. "
                        f"Got {text!r} instead.") from None
    if any(v < 1 for v in values):
        raise SpecError(f"The 'samples per class' field must hold integers >= 1. Got {text!r} instead.")
    return tuple(sorted(set(values)))


def dataset_name(base: str, class_filter: str | None = None) -> str:
    """The dataset argument the core understands: ``base`` plus ``:filter`` when one is given."""
    base = (base or "").strip()
    flt = (class_filter or "").strip().replace(" ", "")
    return f"{base}:{flt}" if flt else base


@dataclass
class RunForm:
    """What the Run page collects; :func:`build_spec` turns it into an :class:`ExperimentSpec`."""

    method: str
    dataset: str
    class_filter: str = ""
    backbone: str | None = None
    weights: str = "default"
    model_selection: bool = False
    samples_per_class: str = ""
    splits: int | None = None
    split_path: str = ""
    use_crops: bool = False
    resolution: int | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int | None = None
    data_dir: str = ""
    download: bool = False
    download_weights: bool = False
    skip_bad_images: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def build_spec(form: RunForm, tracking_uri: str | None = None) -> ExperimentSpec:
    """Validate the form as a spec; raises :class:`SpecError` with one sentence naming the field.

    ``tracking_uri`` places QUANTA's exports beside the results when the form leaves the folder at
    its default."""
    record = methods.get(form.method)
    method = record.name
    if not (form.dataset or "").strip():
        raise SpecError("Choose a dataset: an embedded one such as digits, or a folder path.")
    backbone = form.backbone or record.default_backbone
    by_name = {f.name: f for f in record.form_fields(backbone)}
    values = {}
    for name, raw in form.params.items():
        f = by_name.get(name)
        values[name] = coerce_value(f, raw) if f else raw
    seed_defaults = record.params()
    for name, value in (record.store_defaults(tracking_uri) if record.store_defaults else {}).items():
        if str(values.get(name) or "").strip() in ("", str(getattr(seed_defaults, name, ""))):
            values[name] = value  # left at the seed's value: where the app puts it
    params = record.params(**values)
    kw: dict[str, Any] = dict(
        backbone=backbone, weights=form.weights or "default", seed=int(form.seed), device=form.device or "auto",
        data_dir=form.data_dir.strip() or None, download=bool(form.download),
        download_weights=bool(form.download_weights), skip_bad_images=bool(form.skip_bad_images), params=params,
    )
    if form.resolution:
        from tlcore.models import backbone_config, backbones

        # always explicit: an unset size would follow the images (tiny ones run at 64 px), not the form
        if backbone in backbones and not backbone_config(backbone).fixed_input_size:
            kw["resolution"] = int(form.resolution)
    if form.batch_size:
        kw["batch_size"] = int(form.batch_size)
    if record.takes_samples:
        kw.update(samples_per_class=parse_spc_grid(form.samples_per_class),
                  splits=int(form.splits) if form.splits else None, split_path=form.split_path.strip() or None)
    if record.sweep:
        kw.update(model_selection=bool(form.model_selection), use_crops=bool(form.use_crops))
    if record.fixed_weights:
        kw["weights"] = record.fixed_weights
    spec = ExperimentSpec(method, dataset_name(form.dataset, form.class_filter), **kw)
    return spec.validate()


def spec_fingerprint(spec: ExperimentSpec) -> str:
    """A stable hash of everything a spec says: the client token of one 'Run' click on this spec."""
    blob = json.dumps(spec.to_dict(), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Datasets, checked as the user types


@dataclass(frozen=True)
class DatasetCheck:
    """What a dataset entry resolves to, or the one sentence saying why it does not."""

    ok: bool
    message: str
    name: str
    kind: str | None = None
    num_images: int | None = None
    num_classes: int | None = None
    classes: tuple[str, ...] = ()
    needs_download: bool = False
    native_size: int | None = None  # the longer side of a typical image, px
    sampled: int = 0  # images opened to check they can be read (folders)
    unreadable: int = 0
    unreadable_example: str = ""  # "path: reason" of the first one

    @property
    def unreadable_message(self) -> str:
        """One sentence when sampled images could not be read, else ''."""
        if not self.unreadable:
            return ""
        return (f"{self.unreadable} of {self.sampled} images opened to check {self.name} cannot be read (e.g. "
                f"{self.unreadable_example}); fix or remove them, or pass --skip-bad-images to leave them out.")


def check_dataset(name: str, data_dir: str | None = None, download: bool = False) -> DatasetCheck:
    """Resolve ``name`` (registered, folder path, with a class filter) without reading any pixels."""
    from tlcore.data import datasets, default_data_dir, load_dataset, split_class_filter
    from tlcore.data.datasets import _INFO
    from tlcore.data.splits import find_split_dir
    from tlcore.data.torchvision_sets import torchvision_files_present

    name = (name or "").strip()
    if not name:
        return DatasetCheck(False, "Choose a dataset, or type the path of a folder of images.", name)
    base, _flt = split_class_filter(name)
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if base in datasets and _INFO[base].kind == "torchvision" and not torchvision_files_present(base, folder):
        info = _INFO[base]
        if download:
            return DatasetCheck(True, f"{base} will be downloaded into {folder / base} when the run starts "
                                      "(needs network).", name, "torchvision", info.num_images, info.num_classes,
                                needs_download=True)
        return DatasetCheck(False, f"{base} is not on this machine yet (looked in {folder / base}); allow the "
                                   "download, or copy its files there.", name, "torchvision", info.num_images,
                            info.num_classes, needs_download=True)
    looks_like_path = any(c in base for c in "/\\~.") or not base.isidentifier()
    if base not in datasets and looks_like_path and not Path(base).expanduser().exists():
        return DatasetCheck(False, f"Folder {base} does not exist; type the path of a folder laid out as "
                                       "root/<split>/<label>/image.ext or root/<label>/image.ext.", name)
    try:
        ds = load_dataset(name, data_dir, download=False)
    except TLError as exc:
        return DatasetCheck(False, str(exc), name)
    counts = ds.class_counts()
    smallest = int(counts.min()) if len(counts) else 0
    parts = [f"{ds.num_classes} classes, {len(ds):,} images (smallest class: {smallest})"]
    if ds.kind == "folder":
        if ds.partition is not None:
            per = {p: int((ds.partition == p).sum()) for p in ("train", "val", "test")}
            parts.append("split folders " + ", ".join(f"{p} {n}" for p, n in per.items() if n))
        try:
            split_dir = find_split_dir(ds, None)
        except DatasetError:
            split_dir = None
        parts.append(f"split CSVs in {split_dir}" if split_dir else "splits will be generated (stratified, seeded)")
    from tlcore.data.resolution import native_image_size

    native = native_image_size(ds)
    if native is not None:
        parts.insert(1, f"images about {native} px")
    sampled, bad, example = _open_a_sample(ds) if ds.kind == "folder" else (0, 0, "")
    if sampled:
        parts.append(f"{sampled - bad} of {sampled} images opened here read fine")
    return DatasetCheck(True, "; ".join(parts) + ".", name, ds.kind, len(ds), ds.num_classes, tuple(ds.classes),
                        native_size=native, sampled=sampled, unreadable=bad, unreadable_example=example)


#: Images a folder check opens (spread over the folder): enough to catch a broken export, in well under a second.
CHECK_SAMPLE = 64


def _open_a_sample(ds) -> tuple[int, int, str]:
    """Decode up to :data:`CHECK_SAMPLE` images spread over the dataset: (opened, unreadable, first failure)."""
    import numpy as np

    from tlcore.data.images import BadImageError

    n = len(ds)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(n, CHECK_SAMPLE))}) if n else []
    bad, example = 0, ""
    for i in picks:
        try:
            ds.source.load(i)
        except (BadImageError, DatasetError) as exc:
            bad += 1
            if not example:
                example = f"{ds.source.key(i)}: {str(exc).split(': ', 1)[-1].split('. ')[0]}"
    return len(picks), bad, example


@functools.lru_cache(maxsize=1)
def _network_probe() -> bool:
    try:
        with socket.create_connection(("download.pytorch.org", 443), timeout=1.5):
            return True
    except OSError:
        return False


def network_available(refresh: bool = False) -> bool:
    """Whether downloads can work: one TCP connect, remembered (pass ``refresh`` to ask again)."""
    if refresh:
        _network_probe.cache_clear()
    return _network_probe()


# ---------------------------------------------------------------------------------------------
# Cost estimate


@dataclass(frozen=True)
class CostEstimate:
    """What a spec will cost, counted before it starts.

    ``images`` counts image passes (crops and epochs included); ``flops`` the work of those
    passes; ``seconds`` the projection from the measured pace of similar finished runs on this
    machine, None when there are none. ``upper_bound``: early stopping may end the run sooner.
    """

    runs: int
    images: int
    flops_per_image: float
    flops: float
    seconds: float | None
    basis: str
    upper_bound: bool = False
    notes: tuple[str, ...] = ()

    def describe_time(self) -> str:
        if self.seconds is None:
            return "unknown yet"
        return ("at most " if self.upper_bound else "about ") + format_duration(self.seconds)


def format_flops(flops: float) -> str:
    from tlcore.units import flops as written

    return written(flops)


def option_flops(backbone: str, num_classes: int, input_size: int | None = None) -> tuple[float, dict]:
    """FLOPs per image of feature extraction (a forward pass) and of each fine-tuning option (forward
    plus the backward of what it trains), counted on the meta device; for the guideline projection."""
    from tlcore.methods.records.fine_tuning import ft_configurations
    from tlcore.models import backbone_config
    from tlcore.models.catalog import meta_flops

    size = input_size or backbone_config(backbone).preprocessing.input_size
    fwd, _ = meta_flops(backbone, size, num_classes)
    per_option = {}
    for config in ft_configurations(backbone):
        f, b = meta_flops(backbone, size, num_classes, 0 if config == "lp-ft" else config)
        per_option[config] = float(f + b)
    return float(fwd), per_option


def device_type(device: str) -> str:
    name = (device or "auto").split(":")[0]
    if name == "auto":
        from tlcore.devices import resolve_device

        return resolve_device("auto").type
    return name


@functools.lru_cache(maxsize=16)
def _calibrated(backbone: str, dev_type: str, size: int) -> tuple[float, float, str]:
    """This machine's FLOP rates for a forward pass and a training step, measured once per process."""
    from tlcore.speed import calibrate_speed

    speed = calibrate_speed(backbone, dev_type, input_size=size, repeats=2)
    return speed.flops_per_s_fe, speed.flops_per_s_ft, speed.how.split(":")[0]


#: A job projected to take longer than this asks the user to confirm (the Run page shows the projection).
CONFIRM_ABOVE_S = 600.0


def estimate_cost(spec: ExperimentSpec, tracker=None, calibrate: bool = False) -> CostEstimate | None:
    """Images x FLOPs per image, and a time from this machine's pace on similar finished runs.

    Loads the dataset and plans the splits exactly as the method will, so a samples-per-class
    value a class cannot supply fails here, before any run is opened. The FLOPs of FE assume
    each image is extracted once per job (features are reused across the curve). With
    ``calibrate``, a machine that has no finished job of this kind yet times a forward pass and a
    training step (a few seconds, once per process) so the projection is never blank. None for a method
    whose record has no ``estimate``.
    """
    from tlcore.experiments import resolve_defaults

    spec = resolve_defaults(spec.validate())
    record = methods.get(spec.method)
    if record.estimate is None:
        return None  # a method without a cost model: nothing to project, nothing to block
    work = record.estimate(spec)
    runs, images, flops, size = work.runs, work.images, work.flops, spec.input_size
    seconds, basis = None, ""
    dev_type = device_type(spec.device)
    if tracker is not None:
        from tlcore.pace import JobRecord, fitted_pace

        try:
            model, machine = fitted_pace(tracker, dev_type)
            if model is not None and spec.method in model.method_flops:
                rate = machine(JobRecord(spec.method, 0.0, flops, images, runs, spec.backbone, str(size or "")))
                seconds, basis = model.project(spec.method, flops, images, runs, rate), model.basis(spec.method,
                                                                                                   dev_type)
        except Exception as exc:  # an unreadable store should not hide the FLOP count
            basis = f"the results store could not be read ({type(exc).__name__})"
    if seconds is None and calibrate:
        try:
            rate_fe, rate_ft, how = _calibrated(spec.backbone, dev_type, size)
        except Exception:  # a pace we cannot measure: the time stays unknown
            pass
        else:
            seconds = flops / (rate_fe if record.pace == "forward" else rate_ft)
            basis = (f"no finished {record.noun} job of {spec.backbone} on {dev_type} here yet, so "
                     f"from a pace {how}; loading data and models comes on top")
    if seconds is None and not basis:
        basis = (f"no finished {record.noun} run of {spec.backbone} on {dev_type} on this "
                 "machine yet; the first one will calibrate the estimate")
    return CostEstimate(runs=runs, images=int(images), flops_per_image=work.flops_per_image, flops=float(flops),
                        seconds=seconds, basis=basis, upper_bound=work.upper_bound, notes=work.notes)
