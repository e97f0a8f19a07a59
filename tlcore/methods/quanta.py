"""QUANTA: how much a target task wants a source network's features, layer by layer.

A frozen source (eval mode: BatchNorm running statistics, no dropout, no gradients) and a randomly
initialised target of the same architecture see the same image (augmented once, when asked); a
QUANTA layer (:mod:`tlcore.models.quanta_layer`) at the chosen layer, or at every layer (``-l -1``),
mixes the source's output into the target's. The target and the QUANTA weights train with Adam
(lr 2e-4, like the reference; ``--quanta-lr`` gives the QUANTA weights their own param group).
lambda_S of every QUANTA layer is logged per optimizer step (``quanta_source/<layer>``, step =
global step, flushed to MLflow in batches) and per epoch (``quanta_source_epoch/<layer>``).

Sources (``-sw``): a weights file (``train-source --out`` or any state dict), a ``Source
training`` MLflow run id, ``imagenet``/``default`` (the backbone's pretrained weights), or
``random``: the control, a randomly initialised source that knows nothing. lambda_S alone is not
a verdict; compare with the control.

Source metrics: the source's head predicts the *source* task's classes, so the source is scored on
the source task's test set (``-s``, or the task recorded with the weights), where its head means
something; with the same task on both sides that is the target's test set, as in the reference.
With no known source task (ImageNet weights), the source is not scored and the run says why.

Runs are seeded with ``seed + r``: the target's initialisation, the shuffle of each epoch, dropout
and augmentation; run r trains on draw r of the split set (per-class samples, stratified and
seeded; the test set stays whole). A random source is drawn from its own seed, so it never equals
the target's initialisation. The seed's export files go to ``{outdir}/{source}_to_{target}/``,
rewritten (never appended to) and logged as MLflow artifacts; ``target_r_*.pt`` holds everything a
resume needs: weights, QUANTA weights, optimizer and RNG state, epoch, step and history.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.data import ImageDataset, SplitSet, load_dataset, resolve_splits
from tlcore.data.loading import Preprocessing
from tlcore.devices import resolve_device
from tlcore.errors import DatasetError, TLError, WeightsError
from tlcore.measure import CostMeter, count_flops
from tlcore.methods.base import RunResult
from tlcore.methods.common import SplitPoint, Sweep
from tlcore.methods.source_training import ARTIFACT_NAME, energy_settings, save_checkpoint
from tlcore.methods.supervised import (
    METRIC_NAMES,
    ClassificationMeter,
    batches_on_device,
    check_finite_loss,
    configure_device,
    epoch_loader,
    eval_loader,
    evaluate,
    loader_seed,
    prefixed,
    rng_state,
    seed_everything,
    set_rng_state,
    train_step,
    use_channels_last,
)
from tlcore.models import (
    Backbone,
    BackboneConfig,
    backbone_config,
    create_backbone,
    load_weights_into,
    read_weights_file,
)
from tlcore.models.base import RANDOM_WEIGHTS
from tlcore.models.quanta_layer import QuantaNetwork, QuantaPoint, layer_label, quanta_points, select_points
from tlcore.reporting import Reporter
from tlcore.seed_names import KERAS_METRIC_NAMES
from tlcore.specs import ExperimentSpec, QuantaParams
from tlcore.tracking import RunHandle, Tracker

RESUME_FORMAT = "tlcore.quanta.v1"
PRETRAINED_NAMES = ("default", "imagenet")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
FLUSH_EVERY_STEPS = 256
LIVE_EVERY_S = 1.0


# ---------------------------------------------------------------------------------------------
# Names and files


def safe_name(name: str) -> str:
    """A dataset or task name as one path component: ``digits:0-4`` -> ``digits_0-4``."""
    text = str(name).rstrip("/\\")
    if "/" in text or "\\" in text:
        text = re.split(r"[\\/]", text)[-1]
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".")
    return text or "task"


def export_dir(outdir: str | os.PathLike, source: str, target: str) -> Path:
    return Path(outdir).expanduser() / f"{safe_name(source)}_to_{safe_name(target)}"


def export_names(run: int, label: str) -> dict[str, str]:
    """The seed's file names for run ``run`` and layer label ``label`` (an index, a tap name or ``all``)."""
    s = f"r_{run}_l_{safe_name(label)}"
    return {
        "quantas": f"quantas_{s}.jsonl",
        "training": f"training_metrics_of_target_{s}.jsonl",
        "testing_source": f"testing_metrics_of_source_{s}.jsonl",
        "testing_target": f"testing_metrics_of_target_{s}.jsonl",
        "source_model": f"source_{s}.pt",
        "target_model": f"target_{s}.pt",
    }


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)  # rewritten whole, never appended; a hard-linked artifact keeps the old copy
    return path


def _link_or_copy(src: Path, dest: Path) -> Path:
    """``dest`` becomes the same bytes as ``src``: a hard link when possible (free), else a copy."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    return dest


def _attach(run: RunHandle, path: Path, artifact_path: str) -> None:
    """Log a (large) file as an artifact: a hard link into a local store when possible, else a copy."""
    folder = run.artifact_dir()
    if folder is None:
        run.log_artifact(path, artifact_path)
        return
    dest = folder / artifact_path
    dest.mkdir(parents=True, exist_ok=True)
    _link_or_copy(path, dest / path.name)


# ---------------------------------------------------------------------------------------------
# The source


@dataclass
class SourcePlan:
    """Which source a QUANTA experiment uses, resolved and checked before any run opens."""

    kind: str  # "trained" (a weights file or a Source training run), "pretrained", "random"
    weights: str  # what the user passed
    description: str
    head_classes: int
    task: str | None = None  # the task the source's head predicts, when known
    path: Path | None = None
    run_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    backbone: Backbone | None = None  # built once, unless random (a new one per run)
    reference_top1: float | None = None

    @property
    def name(self) -> str:
        """The source half of the export folder's name (the control never shares the real source's folder)."""
        if self.kind == "random":
            return f"random_{safe_name(self.task)}" if self.task else "random"
        if self.task:
            return self.task
        if self.kind == "pretrained":
            return self.weights if self.weights not in PRETRAINED_NAMES else "imagenet"
        return self.path.stem if self.path else (self.run_id or "source")[:8]


def read_checkpoint(path: str | os.PathLike, what: str = "Source weights",
                    arch: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """A state dict and the tlcore meta saved with it (empty for a bare state dict); a Keras file
    (the seed's ``SourceModel.weights.h5``) is mapped onto ``arch``."""
    from tlcore.models.keras_weights import is_keras_file, keras_state_dict

    if arch is not None and is_keras_file(path):
        return keras_state_dict(path, arch), {"architecture": arch, "format": "keras"}
    return read_weights_file(path, what)


def _head_classes(state: dict[str, torch.Tensor], cfg: BackboneConfig) -> int | None:
    """Output width of the head a state dict carries (its last 2-D weight under the head's path)."""
    found = None
    for key, value in state.items():
        bare = key
        for prefix in ("module.", "net."):
            bare = bare.removeprefix(prefix)
        if (bare == f"{cfg.head_path}.weight" or bare.startswith(cfg.head_path + ".")) and value.dim() == 2 \
                and bare.endswith("weight"):
            found = int(value.shape[0])
    return found


def _check_input_size(trained_at: Any, input_size: int) -> None:
    if trained_at in (None, "", "none"):
        return
    size = int(trained_at)
    if size != input_size:
        raise WeightsError(f"The source was trained on {size}x{size} inputs but the target runs at "
                           f"{input_size}x{input_size}; source and target must see the same images "
                           f"(pass --resolution {size} or train the source at {input_size}).")


def _load_trained(cfg: BackboneConfig, path: Path, origin: str, fallback_classes: int,
                  input_size: int) -> tuple[Backbone, dict, int]:
    state, meta = read_checkpoint(path, arch=cfg.name)
    if meta.get("architecture") and meta["architecture"] != cfg.name:
        raise WeightsError(f"Source weights {origin} are a {meta['architecture']} network, not {cfg.name}; pass "
                           f"--architecture {meta['architecture']} or weights of a {cfg.name}.")
    _check_input_size(meta.get("input_size"), input_size)
    head = _head_classes(state, cfg) or fallback_classes
    bb = create_backbone(cfg.name, "random", num_classes=head)
    load_weights_into(bb.net, state, origin, cfg.name, cfg.head_path)  # WeightsError names the keys
    bb.weights_name = origin
    return bb, meta, head


def resolve_source(spec: ExperimentSpec, tracker: Tracker, target_classes: int,
                   tmp_dir: Path) -> SourcePlan:
    """Turn ``-sw`` into a built source (or the recipe for a random one); every refusal is one sentence."""
    params: QuantaParams = spec.params
    cfg = backbone_config(spec.backbone)
    sw = params.source_weights.strip()
    low = sw.lower()
    if low in RANDOM_WEIGHTS:
        return SourcePlan("random", sw, "random (control: a source that knows nothing)", 0, params.source_task)
    if low in PRETRAINED_NAMES or sw in cfg.weights:
        name = cfg.default_weights if low == "default" else ("imagenet" if low == "imagenet" else sw)
        if name is None or name not in cfg.weights:
            raise WeightsError(
                f"{spec.backbone} has no pretrained weights named {sw!r}; give -sw a weights file "
                f"(python -m tlcore train-source --architecture {spec.backbone} ... --out src.pt), a Source training "
                "run id, or 'random' for the control.")
        bb = create_backbone(spec.backbone, name, download=spec.download_weights)
        src = cfg.weights[name]
        task = params.source_task
        if task and task.lower() == name:
            task = None  # "-s imagenet": no local test set to score it on
        return SourcePlan("pretrained", sw, f"{name} ({src.description})", _head_classes(
            bb.net.state_dict(), cfg) or 0, task, backbone=bb, reference_top1=src.reference_top1)
    path = Path(sw).expanduser()
    if path.exists():
        if path.is_dir():
            raise WeightsError(f"-sw {sw} is a folder; give the weights file itself (e.g. {path / 'src.pt'}).")
        bb, meta, head = _load_trained(cfg, path, str(path), target_classes, spec.input_size)
        return SourcePlan("trained", sw, str(path.resolve()), head, params.source_task or meta.get("dataset"),
                          path=path.resolve(), meta=meta, backbone=bb, run_id=meta.get("run_id"))
    if _RUN_ID.match(low):
        try:
            run = tracker.get_run(low)
        except Exception:
            raise WeightsError(f"-sw {sw} is neither a file nor a run in {tracker.uri}; check the path, or the run id "
                               "and --mlflow-path.") from None
        run_params = run.data.params
        if run_params.get("backbone") and run_params["backbone"] != spec.backbone:
            raise WeightsError(f"Run {low} trained a {run_params['backbone']}, not {spec.backbone}; pass "
                               f"--architecture {run_params['backbone']} or another run.")
        try:
            local = Path(tracker.client.download_artifacts(low, ARTIFACT_NAME, str(tmp_dir)))
        except Exception:
            raise WeightsError(f"Run {low} has no {ARTIFACT_NAME} artifact; give the id of a Source training run "
                               "(python -m tlcore train-source) or a weights file.") from None
        _check_input_size(run_params.get("resolution"), spec.input_size)
        bb, meta, head = _load_trained(cfg, local, f"run {low}", target_classes, spec.input_size)
        meta = {"dataset": run_params.get("dataset"), "seed": run_params.get("seed"),
                "input_size": run_params.get("resolution"), **meta}
        return SourcePlan("trained", sw, f"run {low}", head, params.source_task or meta.get("dataset"),
                          path=local, run_id=low, meta=meta, backbone=bb)
    raise WeightsError(f"-sw {sw!r} is not a file, not a run id, and not one of random, default, imagenet; give "
                       "the weights of a trained source, a Source training run id, or 'random' for the control.")


def _random_source(arch: str, classes: int, run_seed: int) -> Backbone:
    """A randomly initialised source from its own seed (never the target's initialisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((run_seed * 7919 + 104_729) % 2**63)
        bb = create_backbone(arch, "random", num_classes=classes)
    bb.weights_name = "random"
    return bb


# ---------------------------------------------------------------------------------------------
# Preparation: everything checked before a run opens


@dataclass(frozen=True)
class _RunPoint(SplitPoint):
    layer: str = "all"

    @property
    def label(self) -> str:
        return f"run {self.split} l={self.layer}"

    @property
    def name(self) -> str:
        return f"run {self.split} · " + ("every layer" if self.layer == "all" else f"layer {self.layer}")


@dataclass
class QuantaPlan:
    spec: ExperimentSpec
    device: torch.device
    cfg: BackboneConfig
    prep: Preprocessing
    points: list[QuantaPoint]
    label: str
    ds: ImageDataset
    splits: SplitSet
    source: SourcePlan
    source_eval: tuple[ImageDataset, np.ndarray] | None
    source_eval_note: str
    out_dir: Path
    resume: dict | None = None
    resume_path: Path | None = None

    @property
    def params(self) -> QuantaParams:
        return self.spec.params

    def train_indices(self, run: int) -> np.ndarray:
        n = self.params.nb_of_target_samples
        if n is None:
            return np.setdiff1d(np.arange(len(self.ds)), np.union1d(self.splits.test, self.splits.val))
        draws = self.splits.draws(n)
        return self.splits.train_split(n, run % draws)


def _load_resume(path: str, cfg: BackboneConfig, points: list[QuantaPoint], num_classes: int,
                 runs: int) -> tuple[dict, Path]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TLError(f"--train_from_previous_training {path} does not exist; give a target_r_*_l_*.pt file written by "
                      "a previous QUANTA run.")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TLError(f"--train_from_previous_training {path} could not be read ({type(exc).__name__}); give a "
                      "target_r_*_l_*.pt file written by a previous QUANTA run.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != RESUME_FORMAT:
        raise TLError(f"--train_from_previous_training {path} is not a QUANTA target checkpoint; give a "
                      "target_r_*_l_*.pt file written by python -m tlcore quanta.")
    if ckpt["architecture"] != cfg.name:
        raise TLError(f"The checkpoint {path} is a {ckpt['architecture']} target; pass --architecture "
                      f"{ckpt['architecture']}.")
    keys = [pt.key for pt in points]
    if list(ckpt["points"]) != keys:
        raise TLError(f"The checkpoint {path} has QUANTA layers {', '.join(ckpt['points'])}, not {', '.join(keys)}; "
                      f"pass -l {ckpt['layer_to_transfer']} to continue it.")
    if int(ckpt["num_classes"]) != num_classes:
        raise TLError(f"The checkpoint {path} predicts {ckpt['num_classes']} classes but the target task has "
                      f"{num_classes}; continue it on the task it was trained on ({ckpt.get('target_task')}).")
    if runs != 1:
        raise TLError("--train_from_previous_training continues one saved run; pass -r 1.")
    return ckpt, p


def prepare(spec: ExperimentSpec, tracker: Tracker, reporter: Reporter, tmp_dir: Path) -> QuantaPlan:
    """Resolve and check everything (layers, data, source, resume, output folder); open no run."""
    params: QuantaParams = spec.params
    device = resolve_device(spec.device)
    cfg = backbone_config(spec.backbone)
    points = select_points(cfg, params.layer_to_transfer)
    label = layer_label(points, len(quanta_points(cfg)))
    prep = replace(cfg.preprocessing, input_size=spec.input_size)

    reporter.update(stage="loading data", fraction=0.0)
    ds = load_dataset(spec.dataset, spec.data_dir, spec.download)
    n = params.nb_of_target_samples
    try:
        splits = resolve_splits(ds, spec.split_path, seed=spec.seed, spc_values=[n] if n else None)
    except DatasetError as exc:
        if n is None:
            raise
        raise DatasetError(f"--nb_of_target_samples {n}: {exc}") from None
    for w in splits.warnings:
        reporter.message(w, "warning")
    if len(splits.test) == 0:
        raise DatasetError(f"The test set of {ds.name} is empty; nothing would score the target.")

    reporter.update(stage="loading the source", fraction=0.0)
    source = resolve_source(spec, tracker, ds.num_classes, tmp_dir)
    trained_on = source.meta.get("dataset")
    if params.source_task and trained_on and params.source_task != trained_on:
        reporter.message(f"-s {params.source_task} is not the task the source was trained on ({trained_on}); the "
                         f"source is scored on {params.source_task}.", "warning")
    source_eval, note = None, ""
    source_seed = source.meta.get("seed")
    source_seed = spec.seed if source_seed in (None, "", "none") else int(source_seed)
    if source.task is None:
        if source.kind == "random":
            source.head_classes = ds.num_classes
            note = "not scored: no source task given (-s)"
        elif source.kind == "pretrained":
            note = ("not scored: its head predicts ImageNet classes and no ImageNet test set is here (reference "
                    f"top-1 {source.reference_top1}%)")
        else:
            note = "not scored: the source task is unknown (pass -s with the dataset its head was trained on)"
    else:
        if source.task == spec.dataset and source_seed == spec.seed:
            sds, stest = ds, splits.test
        else:
            if source.task == spec.dataset and ds.partition is None:
                reporter.message(f"The source was trained with split seed {source_seed} but this run splits "
                                 f"{spec.dataset} with --seed {spec.seed}: the target's test set may hold images the "
                                 f"source trained on. Pass --seed {source_seed} to keep them apart.", "warning")
            try:
                sds = load_dataset(source.task, spec.data_dir, spec.download)
            except DatasetError as exc:
                raise DatasetError(f"Source task -s {source.task}: {exc}") from None
            stest = resolve_splits(sds, None, seed=source_seed, spc_values=None).test
        if source.kind == "random":
            source.head_classes = sds.num_classes
        elif source.head_classes != sds.num_classes:
            raise WeightsError(f"The source's head predicts {source.head_classes} classes but its task "
                               f"{source.task} has {sds.num_classes}; pass -s with the dataset the source was "
                               "trained on.")
        source_eval = (sds, stest)
        note = f"scored on the test set of its own task {source.task} ({len(stest)} images)"
        if source.task != spec.dataset:
            note += "; its head predicts the source's classes, not the target's"

    resume, resume_path = None, None
    if params.train_from_previous_training:
        resume, resume_path = _load_resume(params.train_from_previous_training, cfg, points, ds.num_classes,
                                           params.nb_of_runs)

    out_dir = export_dir(params.outdir, source.name, spec.dataset)
    if not params.show_only_build:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TLError(f"Cannot create the output folder {out_dir} ({exc.strerror}); pass -o with a writable "
                          "folder.") from None
        if not os.access(out_dir, os.W_OK):
            raise TLError(f"The output folder {out_dir} is not writable; pass -o with a writable folder.")
    return QuantaPlan(spec, device, cfg, prep, points, label, ds, splits, source, source_eval, note, out_dir,
                      resume, resume_path)


# ---------------------------------------------------------------------------------------------
# --show_only_build


def describe_network(title: str, bb: Backbone, input_size: int, marks: dict[str, str]) -> str:
    """Every leaf layer with its output shape and parameter count (the seed's model summary)."""
    shapes: dict[str, str] = {}
    handles = []
    for name, m in bb.net.named_modules():
        def hook(_m, _i, out, name=name):
            t = out[0] if isinstance(out, tuple) else out
            if isinstance(t, torch.Tensor):
                shapes[name] = "x".join(str(d) for d in t.shape[1:])
        handles.append(m.register_forward_hook(hook))
    was_training = bb.training
    bb.eval()
    try:
        with torch.no_grad():
            bb(torch.zeros(1, 3, input_size, input_size, device=next(bb.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        bb.train(was_training)
    lines = [title, f"  {'layer':34s} {'type':20s} {'output':>16s} {'params':>12s}"]
    for name, m in bb.net.named_modules():
        if not name or (list(m.children()) and name not in marks):
            continue
        own = sum(p.numel() for p in m.parameters(recurse=False))
        mark = f"  <- {marks[name]}" if name in marks else ""
        lines.append(f"  {name:34s} {type(m).__name__:20s} {shapes.get(name, '-'):>16s} {own:>12,d}{mark}")
    total = bb.count_parameters()
    trainable = bb.count_parameters(trainable_only=True)
    lines.append(f"  total parameters {total:,d}, trainable {trainable:,d}, frozen {total - trainable:,d}")
    return "\n".join(lines)


def show_build(plan: QuantaPlan) -> str:
    spec = plan.spec
    source = plan.source.backbone or _random_source(spec.backbone, plan.source.head_classes, spec.seed)
    seed_everything(spec.seed)
    target = create_backbone(spec.backbone, "random", num_classes=plan.ds.num_classes)
    net = QuantaNetwork(source, target, plan.points)
    src_marks = {p.module: f"Z_S of QUANTA {p.key}" for p in plan.points}
    tgt_marks = {p.module: p.description for p in plan.points}
    trainable = net.target.count_parameters(True) + 2 * len(plan.points)
    parts = [
        describe_network(f"Source ({spec.backbone}, {plan.source.description}; frozen, eval mode):", net.source,
                         spec.input_size, src_marks),
        "",
        describe_network(f"Target ({spec.backbone}, random initialisation, {plan.ds.num_classes} classes of "
                         f"{spec.dataset}):", net.target, spec.input_size, tgt_marks),
        "",
        f"QUANTA layers: {len(plan.points)} ({2 * len(plan.points)} parameters, lambda_S starts at "
        f"{net.quanta[0].lambda_source:.4f}); trainable in all: {trainable:,d}.",
        "Nothing was trained (--show_only_build); no MLflow run was opened.",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# One run


class _LambdaLog:
    """lambda_S per optimizer step, kept on the device and written to MLflow in batches."""

    def __init__(self, run: RunHandle, keys: list[str]) -> None:
        self.run, self.keys = run, keys
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []

    def add(self, step: int, values: torch.Tensor) -> None:
        self.steps.append(step)
        self.values.append(values)

    def flush(self) -> None:
        if not self.steps:
            return
        from mlflow.entities import Metric

        table = torch.stack(self.values).cpu().tolist()
        now = int(time.time() * 1000)
        items = [Metric(f"quanta_source/{k}", float(row[j]), now, step)
                 for step, row in zip(self.steps, table, strict=True) for j, k in enumerate(self.keys)]
        for i in range(0, len(items), 1000):
            self.run.client.log_batch(self.run.run_id, metrics=items[i:i + 1000])
        self.run.heartbeat()
        self.steps, self.values = [], []


def _source_test(plan: QuantaPlan, source: Backbone, cache: dict) -> dict[str, Any]:
    """The source's metric set on its own task's test set (cached when the source does not change)."""
    if plan.source_eval is None:
        return {"evaluated": False, "note": plan.source_eval_note}
    if plan.source.kind != "random" and "metrics" in cache:
        return cache["metrics"]
    sds, stest = plan.source_eval
    spec = plan.spec
    loader = eval_loader(sds, stest, plan.prep, spec.batch_size, plan.device, spec.num_workers)
    metrics = evaluate(source, source, loader, plan.prep, plan.device, plan.source.head_classes)
    out = {"evaluated": True, "task": plan.source.task, "n_images": len(stest), "note": plan.source_eval_note,
           **metrics}
    cache["metrics"] = out
    return out


def _run_one(plan: QuantaPlan, run: RunHandle, reporter: Reporter, cost: CostMeter, r: int, train_idx: np.ndarray,
             flops_train: int, flops_forward: int, flops_source: int, source_cache: dict) -> dict[str, Any]:
    spec, params, device, prep = plan.spec, plan.params, plan.device, plan.prep
    keys = [p.key for p in plan.points]
    run_seed = int(plan.resume["run_seed"]) if plan.resume else spec.seed + r
    epochs = params.nb_of_target_epochs

    # build: the source (frozen), a random target, the QUANTA layers, the optimizer
    seed_everything(run_seed)
    source = plan.source.backbone or _random_source(spec.backbone, plan.source.head_classes, run_seed)
    target = create_backbone(spec.backbone, "random", num_classes=plan.ds.num_classes)
    net = QuantaNetwork(source, target, plan.points).to(device)
    channels_last = use_channels_last(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    quanta_lr = params.quanta_lr or params.learning_rate
    optimizer = torch.optim.Adam([{"params": net.target.parameters(), "lr": params.learning_rate},
                                  {"params": net.quanta_parameters(), "lr": quanta_lr}], eps=1e-7)
    start_epoch, global_step = 0, 0
    history: dict[str, Any] = {"epochs": [0], "lambda_s": [net.lambda_source().tolist()], "training": [],
                               "weights": [_quanta_weights(net)]}
    if plan.resume:
        ck = plan.resume
        net.target.net.load_state_dict(ck["target"])
        net.quanta.load_state_dict(ck["quanta"])
        optimizer.load_state_dict(ck["optimizer"])
        for group, lr in zip(optimizer.param_groups, (params.learning_rate, quanta_lr), strict=True):
            group["lr"] = lr  # learning rates come from this command line
        start_epoch, global_step, history = int(ck["epoch"]), int(ck["global_step"]), ck["history"]
        set_rng_state(ck["rng"])  # last: building the models above drew from the RNGs
    lambdas = _LambdaLog(run, keys)
    lambdas.add(global_step, net.lambda_source())
    steps_per_epoch = max(1, len(train_idx) // spec.batch_size)
    last_live = 0.0
    # train (a run that fails or is cancelled keeps the lambdas of the steps it took)
    try:
        for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
            t0 = time.perf_counter()
            net.train()
            meter = ClassificationMeter(plan.ds.num_classes, device)
            loader = epoch_loader(plan.ds, train_idx, prep, spec.batch_size, device, spec.num_workers,
                                  loader_seed(run_seed, epoch), augment=params.augment_data)
            done_epochs = epoch - start_epoch - 1
            for step, (x, y) in enumerate(batches_on_device(loader, prep, device, channels_last)):
                reporter.check_cancelled()
                # source: no grad, eval; target: the same batch, mixed at the QUANTA points
                logits, loss = train_step(net, x, y, optimizer, device)
                global_step += 1
                # log: lambda_S per step (batched), metrics on the device, live values now and then
                lam = net.lambda_source()
                lambdas.add(global_step, lam)
                meter.update(logits, y, loss.detach() * len(y))
                cost.add_images(len(y))
                cost.add_flops(flops_train * len(y))
                if len(lambdas.steps) >= FLUSH_EVERY_STEPS:
                    lambdas.flush()
                now = time.perf_counter()
                if now - last_live > LIVE_EVERY_S:
                    last_live = now
                    reporter.log_metrics({f"quanta_source/{k}": v for k, v in zip(keys, lam.tolist(), strict=True)},
                                         step=global_step, series="quanta")
                done = done_epochs + min(step + 1, steps_per_epoch) / steps_per_epoch
                reporter.update(stage=f"run {r + 1}/{params.nb_of_runs}, epoch {epoch - start_epoch}/{epochs}",
                                fraction=done / epochs * 0.9)
            lambdas.flush()
            # evaluate on val, log the epoch
            val_loader = eval_loader(plan.ds, plan.splits.val, prep, spec.batch_size, device, spec.num_workers)
            val = evaluate(net, net, val_loader, prep, device, plan.ds.num_classes)
            cost.add_images(len(plan.splits.val))
            cost.add_flops(flops_forward * len(plan.splits.val))
            lam_epoch = net.lambda_source().tolist()
            train = meter.compute()
            check_finite_loss(train["loss"], epoch, f"QUANTA run {r}", params.learning_rate)
            extra = {"val_loss": val["loss"], "val_accuracy": val["accuracy"], "epoch_time_s": time.perf_counter() - t0}
            history["epochs"].append(epoch)
            history["lambda_s"].append(lam_epoch)
            history.setdefault("weights", []).append(_quanta_weights(net))
            history["training"].append({"epoch": epoch, **train, **extra})
            by_key = dict(zip(keys, lam_epoch, strict=True))
            run.log_metrics({**prefixed("train", train), **extra,
                             **{f"quanta_source_epoch/{k}": v for k, v in by_key.items()}}, step=epoch)
            reporter.log_metrics({"train_loss": train["loss"], "train_accuracy": train["accuracy"],
                                  **{f"quanta_source/{k}": v for k, v in by_key.items()}},
                                 step=global_step, series="quanta")
    except BaseException:
        with contextlib.suppress(Exception):
            lambdas.flush()
        raise
    rng_after_training = rng_state()

    # test: the target (through the source, as it was trained) and the source on its own task
    reporter.update(stage=f"run {r + 1}/{params.nb_of_runs}: testing", fraction=0.92)
    test_loader = eval_loader(plan.ds, plan.splits.test, prep, spec.batch_size, device, spec.num_workers)
    target_test = evaluate(net, net, test_loader, prep, device, plan.ds.num_classes)
    cost.add_images(len(plan.splits.test))
    cost.add_flops(flops_forward * len(plan.splits.test))
    cached = "metrics" in source_cache and plan.source.kind != "random"
    source_test = _source_test(plan, net.source, source_cache)
    if source_test["evaluated"] and not cached:
        cost.add_images(source_test["n_images"])
        cost.add_flops(flops_source * source_test["n_images"])
    return {"net": net, "optimizer": optimizer, "history": history, "global_step": global_step,
            "epoch": start_epoch + epochs, "run_seed": run_seed, "rng": rng_after_training,
            "target_test": target_test, "source_test": source_test}


def _quanta_weights(net: QuantaNetwork) -> list[list[float]]:
    """Each QUANTA layer's raw weights (w_S, w_T), as the seed's callback recorded them per epoch."""
    return [[float(w) for w in q.weight.detach().cpu()] for q in net.quanta]


def keras_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Our metric set under Keras' names (``accuracy`` -> ``categorical_accuracy``, ``tp`` ->
    ``true_positives``, ...), the names the seed's files hold; other keys are kept as they are."""
    return {KERAS_METRIC_NAMES.get(k, k): v for k, v in metrics.items()}


def seed_exports(plan: QuantaPlan, result: dict[str, Any]) -> dict[str, dict]:
    """The four JSON lines of the seed's files, with the seed's fields.

    ``quantas``: ``{"<layer>": {"quanta_weights": [[w_S, w_T] per epoch, the start first], "quantas":
    {"source": [lambda_S ...], "target": [lambda_T ...]}}}`` (plus ours: the epochs, module and
    activation); ``training``: Keras' metrics per epoch, keyed by the 0-based epoch; ``testing_*``:
    one ``model.evaluate`` dict in Keras' names (plus ours: the set, its size).
    """
    hist = result["history"]
    lam = list(zip(*hist["lambda_s"], strict=True))
    weights = hist.get("weights")
    quantas = {}
    for j, p in enumerate(plan.points):
        lam_s = [float(v) for v in lam[j]]
        # a checkpoint written before per-epoch weights were kept: w = (a, -a), lambda_S = sigmoid(2a)
        w = ([row[j] for row in weights] if weights else
             [[0.5 * float(np.log(v / (1 - v))), -0.5 * float(np.log(v / (1 - v)))] for v in lam_s])
        quantas[p.key] = {"quanta_weights": w, "quantas": {"source": lam_s, "target": [1.0 - v for v in lam_s]},
                          "epochs": hist["epochs"], "module": p.module, "activation": p.activation or "identity"}
    training = {}
    for i, row in enumerate(hist["training"]):
        rest = {k: v for k, v in row.items() if k != "epoch"}
        val = {f"val_{KERAS_METRIC_NAMES[k[4:]]}": v for k, v in rest.items()
               if k.startswith("val_") and k[4:] in KERAS_METRIC_NAMES}
        training[str(i)] = {**keras_metrics({k: v for k, v in rest.items() if not k.startswith("val_")}), **val}
    source = result["source_test"]
    return {
        "quantas": quantas,
        "training": training,
        "testing_target": {**keras_metrics(result["target_test"]), "dataset": plan.spec.dataset,
                           "n_images": len(plan.splits.test)},
        "testing_source": keras_metrics(source) if source.get("evaluated") else dict(source),
    }


def _write_exports(plan: QuantaPlan, r: int, result: dict[str, Any], run: RunHandle,
                   train_idx: np.ndarray) -> dict[str, Path]:
    """The seed's files for run r, rewritten whole, and logged as artifacts of the MLflow run."""
    names = export_names(r, plan.label)
    out = plan.out_dir
    net: QuantaNetwork = result["net"]
    hist = result["history"]
    rows = seed_exports(plan, result)
    paths = {key: _write_jsonl(out / names[key], [rows[key]])
             for key in ("quantas", "training", "testing_target", "testing_source")}
    if plan.source.kind == "trained" and plan.source.path is not None:  # the very file it was loaded from
        paths["source_model"] = _link_or_copy(plan.source.path, out / names["source_model"])
    else:
        source_meta = {"architecture": plan.spec.backbone, "dataset": plan.source.task,
                       "num_classes": plan.source.head_classes, "input_size": plan.spec.input_size,
                       "weights": plan.source.description, "quanta_run_id": run.run_id}
        paths["source_model"] = save_checkpoint({k: v.detach().cpu() for k, v in net.source.net.state_dict().items()},
                                                source_meta, out / names["source_model"])
    ckpt = {
        "format": RESUME_FORMAT, "architecture": plan.spec.backbone, "num_classes": plan.ds.num_classes,
        "points": [p.key for p in plan.points], "layer_to_transfer": plan.label if plan.label != "all" else "-1",
        "target_task": plan.spec.dataset, "source_weights": plan.source.weights, "run_seed": result["run_seed"],
        "epoch": result["epoch"], "global_step": result["global_step"],
        "target": {k: v.detach().cpu() for k, v in net.target.net.state_dict().items()},
        "quanta": {k: v.detach().cpu() for k, v in net.quanta.state_dict().items()},
        "optimizer": result["optimizer"].state_dict(), "rng": result["rng"], "history": hist,
        "train_indices": torch.from_numpy(np.asarray(train_idx, dtype=np.int64)), "mlflow_run_id": run.run_id,
    }
    tmp = out / f".{names['target_model']}.tmp{os.getpid()}"
    torch.save(ckpt, tmp)
    os.replace(tmp, out / names["target_model"])
    paths["target_model"] = out / names["target_model"]
    for key, path in paths.items():
        if not key.endswith("_model"):
            run.log_artifact(path, "exports")
    # lean artifacts: the source is referenced (param source_reference), never copied into the run; the target
    # checkpoint stays in the export folder (what --train_from_previous_training resumes) and is kept in the
    # run only when asked (--keep-weights)
    if plan.params.keep_weights:
        _attach(run, paths["target_model"], "models")
    return paths


def source_reference(source: SourcePlan, spec: ExperimentSpec) -> str:
    """What a QUANTA run records instead of a copy of its source: the Source training run id, the weights
    file with its content hash, the pretrained weights' name, or the control's seed."""
    if source.run_id and source.weights.strip() == source.run_id:  # -sw RUN_ID: the run holds the weights
        return f"run:{source.run_id}"
    if source.kind == "trained" and source.path is not None:
        ref = f"file:{source.path.resolve()} sha256:{_file_sha256(source.path)[:16]}"
        return f"{ref} run:{source.run_id}" if source.run_id else ref  # a file train-source wrote knows its run
    if source.kind == "pretrained":
        return f"pretrained:{spec.backbone}/{source.weights}"
    return f"random:{spec.backbone} drawn from each run's seed (seed {spec.seed} + run index)"


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The method


def _summary(plan: QuantaPlan, rows: list[dict[str, Any]], run_ids: list[str]) -> str:
    spec, params = plan.spec, plan.params
    lines = [f"QUANTA {spec.backbone}: {plan.source.name} -> {spec.dataset}, source {plan.source.description}, "
             f"{params.nb_of_target_epochs} epoch(s), {len(rows)} run(s); MLflow experiment QUANTA, run(s) "
             f"{', '.join(run_ids)}"]
    lines.append(f"  {'layer':14s} {'module':14s} " + " ".join(f"{'run ' + str(r['run']):>15s}" for r in rows))
    for j, p in enumerate(plan.points):
        cells = []
        for r in rows:
            lam = r["history"]["lambda_s"]
            cells.append(f"{lam[0][j]:.4f}->{lam[-1][j]:.4f}")
        lines.append(f"  {p.key:14s} {p.module:14s} " + " ".join(f"{c:>15s}" for c in cells))
    for r in rows:
        src = r["source_test"]
        src_text = (f"source test accuracy {src['accuracy']:.1%} ({src['task']})" if src["evaluated"]
                    else f"source {src['note']}")
        lines.append(f"  run {r['run']}: target test accuracy {r['target_test']['accuracy']:.1%} "
                     f"({len(plan.splits.test)} images), {src_text}")
    lines.append(f"  lambda_S per layer, start -> end. Exports: {plan.out_dir}")
    if plan.source.kind != "random":
        lines.append("  lambda_S alone is not a verdict: run the control with -sw random and compare layer by layer.")
    return "\n".join(lines)


def quanta(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    params: QuantaParams = spec.params
    with tempfile.TemporaryDirectory(prefix="tlcore-quanta-") as tmp:
        plan = prepare(spec, tracker, reporter, Path(tmp))
        if params.show_only_build:
            return RunResult("quanta", summary=show_build(plan))
        configure_device(plan.device)

        # FLOPs per image, counted once on the meta device: a training step (source forward up to the
        # last point + target forward and backward), an evaluation forward, the source's full forward
        with torch.device("meta"):
            meta_net = QuantaNetwork(
                plan.source.backbone or create_backbone(spec.backbone, "random", num_classes=plan.source.head_classes),
                create_backbone(spec.backbone, "random", num_classes=plan.ds.num_classes), plan.points)
        # (a batch of 2: BatchNorm in train mode cannot take one image at 1x1 resolution)
        flops_train = count_flops(meta_net, spec.input_size, train=True, batch=2)
        flops_source = count_flops(meta_net.source, spec.input_size, batch=2).forward
        del meta_net

        keys = [p.key for p in plan.points]
        common = {
            "method": "quanta", "dataset": spec.dataset, "backbone": spec.backbone, "weights": plan.source.description,
            "seed": spec.seed, "device": str(plan.device), "model_selection": False, "use_crops": False,
            "target_task": spec.dataset, "source_task": plan.source.task, "source_kind": plan.source.kind,
            "source_weights": plan.source.weights, "source_run_id": plan.source.run_id,
            "source_reference": source_reference(plan.source, spec), "keep_weights": params.keep_weights,
            "source_head_classes": plan.source.head_classes, "source_metrics": plan.source_eval_note,
            "layer_to_transfer": params.layer_to_transfer, "quanta_layers": ",".join(keys),
            "quanta_modules": ",".join(p.module for p in plan.points), "n_quanta_layers": len(keys),
            "epochs": params.nb_of_target_epochs, "nb_of_target_epochs": params.nb_of_target_epochs,
            "nb_of_runs": params.nb_of_runs, "optimizer": "adam", "learning_rate": params.learning_rate,
            "quanta_lr": params.quanta_lr or params.learning_rate, "batch_size": spec.batch_size,
            "augment_data": params.augment_data, "resolution": spec.input_size, "num_classes": plan.ds.num_classes,
            "n_val_images": len(plan.splits.val), "n_test_images": len(plan.splits.test),
            "split_origin": plan.splits.origin, "outdir": str(plan.out_dir),
            "resumed_from": str(plan.resume_path) if plan.resume_path else None,
            "start_epoch": int(plan.resume["epoch"]) if plan.resume else 0, "job": spec.job or "",
        }
        rows: list[dict[str, Any]] = []
        source_cache: dict = {}
        n_spc = params.nb_of_target_samples or int(plan.ds.class_counts(plan.train_indices(0)).min())
        kind = {"random": "random source (control)", "pretrained": "pretrained source"}.get(plan.source.kind,
                                                                                              "trained source")
        with Sweep(spec, tracker, reporter, params.nb_of_runs, common, variant=f"QUANTA {kind}") as sweep:
            for r in range(params.nb_of_runs):
                train_idx = plan.train_indices(r)
                point = _RunPoint(n_spc, r, train_idx, "test", plan.splits.test, plan.splits.val, plan.splits.test,
                                  layer=plan.label)
                extra = {"run_index": r, "run_seed": int(plan.resume["run_seed"]) if plan.resume else spec.seed + r}
                if params.nb_of_target_samples is None:
                    extra["samples_per_class"] = "all"
                with sweep.child(point, extra) as (run, sub):
                    if plan.source.kind != "random" and plan.source.backbone is not None:
                        plan.source.backbone.to(plan.device)
                    cost = CostMeter(plan.device, energy_settings(spec)).start()
                    try:
                        result = _run_one(plan, run, sub, cost, r, train_idx, flops_train.train_step,
                                          flops_train.forward, flops_source, source_cache)
                    finally:
                        report = cost.stop()
                    sub.update(stage=f"run {r + 1}/{params.nb_of_runs}: writing exports", fraction=0.97)
                    _write_exports(plan, r, result, run, train_idx)
                    final = {**prefixed("test", result["target_test"]), **report.metrics()}
                    if result["source_test"]["evaluated"]:
                        final.update(prefixed("source_test", {k: v for k, v in result["source_test"].items()
                                                              if k in METRIC_NAMES}))
                    run.log_metrics(final)
                    run.log_params({"energy_method": report.energy_method,
                                    "flops_train_step_per_image": flops_train.train_step})
                    rows.append({"run": r, "run_id": run.run_id, "history": result["history"],
                                 "target_test": result["target_test"], "source_test": result["source_test"]})
                    del result
        run_ids = sweep.child_ids
    metrics = {"test_accuracy": float(np.mean([r["target_test"]["accuracy"] for r in rows]))}
    for j, k in enumerate(keys):
        metrics[f"quanta_source/{k}"] = float(np.mean([r["history"]["lambda_s"][-1][j] for r in rows]))
    return RunResult("quanta", run_ids, sweep.parent.run_id if sweep.parent else None, metrics,
                     _summary(plan, rows, run_ids), {"exports": str(plan.out_dir)})


