"""One record per transfer method, and the registry that holds them.

Everything tlcore and the app know of a method beyond its own module reads this record: its
label in tables and job descriptions, its MLflow experiment, its params class, the Run page's
form fields, the points a sweep will run, the work a spec will cost, and the function that runs
it. Adding a method is one module that builds a :class:`Method` and calls :func:`register`
(plus its params class); nothing else keeps a per-method table.

This module imports nothing from the methods, so all of them can import it. :mod:`tlcore.specs` and
:mod:`tlcore.tracking` sit below it and read the registry it hands them (``use_method_registry``):
arrows point down only. Importing it runs ``tlcore/methods/__init__.py``, which imports the built-in
methods and the modules named in ``$TLCORE_PLUGINS`` (comma-separated): the registry is full once it
is imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tlcore import specs, tracking
from tlcore.errors import SpecError
from tlcore.registry import Registry

Spec = specs.ExperimentSpec
Tracker = tracking.Tracker
Reporter = Any  #: a :class:`tlcore.jobs.Reporter` (jobs sit above the methods)

PLUGINS_ENV = "TLCORE_PLUGINS"
#: The pages a method's runs can be compared on (the app's page keys).
ANALYSIS_PAGES = ("tradeoffs", "quanta", "ranking")


@dataclass
class RunResult:
    """What a finished experiment produced: its MLflow runs and headline metrics."""

    method: str
    run_ids: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the result as a table, for --json


@dataclass(frozen=True)
class FormField:
    """One parameter of a method's params class as the Run page draws it.

    ``kind``: choice, multichoice (a tuple of options), int, float, bool, text or layer (an index or a
    tap name). ``optional``: empty means None. ``option_labels`` name the choices for people.
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
    placeholder: str = ""  # what an empty multichoice means

    def label_of(self, value: Any) -> str:
        if self.option_labels and value in self.options:
            return self.option_labels[self.options.index(value)]
        return str(value)


@dataclass(frozen=True)
class Workload:
    """What a spec will make the machine do, counted before it starts (see ``Method.estimate``).

    ``images`` counts image passes (crops and epochs included); ``flops`` their work;
    ``upper_bound``: early stopping may end the job sooner.
    """

    runs: int
    images: int
    flops: float
    flops_per_image: float
    notes: tuple[str, ...] = ()
    upper_bound: bool = False


RunFn = Callable[[Spec, Reporter, Tracker], RunResult]


@dataclass(frozen=True)
class Method:
    """A transfer method as the rest of TL Lab sees it.

    Naming: ``label`` in tables and job descriptions ("Fine-tuning"), ``noun`` inside a sentence
    ("fine-tuning"), ``title`` on the Run page's method picker, ``blurb`` under it. ``experiment``:
    the MLflow experiment its runs go to. ``cli_help``: its line in ``python -m tlcore --help``.

    Work: ``run(spec, reporter, tracker)`` runs a job (or ``"module:function"``, imported when the
    first job runs, so that listing methods never imports torch); ``plan(spec)`` lists the points a sweep will
    run; ``estimate(spec)`` counts the work (a :class:`Workload`) before a job starts. ``pace``:
    which of the machine's measured rates projects its time, "forward" (inference) or "train".

    The Run page: ``fields(backbone)`` lists its form fields (default: one per field of ``params``);
    ``sweep``: the method takes the samples-per-class grid and split draws (``grid``, and
    ``cpu_grid`` where a CPU would take too long), runs one point per (value, draw) and offers model
    selection; ``samples``: it takes samples per class and draws too, but as one job that scores them
    all (no curve, no model selection), with ``grid_help`` saying what an empty grid means;
    ``task_points(spec)`` lists a job's points that share nothing, as (samples per class, draw) pairs (each
    trains on its own: fine-tuning's points, QUANTA's runs): a cluster executor runs each as a task, through
    ``run_point``; None: the job runs as one task (feature extraction extracts once for all its points);
    ``picks_backbone``: the page's backbone picker sets the spec's backbone (a method that takes a list of
    backbones in its params says False); ``pretrained_weights``: the page offers the
    backbone's weights (``fixed_weights`` forces some); ``data_title`` heads the dataset picker;
    ``store_defaults(tracking_uri)`` gives defaults that depend on where results go;
    ``control(values)`` gives the param changes of the companion job the page offers for the
    form's values (None: none), with ``control_label``, ``control_help`` and ``control_noun``;
    ``analysis_page`` is where its runs are compared. ``app_defaults`` are the page's values where
    they differ from the params class's (the CLI keeps the seeds'), and ``app_defaults_note`` says why.
    """

    name: str
    label: str
    params: type
    run: RunFn | str
    noun: str = ""
    title: str = ""
    blurb: str = ""
    experiment: str = ""
    cli_help: str = ""
    plan: Callable[[Spec], Sequence[Any]] | str | None = None
    estimate: Callable[[Spec], Workload] | None = None
    pace: str = "train"
    default_backbone: str = "efficientnet_lite0"
    fields: Callable[[str], list[FormField]] | None = None
    sweep: bool = False
    samples: bool = False
    task_points: Callable[[Spec], list[tuple[int, int]]] | str | None = None
    grid: str = "1,2,5,10"
    cpu_grid: str = ""
    grid_help: str = ""
    picks_backbone: bool = True
    pretrained_weights: bool = True
    fixed_weights: str | None = None
    data_title: str = "Data"
    store_defaults: Callable[[str | None], dict[str, Any]] | None = None
    control: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    control_label: str = ""
    control_noun: str = "control"
    control_help: str = ""
    analysis_page: str = "tradeoffs"
    app_defaults: Mapping[str, Any] = field(default_factory=dict)
    app_defaults_note: str = ""

    def __post_init__(self) -> None:
        if not self.noun:
            object.__setattr__(self, "noun", self.label if self.label.isupper() else self.label.lower())
        if not self.title:
            object.__setattr__(self, "title", self.label)
        if not self.experiment:
            object.__setattr__(self, "experiment", self.label)
        if self.analysis_page not in ANALYSIS_PAGES:
            raise ValueError(f"Method {self.name!r}: analysis_page must be one of {', '.join(ANALYSIS_PAGES)}")
        if self.pace not in ("forward", "train"):
            raise ValueError(f"Method {self.name!r}: pace must be 'forward' or 'train', not {self.pace!r}")
        if not dataclasses.is_dataclass(self.params):
            raise ValueError(f"Method {self.name!r}: params must be a dataclass, not {self.params!r}")

    def form_fields(self, backbone: str | None = None) -> list[FormField]:
        """The Run page's fields with their defaults: the app's where it has its own, else the params class's."""
        backbone = backbone or self.default_backbone
        fields = self.fields(backbone) if self.fields is not None else fields_from_params(self.params)
        defaults = self.params()
        out = []
        for f in fields:
            if not hasattr(defaults, f.name):
                continue  # a field this version of the params class does not have
            default = self.app_defaults.get(f.name, getattr(defaults, f.name))
            if f.kind == "choice" and default not in f.options and f.options:
                default = f.options[0]
            out.append(dataclasses.replace(f, default=default))
        return out

    def runner(self) -> RunFn:
        """The run function, imported now if the record names it as ``"module:function"``."""
        return _resolve(self.run)

    def points(self, spec: Spec) -> list[Any]:
        """The points a job of ``spec`` will run (one for a method that does not sweep)."""
        return list(_resolve(self.plan)(spec)) if self.plan is not None else [spec]

    def independent_points(self, spec: Spec) -> list[tuple[int, int]]:
        """The points ``task_points`` lists for ``spec`` (none: the job runs whole)."""
        return list(_resolve(self.task_points)(spec)) if self.task_points is not None else []

    @property
    def takes_samples(self) -> bool:
        """The Run page's samples-per-class and draws fields apply (a sweep, or a method that scores samples)."""
        return self.sweep or self.samples

    def default_grid(self, gpu: bool) -> str:
        """The Run page's samples-per-class grid (sweep methods); ``cpu_grid`` keeps a CPU job to minutes."""
        return self.grid if gpu or not self.cpu_grid else self.cpu_grid


def _resolve(ref: Callable | str) -> Callable:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def fields_from_params(params: type) -> list[FormField]:
    """Form fields read off a params dataclass's annotations: what a new method gets without writing any."""
    hints = typing.get_type_hints(params)
    out = []
    for f in dataclasses.fields(params):
        if f.name.startswith("_"):
            continue
        kind, optional = _kind_of(hints.get(f.name, str))
        if kind is None:
            continue  # tuples, dicts: not a form field
        out.append(FormField(f.name, f.name.replace("_", " ").capitalize(), kind, optional=optional))
    return out


def _kind_of(hint: Any) -> tuple[str | None, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
    kind = {bool: "bool", int: "int", float: "float", str: "text"}.get(hint)
    return kind, optional


methods: Registry[Method] = Registry("method", SpecError)
specs.use_method_registry(methods)  # specs and tracking sit below: they read the registry they are handed
tracking.use_method_registry(methods)


def register(method: Method) -> Method:
    """Add ``method`` to the registry; a second method of the same name is an error."""
    methods.register(method, name=method.name)
    return method


def get(name: str) -> Method:
    """The record of ``name`` (any case); an unknown name is one :class:`SpecError` sentence."""
    return methods.get(name)


def names() -> list[str]:
    return methods.names()


def label(name: str) -> str:
    """The method's label, or the name itself for a method this installation does not know (old runs)."""
    return methods.get(name).label if methods.knows(name) else name


class _Column(Mapping[str, Any]):
    """method name -> one attribute of its record, read live from the registry (a method added later counts)."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getitem__(self, name: str) -> Any:
        if not methods.knows(name):
            raise KeyError(name)
        return getattr(methods.get(name), self.attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(methods.names())

    def __len__(self) -> int:
        return len(methods)


EXPERIMENTS: Mapping[str, str] = _Column("experiment")
LABELS: Mapping[str, str] = _Column("label")


def method_of_experiment(experiment: str) -> str | None:
    """The method whose runs go to MLflow experiment ``experiment``."""
    return next((m.name for _, m in methods.items() if m.experiment == experiment), None)


def load_plugins(env: Mapping[str, str] | None = None) -> list[str]:
    """Import the modules named in ``$TLCORE_PLUGINS`` (each registers its methods); returns their names."""
    raw = (env if env is not None else os.environ).get(PLUGINS_ENV, "")
    loaded = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SpecError(f"The module {name!r} named in ${PLUGINS_ENV} cannot be imported ({exc}); fix the "
                            f"name or its path (PYTHONPATH), or remove it from ${PLUGINS_ENV}.") from exc
        loaded.append(name)
    return loaded
