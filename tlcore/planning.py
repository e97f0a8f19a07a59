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
from tlcore.jobs import format_duration
from tlcore.specs import PARAMS_BY_METHOD, ExperimentSpec

METHOD_LABELS = {
    "fe": "Feature extraction",
    "ft": "Fine-tuning",
    "quanta": "QUANTA (per-layer transferability)",
    "source": "Train a source network",
}
METHOD_BLURBS = {
    "fe": "Activations of many layers, standardised and discretised, then a linear classifier. Cheap: each "
          "image goes through the network once for a whole few-shot curve.",
    "ft": "A new head on the pretrained network, trained with 0-3 quarters of the network frozen (or LP-FT). "
          "Costs a forward and a backward pass per image and epoch.",
    "quanta": "A frozen source and a fresh target network mixed layer by layer; lambda_S says how much each layer "
              "of the target wants the source's features.",
    "source": "Train a network from scratch (QUANTA's source), e.g. on digits:0-4 before transferring to digits:5-9.",
}
METHOD_NOUNS = {"fe": "feature extraction", "ft": "fine-tuning", "quanta": "QUANTA", "source": "source training"}
DEFAULT_BACKBONE = {"fe": "efficientnet_lite0", "ft": "efficientnet_lite0", "quanta": "quanta_cnn",
                    "source": "quanta_cnn"}
FALLBACK_CLASSIFIERS = ("linearsvc", "svc", "sgd", "knn", "logreg", "xgboost", "linear")
CROPS_PER_IMAGE = 10


# ---------------------------------------------------------------------------------------------
# Form fields of each method


@dataclass(frozen=True)
class FormField:
    """One parameter of a method's params class as the page draws it.

    ``kind``: choice, int, float, bool, text or layer (an index or a tap name). ``optional``:
    empty means None. ``option_labels`` name the choices for people.
    """

    name: str
    label: str
    kind: str
    help: str = ""
    advanced: bool = False
    options: tuple = ()
    option_labels: tuple[str, ...] = ()
    minimum: float | None = None
    optional: bool = False
    default: Any = None

    def label_of(self, value: Any) -> str:
        if self.option_labels and value in self.options:
            return self.option_labels[self.options.index(value)]
        return str(value)


def classifier_names() -> tuple[str, ...]:
    """The FE classifier registry's names once the FE method is installed, else the CLI's list."""
    try:
        from tlcore.methods.classifiers import classifiers  # type: ignore[import-not-found]
    except ImportError:
        return FALLBACK_CLASSIFIERS
    return tuple(classifiers.names()) or FALLBACK_CLASSIFIERS


@functools.lru_cache(maxsize=32)
def ft_configurations(backbone: str) -> tuple:
    """The freezing configurations a backbone defines, plus LP-FT."""
    from tlcore.models.catalog import meta_backbone

    try:
        return (*meta_backbone(backbone).configurations(), "lp-ft")
    except Exception:
        return (0, 1, 2, 3, "lp-ft")


def description_choices(backbone: str) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """Shipped model descriptions of a backbone: (names, labels); None = every tap."""
    from tlcore.models.descriptions import DESCRIPTIONS_DIR, PERCENTS

    names: list[str | None] = [None]
    labels = ["every tap (100%)"]
    for pct in PERCENTS:
        if pct != 100 and (DESCRIPTIONS_DIR / f"{backbone}_{pct}.json").is_file():
            names.append(f"{backbone}_{pct}")
            labels.append(f"{pct}% of the taps ({backbone}_{pct})")
    return tuple(names), tuple(labels)


#: Where the app's defaults differ from the params classes' (which keep the seeds' values for the CLI), and why.
#: QUANTA: the seed's 1 epoch at lr 2e-4 moves lambda_S by ~0.0002 on the embedded tasks (0.90025 -> 0.9004), so
#: nothing separates a trained source from the control; measured on digits 0-4 -> 5-9 (docs/evidence.md), 6 target
#: epochs with the QUANTA weights at lr 0.05 and 40 images per class separate them at layer 0.
APP_DEFAULTS: dict[str, dict[str, Any]] = {
    "quanta": {"nb_of_target_epochs": 6, "quanta_lr": 0.05, "nb_of_target_samples": 40},
}
APP_DEFAULT_NOTES = {
    "quanta": "The app's defaults differ from the seed's (1 target epoch at lr 2e-4, which leaves lambda_S at "
              "0.900 on small tasks): 6 epochs, the QUANTA weights at lr 0.05, 40 images per class. The command "
              "line keeps the seed's values.",
}


def default_spc_grid(method: str, gpu: bool) -> str:
    """The Run page's samples-per-class grid: the full small grid, except fine-tuning without a GPU, where each
    point trains for up to 40 epochs and two values keep the job to minutes on a laptop CPU."""
    return "2,10" if method == "ft" and not gpu else "1,2,5,10"


def quanta_layer_choices(backbone: str) -> tuple[tuple, tuple[str, ...]]:
    """The layers QUANTA can mix on ``backbone``: -1 (every layer at once) and each one, in network order."""
    from tlcore.models import backbone_config
    from tlcore.models.quanta_layer import quanta_points

    try:
        points = quanta_points(backbone_config(backbone))
    except Exception:
        return (-1,), ("every layer at once",)
    options = (-1, *(p.index if p.key == str(p.index) else p.key for p in points))
    labels = (f"every layer at once ({len(points)})",
              *(f"{p.key}: {p.module}" if p.key == str(p.index) else p.key for p in points))
    return options, labels


def method_fields(method: str, backbone: str | None = None) -> list[FormField]:
    """The parameters of ``method`` the Run page shows, with the params class's defaults."""
    if method not in PARAMS_BY_METHOD:
        raise SpecError(f"Unknown method {method!r}; choose one of {', '.join(PARAMS_BY_METHOD)}.")
    backbone = backbone or DEFAULT_BACKBONE[method]
    defaults = PARAMS_BY_METHOD[method]()
    F = FormField
    if method == "fe":
        names, labels = description_choices(backbone)
        fields = [
            F("classifier", "Classifier", "choice", "Trained on the embedding of each training image (or crop).",
              options=classifier_names()),
            F("model_description", "Layers (model description)", "choice",
              "Which taps feed the embedding: all of them, or an evenly spaced share (the seed's 75/50/25 % files).",
              options=names, option_labels=labels),
            F("standardize", "Standardisation statistics", "choice", "Training-set statistics for every set (FNE), "
              "or each set its own (reproduces the seed).", advanced=True, options=("train", "per_set"),
              option_labels=("training set (FNE)", "each set its own (the seed)")),
            F("discretize", "Discretise to {-1, 0, 1}", "bool", "The FNE post-processing.", advanced=True),
            F("threshold_high", "Upper threshold", "float", "Standardised values above it become 1.",
              advanced=True, minimum=0.0),
            F("threshold_low", "Lower threshold", "float", "Standardised values below it become -1.",
              advanced=True),
            F("cache", "Reuse extracted features", "bool", "Extract each image once per dataset, backbone, layers, "
              "crops and resolution, and reuse the features across runs.", advanced=True),
            F("cache_dir", "Feature cache folder", "text", "Empty: beside the results.", advanced=True,
              optional=True),
        ]
    elif method == "ft":
        confs = ft_configurations(backbone)
        conf_labels = {0: "0: train everything", 1: "1: freeze about a quarter", 2: "2: freeze about half",
                       3: "3: freeze about three quarters", "lp-ft": "LP-FT: linear probe, then fine-tune all"}
        fields = [
            F("configuration", "Freezing configuration", "choice", "How much of the network, from the input, "
              "stays frozen.", options=confs, option_labels=tuple(conf_labels.get(c, str(c)) for c in confs)),
            F("optimizer", "Optimizer", "choice", "SGD with momentum and decoupled weight decay (the seed), or Adam.",
              options=("sgd", "adam", "adamw")),
            F("learning_rate", "Learning rate", "float", minimum=1e-8),
            F("epochs", "Epochs (at most)", "int", "Early stopping may end sooner.", minimum=1),
            F("patience", "Early-stopping patience", "int", "Epochs without a lower val loss before stopping.",
              advanced=True, minimum=1),
            F("early_stop_from_epoch", "Early stopping from epoch", "int", "The seed: from the 11th.",
              advanced=True, minimum=1),
            F("weight_decay", "Weight decay", "float", advanced=True, minimum=0.0),
            F("momentum", "Momentum", "float", advanced=True, minimum=0.0),
            F("grad_clip_norm", "Gradient-norm clipping", "float", advanced=True, minimum=1e-8),
            F("bn_trainable", "BatchNorm trainable in frozen layers", "bool", "The seed kept it trainable.",
              advanced=True),
            F("lp_epochs", "LP-FT: linear-probe epochs", "int", advanced=True, minimum=1),
            F("amp", "Mixed precision on GPU", "bool", "bf16 autocast; ignored on CPU.", advanced=True),
            F("resume", "Resume run id", "text", "Continue a killed fine-tuning run from its last epoch.",
              advanced=True, optional=True),
        ]
    elif method == "quanta":
        layer_options, layer_labels = quanta_layer_choices(backbone)
        fields = [
            F("source_weights", "Source weights", "text", "'default' (the backbone's pretrained weights), 'random' "
              "(the control), a weights file, or the run id of a finished source training."),
            F("layer_to_transfer", "Layer to transfer", "choice", "Every layer at once (one QUANTA pair each, "
              "trained together), or one layer of the backbone.", options=layer_options,
              option_labels=layer_labels),
            F("nb_of_target_samples", "Training samples per class", "int", "Empty: every training image.",
              minimum=1, optional=True),
            F("nb_of_target_epochs", "Target epochs", "int", minimum=1),
            F("nb_of_runs", "Runs (seeds)", "int", "Each run is seeded with seed + run index.", minimum=1),
            F("learning_rate", "Learning rate", "float", advanced=True, minimum=1e-8),
            F("quanta_lr", "QUANTA weights' learning rate", "float", "Empty: the same as the network's.",
              advanced=True, minimum=1e-8, optional=True),
            F("augment_data", "Augment data", "bool", advanced=True),
            F("source_task", "Source task (for the record)", "text", advanced=True, optional=True),
            F("outdir", "Export folder for the seed's files", "text", advanced=True),
            F("train_from_previous_training", "Resume from a checkpoint file", "text", advanced=True, optional=True),
            F("keep_weights", "Keep the target checkpoint in the run", "bool", "Also store each run's target "
              "checkpoint in MLflow (models/); it always stays in the export folder, where a resume reads it.",
              advanced=True),
        ]
    else:
        fields = [
            F("epochs", "Epochs", "int", minimum=1),
            F("learning_rate", "Learning rate", "float", minimum=1e-8),
            F("augment_data", "Augment data", "bool", advanced=True),
            F("out", "Also write the weights to", "text", "A file path; the weights are an MLflow artifact anyway.",
              advanced=True, optional=True),
        ]
    out = []
    app_defaults = APP_DEFAULTS.get(method, {})
    for f in fields:
        if not hasattr(defaults, f.name):
            continue  # a field this version of the params class does not have
        default = app_defaults.get(f.name, getattr(defaults, f.name))
        if f.kind == "choice" and default not in f.options and f.options:
            default = f.options[0]
        out.append(FormField(**{**f.__dict__, "default": default}))
    return out


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


def default_export_dir(tracking_uri: str | None) -> str:
    """Where the app puts QUANTA's seed-format exports: beside a local store (``<folder>/quanta_exports``),
    else in the user's cache; never the server's working directory (the CLI keeps the seed's ``./expe``)."""
    from tlcore.tracking import sqlite_path

    path = sqlite_path(tracking_uri) if tracking_uri else None
    if path is not None and ":memory:" not in tracking_uri:
        return str(path.parent / "quanta_exports")
    return str(Path.home() / ".cache" / "tlcore" / "quanta_exports")


def build_spec(form: RunForm, tracking_uri: str | None = None) -> ExperimentSpec:
    """Validate the form as a spec; raises :class:`SpecError` with one sentence naming the field.

    ``tracking_uri`` places QUANTA's exports beside the results when the form leaves the folder at
    its default."""
    method = form.method
    if method not in PARAMS_BY_METHOD:
        raise SpecError(f"Unknown method {method!r}; choose one of {', '.join(PARAMS_BY_METHOD)}.")
    if not (form.dataset or "").strip():
        raise SpecError("Choose a dataset: an embedded one such as digits, or a folder path.")
    backbone = form.backbone or DEFAULT_BACKBONE[method]
    by_name = {f.name: f for f in method_fields(method, backbone)}
    values = {}
    for name, raw in form.params.items():
        f = by_name.get(name)
        values[name] = coerce_value(f, raw) if f else raw
    if method == "quanta" and str(values.get("outdir") or "").strip() in ("", PARAMS_BY_METHOD[method]().outdir):
        values["outdir"] = default_export_dir(tracking_uri)
    params = PARAMS_BY_METHOD[method](**values)
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
    if method in ("fe", "ft"):
        kw.update(model_selection=bool(form.model_selection), samples_per_class=parse_spc_grid(form.samples_per_class),
                  splits=int(form.splits) if form.splits else None, split_path=form.split_path.strip() or None,
                  use_crops=bool(form.use_crops))
    if method == "source":
        kw["weights"] = "random"
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


@functools.lru_cache(maxsize=64)
def _flops(backbone: str, input_size: int, num_classes: int, configuration: int | str | None = None,
           bn_trainable: bool = False) -> tuple[int, int]:
    """(forward, backward) FLOPs per image; backward for the trainable set of ``configuration``."""
    import torch

    from tlcore.measure.flops import count_flops
    from tlcore.models.catalog import meta_backbone

    bb = meta_backbone(backbone)
    with torch.device("meta"):
        bb.reset_classifier(num_classes)
    # batch 2: counted in train mode, BatchNorm refuses one value per channel (1x1 maps at small sizes)
    if configuration is None:
        return count_flops(bb, input_size, batch=2).forward, 0
    if configuration == "lp-ft":  # the probe phase: only the head trains
        head = bb.head_parameter_names()
        for name, p in bb.named_parameters():
            p.requires_grad_(name in head)
    else:
        bb.apply_freezing(int(configuration), bn_trainable)
    count = count_flops(bb, input_size, train=True, batch=2)
    return count.forward, count.backward


def option_flops(backbone: str, num_classes: int, input_size: int | None = None) -> tuple[float, dict]:
    """FLOPs per image of feature extraction (a forward pass) and of each fine-tuning option (forward
    plus the backward of what it trains), counted on the meta device; for the guideline projection."""
    from tlcore.models import backbone_config

    size = input_size or backbone_config(backbone).preprocessing.input_size
    fwd, _ = _flops(backbone, size, num_classes)
    per_option = {}
    for config in ft_configurations(backbone):
        f, b = _flops(backbone, size, num_classes, 0 if config == "lp-ft" else config)
        per_option[config] = float(f + b)
    return float(fwd), per_option


def device_type(device: str) -> str:
    name = (device or "auto").split(":")[0]
    if name == "auto":
        from tlcore.devices import resolve_device

        return resolve_device("auto").type
    return name


def _train_test_sizes(ds, per_class: int | None) -> tuple[int, int]:
    """QUANTA and source training: the train partition (or 70 %) and the rest, as their methods split."""
    n = len(ds)
    if ds.partition is not None and (ds.partition == "train").any():
        n_train = int((ds.partition == "train").sum())
    else:
        n_train = round(n * 0.7)
    n_test = n - n_train
    if ds.partition is not None and (ds.partition == "test").any():
        n_test = int((ds.partition == "test").sum())
    if per_class:
        n_train = min(n_train, per_class * ds.num_classes)
    return n_train, n_test


@functools.lru_cache(maxsize=16)
def _calibrated(backbone: str, dev_type: str, size: int) -> tuple[float, float, str]:
    """This machine's FLOP rates for a forward pass and a training step, measured once per process."""
    from tlcore.evidence import calibrate_speed

    speed = calibrate_speed(backbone, dev_type, input_size=size, repeats=2)
    return speed.flops_per_s_fe, speed.flops_per_s_ft, speed.how.split(":")[0]


#: A job projected to take longer than this asks the user to confirm (the Run page shows the projection).
CONFIRM_ABOVE_S = 600.0


def estimate_cost(spec: ExperimentSpec, tracker=None, calibrate: bool = False) -> CostEstimate:
    """Images x FLOPs per image, and a time from this machine's pace on similar finished runs.

    Loads the dataset and plans the splits exactly as the method will, so a samples-per-class
    value a class cannot supply fails here, before any run is opened. The FLOPs of FE assume
    each image is extracted once per job (features are reused across the curve). With
    ``calibrate``, a machine that has no finished job of this kind yet times a forward pass and a
    training step (a few seconds, once per process) so the projection is never blank.
    """
    from tlcore.experiments import resolve_defaults

    spec = resolve_defaults(spec.validate())
    size = spec.input_size
    notes: list[str] = []
    upper = False
    if spec.method in ("fe", "ft"):
        from tlcore.methods.common import load_data, plan_points

        ds, splits = load_data(spec)
        points = plan_points(spec, ds, splits)
        crops = CROPS_PER_IMAGE if spec.use_crops else 1
        fwd, _ = _flops(spec.backbone, size, ds.num_classes)
        runs = len(points) + (1 if len(points) > 1 else 0)
        if spec.method == "fe":
            import numpy as np

            used = np.unique(np.concatenate([np.concatenate([p.train, p.eval]) for p in points]))
            images = len(used) * crops
            flops = float(images) * fwd
            notes.append(f"{len(points)} classifier fit{'s' if len(points) > 1 else ''} on features extracted once "
                         f"from {len(used):,} images" + (" x 10 crops" if crops > 1 else "") + ".")
        else:
            p = spec.params
            conf = p.configuration
            epochs = p.epochs
            images, flops = 0, 0.0
            f_all, b_all = _flops(spec.backbone, size, ds.num_classes, 0 if conf == "lp-ft" else conf, p.bn_trainable)
            f_lp, b_lp = _flops(spec.backbone, size, ds.num_classes, "lp-ft") if conf == "lp-ft" else (0, 0)
            for pt in points:
                n_train, n_val, n_eval = len(pt.train) * crops, len(pt.val), len(pt.eval) * crops
                full_epochs = epochs
                if conf == "lp-ft":  # the probe's epochs are the first of the run's epochs, not extra ones
                    full_epochs -= p.lp_epochs
                    images += p.lp_epochs * (n_train + n_val)
                    flops += p.lp_epochs * (n_train * (f_lp + b_lp) + n_val * fwd)
                images += full_epochs * (n_train + n_val) + n_eval
                flops += full_epochs * (n_train * (f_all + b_all) + n_val * fwd) + n_eval * fwd
            upper = True
            notes.append(f"{len(points)} training{'s' if len(points) > 1 else ''} of up to {epochs} epochs; early "
                         "stopping usually ends them sooner.")
    else:
        from tlcore.data import load_dataset

        ds = load_dataset(spec.dataset, spec.data_dir, download=False)
        p = spec.params
        fwd, bwd = _flops(spec.backbone, size, ds.num_classes, 0)
        if spec.method == "quanta":
            n_train, n_test = _train_test_sizes(ds, p.nb_of_target_samples)
            per_epoch = n_train * (fwd + fwd + bwd) + n_test * 2 * fwd  # frozen source forward + target step
            runs = p.nb_of_runs + (1 if p.nb_of_runs > 1 else 0)
            images = p.nb_of_runs * p.nb_of_target_epochs * (n_train + n_test)
            flops = float(p.nb_of_runs * p.nb_of_target_epochs * per_epoch)
            notes.append(f"{p.nb_of_runs} run(s) x {p.nb_of_target_epochs} epoch(s) on about {n_train:,} training "
                         "images; each step is a frozen source forward plus a target training step.")
        else:
            n_train, n_test = _train_test_sizes(ds, None)
            runs = 1
            images = p.epochs * (n_train + n_test)
            flops = float(p.epochs * (n_train * (fwd + bwd) + n_test * fwd))
            notes.append(f"{p.epochs} epochs on about {n_train:,} training images.")
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
            seconds = flops / (rate_fe if spec.method == "fe" else rate_ft)
            basis = (f"no finished {METHOD_NOUNS[spec.method]} job of {spec.backbone} on {dev_type} here yet, so "
                     f"from a pace {how}; loading data and models comes on top")
    if seconds is None and not basis:
        basis = (f"no finished {METHOD_NOUNS[spec.method]} run of {spec.backbone} on {dev_type} on this "
                 "machine yet; the first one will calibrate the estimate")
    return CostEstimate(runs=runs, images=int(images), flops_per_image=float(fwd), flops=float(flops),
                        seconds=seconds, basis=basis, upper_bound=upper, notes=tuple(notes))
