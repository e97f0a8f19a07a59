"""What every run of a fine-tuning experiment shares, around the loop: the checks that need the
backbone and the device (done once, before any run opens), the params each run logs, its batch
size, and the sweep's cost and summary table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from tlcore.data import ImageDataset
from tlcore.data.loading import N_CROPS
from tlcore.devices import resolve_device
from tlcore.errors import BackboneError, SpecError
from tlcore.measure.energy import EnergySettings
from tlcore.methods import common
from tlcore.methods.base import EXPERIMENTS
from tlcore.methods.fine_tuning.images import ImageCache
from tlcore.methods.fine_tuning.loop import Context
from tlcore.methods.fine_tuning.model import bn_statistics
from tlcore.models import create_backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FineTuningParams
from tlcore.tracking import Tracker


def ft_params(p: FineTuningParams, bn_mode: str) -> dict[str, Any]:
    """The schema's method params, as the seed named them (plus ours)."""
    out = {"configuration": p.configuration, "optimizer": p.optimizer, "learning_rate": p.learning_rate,
           "weight_decay": 0.0 if p.optimizer == "adam" else p.weight_decay,
           "momentum": p.momentum if p.optimizer == "sgd" else "none", "epochs": p.epochs, "patience": p.patience,
           "early_stop_from_epoch": p.early_stop_from_epoch, "grad_clip_norm": p.grad_clip_norm,
           "grad_clip_mode": p.grad_clip_mode, "bn_statistics": bn_mode, "amp": p.amp}
    if p.configuration == "lp-ft":
        out["lp_epochs"] = p.lp_epochs
    return out


def run_params(ctx: Context, splits) -> dict[str, Any]:
    """Every param design.md's schema asks for, logged on the sweep's parent and each run."""
    config, units = ctx.spec.params.configuration, len(ctx.base.freeze_unit_names())
    frozen = f"{units}/{units} (head only), then 0/{units}" if config == "lp-ft" else \
        f"{ctx.base.frozen_unit_count(int(config))}/{units}"
    return {**common.common_params(ctx.spec, ctx.ds, splits), **ft_params(ctx.spec.params, ctx.bn_mode),
            "device": str(ctx.device), "frozen_units": frozen}


def prepare(spec: ExperimentSpec, ds: ImageDataset, reporter: Reporter) -> Context:
    """Checks that need the backbone, the device and the pretrained weights, before any run opens."""
    p: FineTuningParams = spec.params
    if p.configuration == "lp-ft" and p.lp_epochs >= p.epochs:
        raise SpecError(f"The 'lp_epochs' parameter of FineTuningParams must be smaller than 'epochs' ({p.epochs}) "
                        f"for configuration 'lp-ft', or nothing is fine-tuned after the linear probe. "
                        f"Got {p.lp_epochs} instead.")
    if p.optimizer == "adam" and p.weight_decay:
        reporter.message("adam uses no weight decay (as the seed); --weight-decay is ignored. Use --optimizer adamw "
                         "for decoupled weight decay with Adam.", "warning")
    device = resolve_device(spec.device)
    base = create_backbone(spec.backbone, spec.weights, download=spec.download_weights)
    valid = [*base.configurations(), "lp-ft"]
    if p.configuration not in valid:
        raise BackboneError(f"Configuration {p.configuration!r} is not defined for {spec.backbone}; valid "
                            f"configurations are {', '.join(map(str, valid))} (0 = train everything, 3 = freeze "
                            "about three quarters).")
    bn_mode = bn_statistics(p)
    if bn_mode == "running" and base.weights_name == "random":
        bn_mode = "batch"
        reporter.message("Randomly initialised BatchNorm layers have no running statistics to use: they train on "
                         "batch statistics (--bn-statistics batch).", "warning")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    prep = replace(base.preprocessing, input_size=spec.input_size)
    energy = EnergySettings(spec.country_iso_code, spec.carbon_intensity_g_per_kwh, spec.measure_energy)
    cache = ImageCache(ds, prep, spec, device, p.cache_images_mb)
    return Context(spec, ds, base, device, prep, cache, energy, bn_mode)


def batch_size_for(ctx: Context, point: common.SplitPoint, reporter: Reporter) -> int:
    """The spec's batch size, shrunk (with a warning) to the training set when that is smaller."""
    crops = N_CROPS if ctx.cache.crops else 1
    bs = ctx.spec.batch_size
    if bs > len(point.train) * crops:
        shrunk = len(point.train) * crops
        msg = (f"--batch-size {bs} is larger than the {len(point.train)} training images of {point.label}; "
               f"using {shrunk} (the whole training set per step).")
        if msg not in ctx.messages:
            ctx.messages.add(msg)
            reporter.message(msg, "warning")
        return shrunk
    return bs


@dataclass
class Outcome:
    """One run of a sweep: its point, its MLflow run and its final metrics."""

    point: common.SplitPoint
    run_id: str
    metrics: dict[str, float]


def sweep_cost(outcomes: list[Outcome], wall_s: float) -> dict[str, float]:
    """What the whole sweep cost, for its parent run (:func:`tlcore.methods.common.sweep_cost`)."""
    return common.sweep_cost([o.metrics for o in outcomes], wall_s)


def summary_table(spec: ExperimentSpec, outcomes: list[Outcome], tracker: Tracker | None = None) -> str:
    """One line per run (samples per class, split, epochs, best epoch, val/test accuracy, time, FLOPs),
    then the mean per samples-per-class value: the few-shot curve in text."""
    p = spec.params
    lines = [f"Fine-tuning {spec.backbone} on {spec.dataset}: configuration {p.configuration}, {p.optimizer} "
             f"lr {p.learning_rate:g}, {len(outcomes)} run(s)", ""]
    header = f"{'spc':>5} {'split':>5} {'epochs':>6} {'best':>4} {'val acc':>8} {'test acc':>9} {'time s':>8} " \
             f"{'GFLOPs':>9}  run"
    lines += [header, "-" * len(header)]
    by_spc: dict[int, list[float]] = {}
    for o in outcomes:
        m = o.metrics
        test = m.get("test_accuracy")
        lines.append(f"{o.point.spc:>5} {o.point.split:>5} {m.get('epochs_run', float('nan')):>6.0f} "
                     f"{m.get('best_epoch', float('nan')):>4.0f} {m.get('best_val_accuracy', float('nan')):>8.1%} "
                     f"{'' if test is None else f'{test:.1%}':>9} {m.get('time_total_s', float('nan')):>8.1f} "
                     f"{m.get('flops_total', float('nan')) / 1e9:>9.1f}  {o.run_id}")
        score = test if test is not None else m.get("best_val_accuracy")
        if score is not None:
            by_spc.setdefault(o.point.spc, []).append(score)
    if len(outcomes) > 1:
        lines.append("")
        scored = "test" if outcomes[0].point.eval_set == "test" else "val"
        lines.append(f"Mean {scored} accuracy (balanced) per samples per class:")
        for spc, accs in sorted(by_spc.items()):
            sd = f" ± {np.std(accs) * 100:.1f}" if len(accs) > 1 else ""
            lines.append(f"  {spc:>5}: {np.mean(accs):.1%}{sd} ({len(accs)} run{'s' if len(accs) > 1 else ''})")
    if tracker is not None:
        lines += ["", f"Results: {tracker.uri} (experiment {EXPERIMENTS['ft']!r})"]
    return "\n".join(lines)
