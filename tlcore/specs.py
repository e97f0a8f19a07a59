"""What one experiment is, as data, validated before anything starts.

An :class:`ExperimentSpec` holds what every method shares (dataset, backbone, splits, device,
tracking) and ``params``, the method's own parameters. Each class declares a constraint table;
``validate()`` raises :class:`~tlcore.errors.SpecError` with one sentence naming the parameter,
its owner, what is allowed and what was received. The CLI and the app build the same spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from tlcore.errors import SpecError
from tlcore.measure.energy import DEFAULT_COUNTRY
from tlcore.validation import Check, Constraint, InstanceOf, Interval, IsNone, Options, validate_params

_STR = InstanceOf(str, "a string")
_NONE = IsNone()
_BOOL = InstanceOf(bool, "a bool")
_POS_INT = Interval(int, 1, None)
_NONNEG_INT = Interval(int, 0, None)


class _Validated:
    _constraints: ClassVar[dict[str, list[Constraint]]] = {}

    def validate(self) -> None:
        validate_params(type(self).__name__, asdict(self), self._constraints)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Method parameters


@dataclass
class FeatureExtractionParams(_Validated):
    """Full-network embedding + linear classifier (the seed's FE)."""

    classifier: str = "auto"  # the seed's LinearSVC on few-shot sets, its objective in torch ("linear") on large ones
    model_description: str | None = None  # JSON path or shipped name; None = all of the backbone's taps
    taps: tuple[str, ...] | None = None  # overrides the description
    standardize: str = "train"  # "train" statistics for every set; "per_set" reproduces the seed
    discretize: bool = True
    threshold_high: float = 0.15
    threshold_low: float = -0.25
    cache: bool = True  # extract each image once per (dataset, backbone, weights, taps, crops, resolution)
    cache_dir: str | None = None  # None: beside the results store

    _constraints: ClassVar = {
        "classifier": [_STR],
        "model_description": [_STR, _NONE],
        "taps": [Check(lambda v: isinstance(v, tuple) and len(v) > 0 and all(isinstance(t, str) and t for t in v),
                       "a non-empty tuple of layer names"), _NONE],
        "standardize": [Options(["train", "per_set"])],
        "discretize": [_BOOL],
        "threshold_high": [Interval(float, 0, None)],
        "threshold_low": [Interval(float, None, 0)],
        "cache": [_BOOL],
        "cache_dir": [_STR, _NONE],
    }

    def validate(self) -> None:
        super().validate()
        from tlcore.classifiers import classifiers

        if not classifiers.knows(self.classifier):
            raise SpecError(f"The 'classifier' parameter of FeatureExtractionParams must be a registered classifier. "
                            f"{classifiers.unknown_message(self.classifier)}")


FT_CONFIGURATIONS = (0, 1, 2, 3, "lp-ft")


@dataclass
class FineTuningParams(_Validated):
    """New head, freezing configuration, SGD(W)/Adam(W), early stopping, best-val restore."""

    configuration: int | str = 0
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    epochs: int = 40
    patience: int = 3
    early_stop_from_epoch: int = 11
    grad_clip_norm: float = 1.0
    grad_clip_mode: str = "per_tensor"  # the seed's Keras clipnorm clips each gradient tensor; "global" = one norm
    bn_trainable: bool = False  # the seed: every BatchNorm layer trains on batch statistics (same as "batch" below)
    # Which BatchNorm layers normalise with their running (pretrained) statistics: "running" = all of them (their
    # scale and shift still train in trained layers; best in few-shot runs), "frozen_layers" = those in frozen
    # layers only, "batch" = none (the seed)
    bn_statistics: str = "running"
    lp_epochs: int = 5  # lp-ft: epochs of the linear probe before full fine-tuning
    amp: bool = True  # on GPU only
    resume: str | None = None  # a run id: continue that killed/failed run (its own settings are used)
    keep_weights: bool = False  # keep the best weights as the run's artifact model/weights.pt
    cache_images_mb: int = 2048  # decode images once and keep them in memory up to this size (0 = stream)

    _constraints: ClassVar = {
        "configuration": [Options(FT_CONFIGURATIONS)],
        "optimizer": [Options(["sgd", "adam", "adamw"])],
        "learning_rate": [Interval(float, 0, None, closed="neither")],
        "weight_decay": [Interval(float, 0, None)],
        "momentum": [Interval(float, 0, 1, closed="left")],
        "epochs": [_POS_INT],
        "patience": [_POS_INT],
        "early_stop_from_epoch": [_POS_INT],
        "grad_clip_norm": [Interval(float, 0, None, closed="neither")],
        "grad_clip_mode": [Options(["per_tensor", "global"])],
        "bn_trainable": [_BOOL],
        "bn_statistics": [Options(["running", "frozen_layers", "batch"])],
        "lp_epochs": [_POS_INT],
        "amp": [_BOOL],
        "resume": [_STR, _NONE],
        "keep_weights": [_BOOL],
        "cache_images_mb": [_NONNEG_INT],
    }


@dataclass
class QuantaParams(_Validated):
    """QUANTA transfer: frozen source + random target, lambda_S per layer (the seed's flags)."""

    source_task: str | None = None
    source_weights: str = "default"  # "default"/"imagenet" (backbone), "random", a file, or a run id
    layer_to_transfer: int | str = -1  # -1 = every layer; an index or a tap name
    nb_of_runs: int = 1
    nb_of_target_epochs: int = 1
    nb_of_target_samples: int | None = None  # per class
    augment_data: bool = False
    learning_rate: float = 2e-4
    quanta_lr: float | None = None
    outdir: str = "./expe"
    train_from_previous_training: str | None = None
    show_only_build: bool = False
    keep_weights: bool = False  # also keep each run's target checkpoint as an MLflow artifact (models/)

    _constraints: ClassVar = {
        "source_task": [_STR, _NONE],
        "source_weights": [_STR],
        "layer_to_transfer": [Interval(int, -1, None), _STR],
        "nb_of_runs": [_POS_INT],
        "nb_of_target_epochs": [_POS_INT],
        "nb_of_target_samples": [_POS_INT, _NONE],
        "augment_data": [_BOOL],
        "learning_rate": [Interval(float, 0, None, closed="neither")],
        "quanta_lr": [Interval(float, 0, None, closed="neither"), _NONE],
        "outdir": [_STR],
        "train_from_previous_training": [_STR, _NONE],
        "show_only_build": [_BOOL],
        "keep_weights": [_BOOL],
    }


@dataclass
class SourceTrainingParams(_Validated):
    """Training a source network from scratch (QUANTA's pretrained source)."""

    epochs: int = 8
    learning_rate: float = 2e-4
    augment_data: bool = False
    out: str | None = None
    outdir: str | None = None  # the seed's export folder: {outdir}/{source}_training/
    nb_of_samples: int | None = None  # training images per class; None = all
    show_only_build: bool = False
    train_from_previous_training: str | None = None  # weights to start from (ours or the seed's Keras files)

    _constraints: ClassVar = {
        "epochs": [_POS_INT],
        "learning_rate": [Interval(float, 0, None, closed="neither")],
        "augment_data": [_BOOL],
        "out": [_STR, _NONE],
        "outdir": [_STR, _NONE],
        "nb_of_samples": [_POS_INT, _NONE],
        "show_only_build": [_BOOL],
        "train_from_previous_training": [_STR, _NONE],
    }


RANK_SCORES = ("logme", "sfda", "hscore", "leep", "nce")  # tlcore.methods.ranking.scores.SCORES, in that order


def _names_ok(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) > 0 and all(isinstance(t, str) and t.strip() for t in v) \
        and len(set(v)) == len(v)


@dataclass
class RankingParams(_Validated):
    """Training-free transferability scores of several backbones on the user's labelled images (issue 15)."""

    backbones: tuple[str, ...] | None = None  # None: every backbone whose pretrained weights are on this machine
    tap_percent: int = 100  # each backbone's shipped description: 100, 75, 50 or 25 % of its taps, evenly spaced
    taps: tuple[str, ...] | None = None  # one backbone only: its taps
    scores: tuple[str, ...] = RANK_SCORES
    random_control: bool = False  # also score each architecture with random weights: it should rank last
    per_tap: bool = True  # each score on each tap as well as on the whole embedding
    cache: bool = True
    cache_dir: str | None = None

    _constraints: ClassVar = {
        "backbones": [Check(_names_ok, "a non-empty tuple of distinct backbone names"), _NONE],
        "tap_percent": [Options([100, 75, 50, 25])],
        "taps": [Check(_names_ok, "a non-empty tuple of distinct layer names"), _NONE],
        "scores": [Check(lambda v: _names_ok(v) and all(s in RANK_SCORES for s in v),
                         "a non-empty tuple of distinct names among " + ", ".join(RANK_SCORES))],
        "random_control": [_BOOL],
        "per_tap": [_BOOL],
        "cache": [_BOOL],
        "cache_dir": [_STR, _NONE],
    }

    def __post_init__(self) -> None:
        for name in ("backbones", "taps", "scores"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
            elif isinstance(value, str):  # "a,b,c" from a form or a flag
                setattr(self, name, tuple(t.strip() for t in value.split(",") if t.strip()) or None)

    def validate(self) -> None:
        super().validate()
        if self.taps is not None and (self.backbones is None or len(self.backbones) != 1):
            raise SpecError("The 'taps' parameter of RankingParams names layers of one backbone: give exactly one "
                            "backbone with it, or use 'tap_percent' for several.")
        if self.backbones:
            from tlcore.models import backbones

            for b in self.backbones:
                if b not in backbones:
                    raise SpecError(f"The 'backbones' parameter of RankingParams must list registered backbones. "
                                    f"{backbones.unknown_message(b)}")


#: The method registry (:data:`tlcore.methods.base.methods`), handed down by that module when it is imported: it
#: sits above this one, so this module never imports it. Until then no method is known.
_methods: Any = None


def use_method_registry(registry: Any) -> None:
    """Read method names and params classes from ``registry`` (called once by :mod:`tlcore.methods.base`)."""
    global _methods
    _methods = registry


def _method_names() -> list[str]:
    return _methods.names() if _methods is not None else []


def params_class(method: str) -> type | None:
    """The params class of a registered method (None for an unknown one): each method's record names its own."""
    return _methods.get(method).params if _methods is not None and _methods.knows(method) else None


class _RegisteredMethod(Constraint):
    """One of the methods registered now (read when checked, so a method added later counts)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in _method_names()

    def describe(self) -> str:
        names = _method_names()
        if not names:
            return "a registered method (none is registered yet: import tlcore.methods, which registers them)"
        return "one of " + ", ".join(repr(o) for o in names)


# ---------------------------------------------------------------------------------------------
# The experiment


def _spc_ok(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) > 0 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                        for x in v)


def _points_ok(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) > 0 and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in p)
        and p[0] >= 1 and p[1] >= 0 for p in v)


@dataclass
class ExperimentSpec(_Validated):
    """One experiment: a method on a dataset with a backbone, and where its runs are recorded.

    Example:
        >>> spec = ExperimentSpec("fe", "digits", samples_per_class=(5, 10), splits=3)
        >>> spec.validate()
    """

    method: str
    dataset: str
    backbone: str = "efficientnet_lite0"
    weights: str = "default"
    samples_per_class: tuple[int, ...] | None = None  # None: the split set's values (seed grid)
    splits: int | None = None  # draws per samples-per-class value (None: all, 5 in the seed)
    points: tuple[tuple[int, int], ...] | None = None  # only these (samples per class, draw) of the sweep
    split_path: str | None = None
    model_selection: bool = False
    use_crops: bool = False
    precomputed_crops: str | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 64
    num_workers: int | None = None
    resolution: int | None = None  # input size; None = the backbone's
    data_dir: str | None = None
    download: bool = False
    download_weights: bool = False
    skip_bad_images: bool = False
    mlflow_path: str | None = None
    job: str | None = None
    country_iso_code: str = DEFAULT_COUNTRY
    carbon_intensity_g_per_kwh: float | None = None
    measure_energy: bool = True
    params: Any = None
    tags: dict[str, str] = field(default_factory=dict)

    _constraints: ClassVar = {
        "method": [_RegisteredMethod()],
        "dataset": [Check(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")],
        "backbone": [_STR],
        "weights": [_STR],
        "samples_per_class": [Check(_spc_ok, "a non-empty tuple of ints >= 1"), _NONE],
        "splits": [Interval(int, 1, None), _NONE],
        "points": [Check(_points_ok, "a non-empty tuple of (samples per class >= 1, draw >= 0) pairs"), _NONE],
        "split_path": [_STR, _NONE],
        "model_selection": [_BOOL],
        "use_crops": [_BOOL],
        "precomputed_crops": [_STR, _NONE],
        "seed": [_NONNEG_INT],
        "device": [Check(lambda v: isinstance(v, str) and v.split(":")[0] in ("auto", "cpu", "cuda", "mps"),
                         "one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")],
        "batch_size": [Interval(int, 1, 65536)],
        "num_workers": [Interval(int, 0, 64), _NONE],
        "resolution": [Interval(int, 16, 1024), _NONE],
        "data_dir": [_STR, _NONE],
        "download": [_BOOL],
        "download_weights": [_BOOL],
        "skip_bad_images": [_BOOL],
        "mlflow_path": [_STR, _NONE],
        "job": [_STR, _NONE],
        "country_iso_code": [Check(lambda v: isinstance(v, str) and len(v) == 3 and v.isalpha(),
                                   "a 3-letter ISO country code such as 'FRA' or 'USA'")],
        "carbon_intensity_g_per_kwh": [Interval(float, 0, None), _NONE],
        "measure_energy": [_BOOL],
    }

    def __post_init__(self) -> None:
        if self.params is None and (cls := params_class(self.method)) is not None:
            self.params = cls()
        if isinstance(self.samples_per_class, list):
            self.samples_per_class = tuple(self.samples_per_class)
        if isinstance(self.points, list):  # read back from JSON
            self.points = tuple(tuple(p) if isinstance(p, list) else p for p in self.points)

    def validate(self) -> ExperimentSpec:
        """Check every field and the method's parameters; return self so calls chain."""
        super().validate()
        expected = params_class(self.method)
        if not isinstance(self.params, expected):
            raise SpecError(f"The 'params' parameter of ExperimentSpec must be a {expected.__name__} for method "
                            f"{self.method!r}. Got {type(self.params).__name__} instead.")
        self.params.validate()
        from tlcore.models import backbone_config, backbones

        if self.backbone not in backbones:
            raise SpecError(f"The 'backbone' parameter of ExperimentSpec must be a registered backbone. "
                            f"{backbones.unknown_message(self.backbone)}")
        cfg = backbone_config(self.backbone)
        if self.resolution is not None and cfg.fixed_input_size and self.resolution != cfg.preprocessing.input_size:
            raise SpecError(f"The 'resolution' parameter of ExperimentSpec must be {cfg.preprocessing.input_size} "
                            f"for {self.backbone}, which takes a fixed input size. Got {self.resolution} instead.")
        if self.precomputed_crops and not self.use_crops:
            self.use_crops = True  # the seed's --precomputed-crops implies crops
        return self

    @property
    def input_size(self) -> int:
        from tlcore.models import backbone_config

        return self.resolution or backbone_config(self.backbone).preprocessing.input_size

    def with_params(self, **changes: Any) -> ExperimentSpec:
        return replace(self, params=replace(self.params, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        d["params"] = self.params.to_dict() if self.params is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        data = dict(data)
        params = data.pop("params", None)
        spec = cls(**data)
        if isinstance(params, dict):
            p = dict(params)
            if isinstance(p.get("taps"), list):
                p["taps"] = tuple(p["taps"])
            spec.params = params_class(spec.method)(**p)
        return spec
