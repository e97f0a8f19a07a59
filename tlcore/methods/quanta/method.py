"""The QUANTA method: prepare, then one MLflow child run per run index, and the summary.

Run r trains on draw r of the split set (per-class samples, stratified and seeded; the test set
stays whole).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.measure import CostMeter, FlopCount, count_flops
from tlcore.methods.base import RunResult
from tlcore.methods.common import SplitPoint, Sweep
from tlcore.methods.quanta.exports import _write_exports
from tlcore.methods.quanta.plan import QuantaPlan, prepare, show_build
from tlcore.methods.quanta.sources import source_reference
from tlcore.methods.quanta.training import _run_one
from tlcore.methods.source_training import energy_settings
from tlcore.methods.supervised import METRIC_NAMES, configure_device, prefixed
from tlcore.models import create_backbone
from tlcore.models.quanta_layer import QuantaNetwork
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, QuantaParams
from tlcore.tracking import RunHandle, Tracker


@dataclass(frozen=True)
class _RunPoint(SplitPoint):
    layer: str = "all"

    @property
    def label(self) -> str:
        return f"run {self.split} l={self.layer}"

    @property
    def name(self) -> str:
        return f"run {self.split} · " + ("every layer" if self.layer == "all" else f"layer {self.layer}")


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


def _count_flops(plan: QuantaPlan) -> tuple[FlopCount, int]:
    """FLOPs per image, counted once on the meta device: a training step (source forward up to the
    last point + target forward and backward), an evaluation forward, the source's full forward."""
    spec = plan.spec
    with torch.device("meta"):
        meta_net = QuantaNetwork(
            plan.source.backbone or create_backbone(spec.backbone, "random", num_classes=plan.source.head_classes),
            create_backbone(spec.backbone, "random", num_classes=plan.ds.num_classes), plan.points)
    # (a batch of 2: BatchNorm in train mode cannot take one image at 1x1 resolution)
    flops_train = count_flops(meta_net, spec.input_size, train=True, batch=2)
    flops_source = count_flops(meta_net.source, spec.input_size, batch=2).forward
    return flops_train, flops_source


def _run_params(plan: QuantaPlan, keys: list[str]) -> dict[str, Any]:
    """The MLflow params every run of the experiment shares."""
    spec, params = plan.spec, plan.params
    return {
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


def _child_run(plan: QuantaPlan, run: RunHandle, sub: Reporter, r: int, train_idx: np.ndarray,
               flops_train: FlopCount, flops_source: int, source_cache: dict) -> dict[str, Any]:
    """Run r in its MLflow run: train and test, write the exports, log the final metrics; its summary row."""
    spec, params = plan.spec, plan.params
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
    return {"run": r, "run_id": run.run_id, "history": result["history"],
            "target_test": result["target_test"], "source_test": result["source_test"]}


def run_pairs(spec: ExperimentSpec) -> list[tuple[int, int]]:
    """QUANTA's runs as points a cluster runs apart, (samples per class, run index): each run trains its own
    target network. A job of ``spec.points`` runs the runs whose index is a point's draw."""
    p: QuantaParams = spec.params
    if p.show_only_build:
        return []
    return [(p.nb_of_target_samples or 1, r) for r in range(p.nb_of_runs)]


def quanta(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    params: QuantaParams = spec.params
    with tempfile.TemporaryDirectory(prefix="tlcore-quanta-") as tmp:
        plan = prepare(spec, tracker, reporter, Path(tmp))
        if params.show_only_build:
            return RunResult("quanta", summary=show_build(plan))
        configure_device(plan.device)
        flops_train, flops_source = _count_flops(plan)

        keys = [p.key for p in plan.points]
        common = _run_params(plan, keys)
        rows: list[dict[str, Any]] = []
        source_cache: dict = {}
        n_spc = params.nb_of_target_samples or int(plan.ds.class_counts(plan.train_indices(0)).min())
        kind = {"random": "random source (control)", "pretrained": "pretrained source"}.get(plan.source.kind,
                                                                                              "trained source")
        runs = [r for r in range(params.nb_of_runs) if spec.points is None or r in {k for _, k in spec.points}]
        with Sweep(spec, tracker, reporter, len(runs), common, variant=f"QUANTA {kind}") as sweep:
            for r in runs:
                train_idx = plan.train_indices(r)
                point = _RunPoint(n_spc, r, train_idx, "test", plan.splits.test, plan.splits.val, plan.splits.test,
                                  layer=plan.label)
                extra = {"run_index": r, "run_seed": int(plan.resume["run_seed"]) if plan.resume else spec.seed + r}
                if params.nb_of_target_samples is None:
                    extra["samples_per_class"] = "all"
                with sweep.child(point, extra) as (run, sub):
                    rows.append(_child_run(plan, run, sub, r, train_idx, flops_train, flops_source, source_cache))
        run_ids = sweep.child_ids
    metrics = {"test_accuracy": float(np.mean([r["target_test"]["accuracy"] for r in rows]))}
    for j, k in enumerate(keys):
        metrics[f"quanta_source/{k}"] = float(np.mean([r["history"]["lambda_s"][-1][j] for r in rows]))
    return RunResult("quanta", run_ids, sweep.parent.run_id if sweep.parent else None, metrics,
                     _summary(plan, rows, run_ids), {"exports": str(plan.out_dir)})
