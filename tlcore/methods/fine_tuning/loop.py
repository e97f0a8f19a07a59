"""One fine-tuning run, top to bottom: set up the model and optimiser (or restore them from a
checkpoint), train epoch by epoch with a val pass each, keep the best val weights, stop early,
checkpoint, then restore the best weights and score them on the evaluation set.

The protocol is tl-tradeoff's: up to 40 epochs, stop from the 11th once the val loss has not
decreased for 3 epochs, restore the weights of the best val accuracy, then one test pass (10 crops
vote when crops are used). On CUDA also AMP (bf16, else fp16 with a GradScaler) and channels_last.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlcore.data import ImageDataset
from tlcore.data.loading import N_CROPS, Preprocessing, normalize_batch
from tlcore.devices import synchronize
from tlcore.errors import TLError
from tlcore.measure import CostMeter, CostReport, flops_per_image
from tlcore.measure.energy import EnergySettings
from tlcore.methods import common
from tlcore.methods.fine_tuning.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    COST_FILE,
    CostSoFar,
    Progress,
    atomic_save,
    checkpoint_dir,
    checkpoint_every_s,
    discard_checkpoint,
    ensure_local_checkpoint,
    load_checkpoint,
    save_checkpoint,
    snapshot,
    upload_checkpoint,
)
from tlcore.methods.fine_tuning.images import ImageCache, batch_slices
from tlcore.methods.fine_tuning.model import HEAD_ONLY, build_model, set_trainable, stage_for_epoch
from tlcore.methods.fine_tuning.optim import build_optimizer, clip_gradients_
from tlcore.methods.supervised import check_finite_loss, evaluation_mode, set_rng_state
from tlcore.models import Backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FineTuningParams
from tlcore.tracking import RunHandle


class DeviceOutOfMemory(TLError):
    """The accelerator ran out of memory; the message suggests a smaller batch."""


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


@dataclass
class Context:
    """What every training of an experiment shares, prepared once."""

    spec: ExperimentSpec
    ds: ImageDataset
    base: Backbone  # pretrained, original head, on CPU
    device: torch.device
    prep: Preprocessing
    cache: ImageCache
    energy: EnergySettings
    bn_mode: str = "running"
    messages: set[str] = field(default_factory=set)


def point_seed(seed: int, point: common.SplitPoint) -> int:
    """One run's seed (head initialisation, shuffles), drawn from the experiment's seed and the point."""
    return int(np.random.SeedSequence([seed, point.spc, point.split]).generate_state(1)[0])


def should_stop_early(val_losses: Sequence[float], patience: int = 3, start_epoch: int = 11) -> bool:
    """The seed's early stop: from epoch ``start_epoch`` on (1-based), stop once each of the last
    ``patience`` epochs had a val loss no lower than the epoch before it.

    >>> should_stop_early([5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1])
    True
    """
    epoch = len(val_losses)
    if epoch < start_epoch or epoch <= patience:
        return False
    last = list(val_losses[-(patience + 1):])
    return all(later >= earlier for earlier, later in itertools.pairwise(last))


def autocast_dtype(device: torch.device, amp: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, needs a GradScaler): bf16 on GPUs that have it, else fp16 + scaler; nothing off CUDA."""
    if device.type != "cuda" or not amp:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


@dataclass
class Evaluation:
    """Loss and predictions of one pass over a set; ``metrics`` scores them (balanced accuracy first)."""

    loss: float  # mean cross-entropy per network input (each crop counts)
    y_true: np.ndarray
    y_pred: np.ndarray  # per image (crops: majority vote)
    n_inputs: int

    def metrics(self, prefix: str) -> dict[str, float]:
        return {**common.score_metrics(prefix, self.y_true, self.y_pred), f"{prefix}_loss": self.loss}


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             to_input: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
             autocast: Callable[[], Any] = contextlib.nullcontext,
             between_batches: Callable[[], None] | None = None) -> Evaluation:
    """Loss and predictions over ``batches`` in eval mode under inference mode; the mode is restored after.

    ``between_batches`` runs before each batch (a cancel check).
    """
    loss_sum = torch.zeros((), device=device)
    labels, predictions, crop_probs = [], [], []
    n_inputs = 0
    with evaluation_mode(model, inference=True):
        for x, y in batches:
            if between_batches is not None:
                between_batches()
            x, y = to_input(x), y.to(device, non_blocking=True)
            crops = x.shape[0] // len(y)
            with autocast():
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y.repeat_interleave(crops), reduction="sum")
            n_inputs += x.shape[0]
            labels.append(y)
            if crops > 1:
                crop_probs.append(logits.softmax(-1).view(len(y), crops, -1))
            else:
                predictions.append(logits.argmax(-1))
    y_true = torch.cat(labels).cpu().numpy()
    if crop_probs:
        probs = torch.cat(crop_probs).cpu().numpy()
        y_pred = common.vote(probs.argmax(-1), probs)
    else:
        y_pred = torch.cat(predictions).cpu().numpy()
    return Evaluation(loss_sum.item() / max(n_inputs, 1), y_true, y_pred, n_inputs)


def train_point(ctx: Context, point: common.SplitPoint, run: RunHandle, reporter: Reporter, batch_size: int,
                resume: bool = False) -> dict[str, float]:
    """Fine-tune once on ``point.train``: epochs, early stop, best-val restore, score. Returns final metrics.

    With ``resume`` the run's checkpoint (if any) restores model, optimiser, scaler, epoch, best
    weights, early-stop history and RNG, and the epochs continue in the same MLflow run.
    """
    spec, p, device = ctx.spec, ctx.spec.params, ctx.device
    n_crops = N_CROPS if ctx.cache.crops else 1
    images_per_step = max(1, batch_size // n_crops)  # with crops a step sees ~batch_size crops, as the seed
    images_per_eval = max(1, max(batch_size, spec.batch_size) // n_crops)  # a shrunk training batch is no limit here
    folder = ensure_local_checkpoint(run.tracker, run.run_id) if resume else checkpoint_dir(run)
    seed = point_seed(spec.seed, point)
    bn_mode = ctx.bn_mode

    # -- precision, memory format: the GPU-only speed-ups stay off elsewhere
    amp_dtype, use_scaler = autocast_dtype(device, p.amp)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    channels_last = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def to_input(x: torch.Tensor) -> torch.Tensor:
        return normalize_batch(x.flatten(0, 1) if x.dim() == 5 else x, ctx.prep, device, channels_last)

    # -- model and optimiser for the first epoch (the head's initialisation is seeded per point)
    torch.manual_seed(seed)
    progress = Progress(stage_for_epoch(p, 1))  # what a checkpoint carries; a resumed run takes it from there
    model = build_model(ctx.base, ctx.ds.num_classes, progress.stage, bn_mode, device, channels_last)
    optimizer = build_optimizer(p, model.trainable_parameters())
    prior = CostSoFar.load(folder) if resume else CostSoFar()
    restored = load_checkpoint(folder, point, run, reporter) if resume else None
    if restored is not None:
        ck, progress = restored
        optimizer = _restore(ck, model, scaler, p, bn_mode)
        for h in progress.history:
            reporter.log_metrics({k: v for k, v in h.items() if k != "epoch"}, step=int(h["epoch"]),
                                 series=point.label)
        reporter.message(f"Resuming {point.label} after epoch {progress.epoch} of at most {p.epochs}.")

    meter = CostMeter(device, ctx.energy)
    every_s, last_checkpoint, best_unsaved = checkpoint_every_s(), time.perf_counter(), False
    try:
        with meter:
            with meter.lap("decode"):
                train_set = ctx.cache.get("train", point.train, reporter, transient=True)
                val_set = ctx.cache.get("val", point.val, reporter)
            n_batches = len(batch_slices(len(train_set), images_per_step))

            while progress.epoch < p.epochs and not progress.stopped:
                progress.epoch += 1
                epoch = progress.epoch
                # -- LP-FT: after the linear probe, unfreeze everything with a fresh optimiser
                if stage_for_epoch(p, epoch) != progress.stage:
                    progress.stage = stage_for_epoch(p, epoch)
                    set_trainable(model, progress.stage, bn_mode)
                    optimizer = build_optimizer(p, model.trainable_parameters())
                    reporter.message(f"{point.label}: linear probe done after epoch {epoch - 1}; "
                                     "fine-tuning everything.")
                flops = flops_per_image(model, ctx.prep.input_size, train=True)

                # -- one epoch of training
                t0 = time.perf_counter()
                shuffle_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])

                def after_step(i: int, epoch: int = epoch) -> None:
                    reporter.update(stage=f"{point.label}: epoch {epoch}/{p.epochs}, training",
                                    fraction=(epoch - 1 + (i + 1) / max(n_batches, 1)) / p.epochs)
                    run.heartbeat()

                train_loss, train_accuracy = _train_epoch(
                    model, optimizer, scaler, train_set.batches(images_per_step, shuffle=True, seed=shuffle_seed,
                                                                device=device),
                    to_input, autocast, p, meter, flops.train_step, reporter.check_cancelled, after_step)
                check_finite_loss(train_loss, epoch, point.label, p.learning_rate, flag="--learning-rate")

                # -- evaluate on val
                reporter.update(stage=f"{point.label}: epoch {epoch}/{p.epochs}, validating")
                ev = evaluate(model, val_set.batches(images_per_eval, device=device), to_input, device, autocast,
                              reporter.check_cancelled)
                meter.add_images(ev.n_inputs)
                meter.add_flops(flops.forward * ev.n_inputs)
                synchronize(device)
                val = ev.metrics("val")
                metrics = {"train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": val["val_loss"],
                           "val_accuracy": val["val_accuracy"], "epoch_time_s": time.perf_counter() - t0}
                _log_epoch(run, reporter, point.label, epoch, p.epochs, metrics)
                progress.history.append({"epoch": epoch, **metrics})

                # -- keep the best val weights, stop early (never inside LP-FT's probe), then checkpoint when due
                best_unsaved |= _keep_best(progress, val, model)
                progress.val_losses.append(val["val_loss"])
                progress.stopped = progress.stage != HEAD_ONLY and should_stop_early(
                    progress.val_losses, p.patience, p.early_stop_from_epoch)
                written: tuple[str, ...] = (COST_FILE,)
                if time.perf_counter() - last_checkpoint >= every_s:
                    if best_unsaved:  # first: a checkpoint never names best weights that are not on disk
                        atomic_save(progress.best_state, folder / BEST_FILE)
                        best_unsaved, written = False, (BEST_FILE,)
                    save_checkpoint(folder, point, model, optimizer, scaler, batch_size, progress)
                    last_checkpoint = time.perf_counter()
                    written += (CHECKPOINT_FILE, COST_FILE)
                prior.plus(snapshot(meter.elapsed_s, meter), closed=False).save(folder)
                upload_checkpoint(run, folder, written)  # a server's copy, for a resume on another machine
                if progress.stopped:
                    reporter.message(f"{point.label}: early stop after epoch {epoch} (val loss has not decreased for "
                                     f"{p.patience} epochs).")

            # -- restore the best weights, then score on the evaluation set
            final = _score_best(ctx, point, model, progress, meter, reporter, images_per_eval, to_input, autocast)
    except BaseException as exc:
        if meter.report is not None:  # what this session cost stays with the run, and with its resume
            spent = prior.plus(meter.report, closed=True)
            with contextlib.suppress(Exception):
                spent.save(folder)
                upload_checkpoint(run, folder, (COST_FILE,))
                run.log_metrics(spent.metrics())
        if _is_out_of_memory(exc):
            raise _out_of_memory(ctx, batch_size, run) from None
        raise

    # -- final metrics, the cost of every session, the weights if asked
    _finish(run, final, prior.plus(meter.report, closed=True), meter.report, {
        "energy_method": meter.report.energy_method,
        "precision": str(amp_dtype or torch.float32).removeprefix("torch."), "channels_last": channels_last,
        "trainable_params": model.count_parameters(trainable_only=True), "total_params": model.count_parameters()})
    if p.keep_weights:
        if best_unsaved:
            atomic_save(progress.best_state, folder / BEST_FILE)
        run.log_artifact(folder / BEST_FILE, "model")
    discard_checkpoint(run, folder)
    return final


def _restore(ck: dict[str, Any], model: Backbone, scaler: torch.amp.GradScaler, p: FineTuningParams,
             bn_mode: str) -> torch.optim.Optimizer:
    """Put a checkpoint's stage, weights, scaler and RNG back; returns the optimiser of that stage, restored."""
    set_trainable(model, ck["stage"], bn_mode)
    optimizer = build_optimizer(p, model.trainable_parameters())
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])
    return optimizer


def _train_epoch(model: Backbone, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 batches: Iterable[tuple[torch.Tensor, torch.Tensor]], to_input: Callable[[torch.Tensor], torch.Tensor],
                 autocast: Callable[[], Any], p: FineTuningParams, meter: CostMeter, flops_per_sample: float,
                 before_step: Callable[[], None], after_step: Callable[[int], None]) -> tuple[float, float]:
    """One epoch over ``batches``: forward, backward, clip, step. Returns the mean loss and accuracy per sample."""
    device = meter.device
    trainable = model.trainable_parameters()
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for i, (x, y) in enumerate(batches):
        before_step()
        x, y = to_input(x), y.to(device, non_blocking=True)
        if x.shape[0] != len(y):  # crops: each crop is a training sample
            y = y.repeat_interleave(x.shape[0] // len(y))
        # forward, backward, clip, step
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip_gradients_(trainable, p.grad_clip_norm, p.grad_clip_mode)
        scaler.step(optimizer)
        scaler.update()
        # bookkeeping without a device sync per step
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(-1) == y).sum()
        seen += len(y)
        meter.add_images(len(y))
        meter.add_flops(flops_per_sample * len(y))
        after_step(i)
    return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)


def _log_epoch(run: RunHandle, reporter: Reporter, label: str, epoch: int, epochs: int,
               metrics: dict[str, float]) -> None:
    """One epoch's figures to the run, the live chart and the log."""
    run.log_metrics(metrics, step=epoch)
    reporter.log_metrics(metrics, step=epoch, series=label)
    reporter.message(f"{label} epoch {epoch}/{epochs}: train loss {metrics['train_loss']:.4f} acc "
                     f"{metrics['train_accuracy']:.1%} | val loss {metrics['val_loss']:.4f} acc "
                     f"{metrics['val_accuracy']:.1%} | {metrics['epoch_time_s']:.1f} s")


def _keep_best(progress: Progress, val: dict[str, float], model: nn.Module) -> bool:
    """Keep the weights of the best val accuracy (strictly better, as the seed) in memory; whether they changed
    (they go to disk with the next checkpoint)."""
    if val["val_accuracy"] > progress.best["val_accuracy"]:
        progress.best = {"val_accuracy": val["val_accuracy"], "val_plain_accuracy": val["val_plain_accuracy"],
                         "epoch": progress.epoch}
        progress.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True
    return False


def _score_best(ctx: Context, point: common.SplitPoint, model: Backbone, progress: Progress, meter: CostMeter,
                reporter: Reporter, images_per_eval: int, to_input: Callable[[torch.Tensor], torch.Tensor],
                autocast: Callable[[], Any]) -> dict[str, float]:
    """Restore the best val weights; score them on test when the point is scored there. The run's final metrics."""
    best, device = progress.best, ctx.device
    assert progress.best_state is not None
    model.load_state_dict(progress.best_state)
    final: dict[str, float] = {"best_epoch": float(best["epoch"]), "epochs_run": float(progress.epoch),
                               "n_eval_images": float(len(point.eval)),
                               "stopped_early": float(progress.stopped), "best_val_accuracy": best["val_accuracy"],
                               "best_val_plain_accuracy": best["val_plain_accuracy"]}
    if point.eval_set == "test":
        with meter.lap("decode"):
            test_set = ctx.cache.get("test", point.test, reporter)
        reporter.update(stage=f"{point.label}: testing the best weights (epoch {best['epoch']})", fraction=0.99)
        with meter.lap("test"):
            ev = evaluate(model, test_set.batches(images_per_eval, device=device), to_input, device,
                          autocast, reporter.check_cancelled)
        meter.add_images(ev.n_inputs)
        meter.add_flops(flops_per_image(model, ctx.prep.input_size, train=False).forward * ev.n_inputs)
        final.update(ev.metrics("test"))
    return final


def _out_of_memory(ctx: Context, batch_size: int, run: RunHandle) -> DeviceOutOfMemory:
    """The error for a batch the accelerator could not hold, with a batch size to try; frees the cache."""
    device = ctx.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return DeviceOutOfMemory(
        f"The {device.type.upper()} device ran out of memory training {ctx.spec.backbone} at batch size "
        f"{batch_size} and {ctx.prep.input_size} px; try a smaller --batch-size such as "
        f"{max(1, batch_size // 2)} (the epochs completed so far are kept in run {run.run_id})."
    )


def _finish(run: RunHandle, final: dict[str, float], total: CostSoFar, report: CostReport,
            params: dict[str, Any]) -> None:
    """Add the cost of every session (and this one's time per phase) to ``final`` and log it, with the
    run's params and, for a resumed run, its sessions."""
    final.update(total.metrics())
    final.update({k: v for k, v in report.metrics().items() if k.startswith("time_") and k != "time_total_s"})
    if report.carbon_intensity_g_per_kwh is not None:
        final["carbon_intensity_g_per_kwh"] = report.carbon_intensity_g_per_kwh
    run.log_metrics(final)
    _log_params_once(run, params)
    if total.sessions > 1:
        run.set_tags({"sessions": total.sessions, "energy_complete": str(total.energy_complete).lower()})


def _log_params_once(run: RunHandle, params: dict[str, Any]) -> None:
    """Params are immutable in MLflow: a resumed run logs new ones, and differing ones as ``resumed.<key>`` tags."""
    have = run.client.get_run(run.run_id).data.params
    new = {k: v for k, v in params.items() if k not in have}
    if new:
        run.log_params(new)
    changed = {f"resumed.{k}": v for k, v in params.items() if k in have and have[k] != str(v).lower()
               and have[k] != str(v)}
    if changed:
        run.set_tags(changed)

