"""Fine-tuning: a new head on a pretrained backbone, freezing configurations 0-3 or LP-FT, the seed's
optimiser, early stop and best-weights restore, and a checkpoint each epoch so a killed run resumes.

The protocol is tl-tradeoff's ``fine_tuning.py``: SGD with momentum and decoupled weight decay
(tf-addons' SGDW) or Adam, each gradient tensor clipped to norm 1 (Keras ``clipnorm``), up to 40
epochs, stop from the 11th epoch once the val loss has not decreased for 3 epochs, restore the
weights of the best val accuracy, then one test pass (10 crops vote when crops are used). LP-FT
(Kumar et al., ICLR 2022) trains the head on frozen features first, then everything.

Speed: images are decoded once per experiment and kept as uint8 (on the GPU when they fit),
normalised on the device; on CUDA also AMP (bf16, else fp16 with a GradScaler), channels_last
and cudnn.benchmark, none of which is used on CPU. Frozen layers hold parameters without
``requires_grad``, so autograd records nothing before the first trainable layer.

The package: ``optim`` (SGDW, clipping), ``model`` (head, freezing), ``images`` (the decoded-image
cache), ``checkpoint`` (files, cost of interrupted sessions, what a resume checks), ``loop`` (one
run: epochs, early stop, best-val restore), ``runs`` (checks, params, summary); here the method's
entry: start a sweep, or resume one.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from tlcore.errors import TLError
from tlcore.measure import flops_per_image
from tlcore.methods import common
from tlcore.methods.base import EXPERIMENTS, RunResult
from tlcore.methods.fine_tuning.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    COST_FILE,
    SPEC_FILE,
    CostSoFar,
    Progress,
    check_resumable,
    checkpoint_dir,
    ensure_local_checkpoint,
    read_stored_spec,
    stored_spec_dict,
)
from tlcore.methods.fine_tuning.images import ImageCache, ImageSet, batch_slices
from tlcore.methods.fine_tuning.loop import (
    Context,
    DeviceOutOfMemory,
    Evaluation,
    autocast_dtype,
    evaluate,
    point_seed,
    should_stop_early,
    train_point,
)
from tlcore.methods.fine_tuning.model import HEAD_ONLY, bn_statistics, build_model, set_trainable, stage_for_epoch
from tlcore.methods.fine_tuning.optim import SGDW, build_optimizer, clip_gradients_
from tlcore.methods.fine_tuning.runs import (
    Outcome,
    batch_size_for,
    ft_params,
    prepare,
    run_params,
    summary_table,
    sweep_cost,
)
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import Tracker

# what tests, benchmarks and other modules import from ``tlcore.methods.fine_tuning``
__all__ = [
    "BEST_FILE", "CHECKPOINT_FILE", "COST_FILE", "HEAD_ONLY", "SGDW", "SPEC_FILE", "Context", "CostSoFar",
    "DeviceOutOfMemory", "Evaluation", "ImageCache", "ImageSet", "Outcome", "Progress", "autocast_dtype",
    "batch_size_for", "batch_slices", "bn_statistics", "build_model", "build_optimizer", "checkpoint_dir",
    "clip_gradients_", "ensure_local_checkpoint", "evaluate", "fine_tune", "flops_per_image", "ft_params",
    "point_seed", "prepare", "resume",
    "run_params", "set_trainable", "should_stop_early", "stage_for_epoch", "summary_table", "sweep_cost",
    "train_point",
]


def fine_tune(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    """Fine-tune ``spec.backbone`` on every planned split (or continue ``spec.params.resume``)."""
    if spec.params.resume:
        return resume(spec, reporter, tracker)
    started = time.perf_counter()
    ds, splits = common.load_data(spec, reporter)
    points = common.plan_points(spec, ds, splits)
    ctx = prepare(spec, ds, reporter)
    params = run_params(ctx, splits)
    stored = stored_spec_dict(spec)
    outcomes: list[Outcome] = []
    with common.Sweep(spec, tracker, reporter, len(points), params) as sweep:
        if sweep.parent is not None:
            sweep.parent.log_dict(stored, SPEC_FILE)
        for point in points:
            bs = batch_size_for(ctx, point, reporter)
            with sweep.child(point, {"batch_size": bs, "batch_size_requested": spec.batch_size}) as (run, sub):
                run.log_dict(stored, SPEC_FILE)
                outcomes.append(Outcome(point, run.run_id, train_point(ctx, point, run, sub, bs, resume=run.reopened)))
        if sweep.parent is not None:
            sweep.parent.log_metrics(sweep_cost(outcomes, time.perf_counter() - started))
    return _result(spec, outcomes, sweep.parent.run_id if sweep.parent else None, tracker)


def resume(cli_spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    """Continue a KILLED or FAILED fine-tuning run (or every unfinished run of a sweep) in the same MLflow runs.

    The runs' own settings are used; only where and how it runs (device, workers, tracking store,
    energy settings) comes from ``cli_spec``.
    """
    run_id = cli_spec.params.resume
    run = check_resumable(tracker, run_id)
    stored = read_stored_spec(tracker, run)
    spec = replace(stored, device=cli_spec.device, num_workers=cli_spec.num_workers, mlflow_path=cli_spec.mlflow_path,
                   measure_energy=cli_spec.measure_energy, country_iso_code=cli_spec.country_iso_code,
                   carbon_intensity_g_per_kwh=cli_spec.carbon_intensity_g_per_kwh)
    spec.validate()
    ds, splits = common.load_data(spec, reporter)
    points = common.plan_points(spec, ds, splits)
    ctx = prepare(spec, ds, reporter)
    reporter.message(f"Resuming {run_id}: {spec.backbone} on {spec.dataset}, configuration {spec.params.configuration} "
                     "(the run's own settings).")

    def point_of(params: dict[str, str]) -> common.SplitPoint:
        for pt in points:
            if str(pt.spc) == params.get("samples_per_class") and str(pt.split) == params.get("split"):
                return pt
        raise TLError(f"Run {run_id}'s split (samples_per_class={params.get('samples_per_class')}, "
                      f"split={params.get('split')}) is no longer in the split set of {spec.dataset}; it cannot be "
                      "resumed.")

    def continue_child(child, point: common.SplitPoint, sub: Reporter) -> Outcome:
        handle = tracker.resume_run(child.info.run_id)
        reporter.run_started(handle.run_id, EXPERIMENTS["ft"], f"{point.label} (resumed)")
        bs = int(child.data.params.get("batch_size", spec.batch_size))
        with handle:
            return Outcome(point, handle.run_id, train_point(ctx, point, handle, sub, bs, resume=True))

    if run.data.tags.get("sweep_parent") != "true":
        outcome = continue_child(run, point_of(run.data.params), reporter)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id and tracker.get_run(parent_id).info.status != "FINISHED":
            reporter.message(f"This run belongs to sweep run {parent_id}; `--resume {parent_id}` runs the sweep's "
                             "other unfinished points.")
        return _result(spec, [outcome], None, tracker)

    # a sweep: finished children stay, unfinished ones continue, missing ones start under the same parent
    children = {(c.data.params.get("samples_per_class"), c.data.params.get("split")): c
                for c in tracker.client.search_runs([run.info.experiment_id],
                                                    f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10000)}
    params = run_params(ctx, splits)
    sweep = common.Sweep(spec, tracker, reporter, len(points), params, sweep_id=run.data.tags.get("sweep_id"))
    sweep.parent = tracker.resume_run(run_id)
    reporter.run_started(run_id, EXPERIMENTS["ft"], "sweep parent (resumed)")
    stored_dict = stored_spec_dict(spec)
    outcomes = []
    with sweep.parent:
        for point in points:
            child = children.get((str(point.spc), str(point.split)))
            if child is not None and child.info.status == "FINISHED":
                outcomes.append(Outcome(point, child.info.run_id, dict(child.data.metrics)))
            elif child is not None:
                sub = reporter.scaled(sweep.done / sweep.n_points, (sweep.done + 1) / sweep.n_points)
                check_resumable(tracker, child.info.run_id)
                outcomes.append(continue_child(child, point, sub))
            else:
                bs = batch_size_for(ctx, point, reporter)
                with sweep.child(point, {"batch_size": bs, "batch_size_requested": spec.batch_size}) as (new, sub):
                    new.log_dict(stored_dict, SPEC_FILE)
                    outcomes.append(Outcome(point, new.run_id, train_point(ctx, point, new, sub, bs)))
                continue
            sweep.child_ids.append(outcomes[-1].run_id)
            sweep.done += 1
    return _result(spec, outcomes, run_id, tracker)


def _result(spec: ExperimentSpec, outcomes: list[Outcome], parent_id: str | None, tracker: Tracker) -> RunResult:
    scored = "test" if outcomes and outcomes[0].point.eval_set == "test" else "best_val"
    key = f"{scored}_accuracy"
    headline: dict[str, float] = {}
    if len(outcomes) == 1:
        headline = dict(outcomes[0].metrics)
    elif outcomes:
        accs = [o.metrics.get(key, float("nan")) for o in outcomes]
        headline = {f"{key}_mean": float(np.nanmean(accs)),
                    "time_total_s": float(sum(o.metrics.get("time_total_s", 0.0) for o in outcomes)),
                    "flops_total": float(sum(o.metrics.get("flops_total", 0.0) for o in outcomes))}
    return RunResult("ft", [o.run_id for o in outcomes], parent_id, headline, summary_table(spec, outcomes, tracker))

