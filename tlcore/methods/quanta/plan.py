"""Preparation: everything a QUANTA experiment needs, checked before a run opens, and ``--show_only_build``.

Source metrics: the source's head predicts the *source* task's classes, so the source is scored on
the source task's test set (``-s``, or the task recorded with the weights), where its head means
something; with the same task on both sides that is the target's test set, as in the reference.
With no known source task (ImageNet weights), the source is not scored and the run says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tlcore.data import ImageDataset, SplitSet, load_dataset, resolve_splits
from tlcore.data.loading import Preprocessing
from tlcore.devices import resolve_device
from tlcore.errors import DatasetError, TLError, WeightsError
from tlcore.methods.quanta.names import RESUME_FORMAT, export_dir
from tlcore.methods.quanta.sources import SourcePlan, _random_source, resolve_source
from tlcore.methods.supervised import seed_everything
from tlcore.models import Backbone, BackboneConfig, backbone_config, create_backbone
from tlcore.models.quanta_layer import QuantaNetwork, QuantaPoint, layer_label, quanta_points, select_points
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, QuantaParams
from tlcore.tracking import Tracker


@dataclass
class QuantaPlan:
    """Everything one QUANTA experiment needs, resolved and checked by :func:`prepare`."""

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
    """The target checkpoint ``--train_from_previous_training`` continues, checked against this command line."""
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

    ds, splits = _load_target(spec, reporter)

    reporter.update(stage="loading the source", fraction=0.0)
    source = resolve_source(spec, tracker, ds.num_classes, tmp_dir)
    trained_on = source.meta.get("dataset")
    if params.source_task and trained_on and params.source_task != trained_on:
        reporter.message(f"-s {params.source_task} is not the task the source was trained on ({trained_on}); the "
                         f"source is scored on {params.source_task}.", "warning")
    source_eval, note = _source_evaluation(spec, ds, splits, source, reporter)

    resume, resume_path = None, None
    if params.train_from_previous_training:
        resume, resume_path = _load_resume(params.train_from_previous_training, cfg, points, ds.num_classes,
                                           params.nb_of_runs)

    out_dir = export_dir(params.outdir, source.name, spec.dataset)
    if not params.show_only_build:
        _make_out_dir(out_dir)
    return QuantaPlan(spec, device, cfg, prep, points, label, ds, splits, source, source_eval, note, out_dir,
                      resume, resume_path)


def _load_target(spec: ExperimentSpec, reporter: Reporter) -> tuple[ImageDataset, SplitSet]:
    """The target task and its splits; an empty test set is refused (nothing would score the target)."""
    reporter.update(stage="loading data", fraction=0.0)
    ds = load_dataset(spec.dataset, spec.data_dir, spec.download)
    n = spec.params.nb_of_target_samples
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
    return ds, splits


def _source_evaluation(spec: ExperimentSpec, ds: ImageDataset, splits: SplitSet, source: SourcePlan,
                       reporter: Reporter) -> tuple[tuple[ImageDataset, np.ndarray] | None, str]:
    """The test set the source is scored on (its own task's) and the note saying so, or why it is not scored.

    Sets the head width of a random source (it predicts the classes of its task, else the target's).
    """
    source_seed = source.meta.get("seed")
    source_seed = spec.seed if source_seed in (None, "", "none") else int(source_seed)
    if source.task is None:
        if source.kind == "random":
            source.head_classes = ds.num_classes
            return None, "not scored: no source task given (-s)"
        if source.kind == "pretrained":
            return None, ("not scored: its head predicts ImageNet classes and no ImageNet test set is here "
                          f"(reference top-1 {source.reference_top1}%)")
        return None, "not scored: the source task is unknown (pass -s with the dataset its head was trained on)"
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
    note = f"scored on the test set of its own task {source.task} ({len(stest)} images)"
    if source.task != spec.dataset:
        note += "; its head predicts the source's classes, not the target's"
    return (sds, stest), note


def _make_out_dir(out_dir: Path) -> None:
    """Create the export folder now, so an unwritable ``-o`` fails before any training."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLError(f"Cannot create the output folder {out_dir} ({exc.strerror}); pass -o with a writable "
                      "folder.") from None
    if not os.access(out_dir, os.W_OK):
        raise TLError(f"The output folder {out_dir} is not writable; pass -o with a writable folder.")


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
    """Both networks layer by layer, the QUANTA points marked; nothing trains, no run opens."""
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
