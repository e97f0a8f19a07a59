"""One QUANTA run: build the source, target and QUANTA layers, train, test.

The target and the QUANTA weights train with Adam (lr 2e-4, like the reference; ``--quanta-lr``
gives the QUANTA weights their own param group). lambda_S of every QUANTA layer is logged per
optimizer step (``quanta_source/<layer>``, step = global step, flushed to MLflow in batches) and
per epoch (``quanta_source_epoch/<layer>``). Runs are seeded with ``seed + r``: the target's
initialisation, the shuffle of each epoch, dropout and augmentation.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tlcore.measure import CostMeter
from tlcore.methods.quanta.plan import QuantaPlan
from tlcore.methods.quanta.sources import _random_source
from tlcore.methods.supervised import (
    ClassificationMeter,
    batches_on_device,
    check_finite_loss,
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
from tlcore.models import Backbone, create_backbone
from tlcore.models.quanta_layer import QuantaNetwork
from tlcore.reporting import Reporter
from tlcore.tracking import RunHandle

FLUSH_EVERY_STEPS = 256
LIVE_EVERY_S = 1.0


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



@dataclass
class _State:
    """What one run carries from building through training to its checkpoint."""

    net: QuantaNetwork
    optimizer: torch.optim.Optimizer
    channels_last: bool
    start_epoch: int = 0
    global_step: int = 0
    history: dict[str, Any] = field(default_factory=dict)


def _run_one(plan: QuantaPlan, run: RunHandle, reporter: Reporter, cost: CostMeter, r: int, train_idx: np.ndarray,
             flops_train: int, flops_forward: int, flops_source: int, source_cache: dict) -> dict[str, Any]:
    """Run r: build, train, test; returns what the exports, the checkpoint and the summary need."""
    run_seed = int(plan.resume["run_seed"]) if plan.resume else plan.spec.seed + r
    state = _build(plan, run_seed)
    _train(plan, state, run, reporter, cost, r, train_idx, run_seed, flops_train, flops_forward)
    rng_after_training = rng_state()
    target_test, source_test = _test(plan, state.net, reporter, cost, r, flops_forward, flops_source, source_cache)
    return {"net": state.net, "optimizer": state.optimizer, "history": state.history,
            "global_step": state.global_step, "epoch": state.start_epoch + plan.params.nb_of_target_epochs,
            "run_seed": run_seed, "rng": rng_after_training, "target_test": target_test, "source_test": source_test}


def _build(plan: QuantaPlan, run_seed: int) -> _State:
    """The source (frozen), a random target, the QUANTA layers, the optimizer; a resume restores them."""
    spec, params, device = plan.spec, plan.params, plan.device
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
    history: dict[str, Any] = {"epochs": [0], "lambda_s": [net.lambda_source().tolist()], "training": [],
                               "weights": [_quanta_weights(net)]}
    state = _State(net, optimizer, channels_last, history=history)
    if plan.resume:
        ck = plan.resume
        net.target.net.load_state_dict(ck["target"])
        net.quanta.load_state_dict(ck["quanta"])
        optimizer.load_state_dict(ck["optimizer"])
        for group, lr in zip(optimizer.param_groups, (params.learning_rate, quanta_lr), strict=True):
            group["lr"] = lr  # learning rates come from this command line
        state.start_epoch, state.global_step, state.history = int(ck["epoch"]), int(ck["global_step"]), ck["history"]
        set_rng_state(ck["rng"])  # last: building the models above drew from the RNGs
    return state


def _train(plan: QuantaPlan, state: _State, run: RunHandle, reporter: Reporter, cost: CostMeter, r: int,
           train_idx: np.ndarray, run_seed: int, flops_train: int, flops_forward: int) -> None:
    """Every epoch of run r (a run that fails or is cancelled keeps the lambdas of the steps it took)."""
    spec, params, device, prep = plan.spec, plan.params, plan.device, plan.prep
    net, keys, epochs = state.net, [p.key for p in plan.points], params.nb_of_target_epochs
    lambdas = _LambdaLog(run, keys)
    lambdas.add(state.global_step, net.lambda_source())
    steps_per_epoch = max(1, len(train_idx) // spec.batch_size)
    last_live = 0.0
    try:
        for epoch in range(state.start_epoch + 1, state.start_epoch + epochs + 1):
            t0 = time.perf_counter()
            net.train()
            meter = ClassificationMeter(plan.ds.num_classes, device)
            loader = epoch_loader(plan.ds, train_idx, prep, spec.batch_size, device, spec.num_workers,
                                  loader_seed(run_seed, epoch), augment=params.augment_data)
            done_epochs = epoch - state.start_epoch - 1
            for step, (x, y) in enumerate(batches_on_device(loader, prep, device, state.channels_last)):
                reporter.check_cancelled()
                # source: no grad, eval; target: the same batch, mixed at the QUANTA points
                logits, loss = train_step(net, x, y, state.optimizer, device)
                state.global_step += 1
                # log: lambda_S per step (batched), metrics on the device, live values now and then
                lam = net.lambda_source()
                lambdas.add(state.global_step, lam)
                meter.update(logits, y, loss.detach() * len(y))
                cost.add_images(len(y))
                cost.add_flops(flops_train * len(y))
                if len(lambdas.steps) >= FLUSH_EVERY_STEPS:
                    lambdas.flush()
                now = time.perf_counter()
                if now - last_live > LIVE_EVERY_S:
                    last_live = now
                    reporter.log_metrics({f"quanta_source/{k}": v for k, v in zip(keys, lam.tolist(), strict=True)},
                                         step=state.global_step, series="quanta")
                done = done_epochs + min(step + 1, steps_per_epoch) / steps_per_epoch
                reporter.update(stage=f"run {r + 1}/{params.nb_of_runs}, epoch {epoch - state.start_epoch}/{epochs}",
                                fraction=done / epochs * 0.9)
            lambdas.flush()
            _end_epoch(plan, state, run, reporter, cost, meter, r, epoch, t0, flops_forward)
    except BaseException:
        with contextlib.suppress(Exception):
            lambdas.flush()
        raise


def _end_epoch(plan: QuantaPlan, state: _State, run: RunHandle, reporter: Reporter, cost: CostMeter,
               meter: ClassificationMeter, r: int, epoch: int, t0: float, flops_forward: int) -> None:
    """Evaluate on val and log the epoch (its time, from ``t0``, counts the evaluation): the history, MLflow
    (per epoch) and the live chart."""
    spec, params, device, prep, net = plan.spec, plan.params, plan.device, plan.prep, state.net
    keys = [p.key for p in plan.points]
    val_loader = eval_loader(plan.ds, plan.splits.val, prep, spec.batch_size, device, spec.num_workers)
    val = evaluate(net, net, val_loader, prep, device, plan.ds.num_classes)
    cost.add_images(len(plan.splits.val))
    cost.add_flops(flops_forward * len(plan.splits.val))
    lam_epoch = net.lambda_source().tolist()
    train = meter.compute()
    check_finite_loss(train["loss"], epoch, f"QUANTA run {r}", params.learning_rate)
    extra = {"val_loss": val["loss"], "val_accuracy": val["accuracy"], "epoch_time_s": time.perf_counter() - t0}
    history = state.history
    history["epochs"].append(epoch)
    history["lambda_s"].append(lam_epoch)
    history.setdefault("weights", []).append(_quanta_weights(net))
    history["training"].append({"epoch": epoch, **train, **extra})
    by_key = dict(zip(keys, lam_epoch, strict=True))
    run.log_metrics({**prefixed("train", train), **extra,
                     **{f"quanta_source_epoch/{k}": v for k, v in by_key.items()}}, step=epoch)
    reporter.log_metrics({"train_loss": train["loss"], "train_accuracy": train["accuracy"],
                          **{f"quanta_source/{k}": v for k, v in by_key.items()}},
                         step=state.global_step, series="quanta")


def _test(plan: QuantaPlan, net: QuantaNetwork, reporter: Reporter, cost: CostMeter, r: int, flops_forward: int,
          flops_source: int, source_cache: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """The target (through the source, as it was trained) and the source on its own task."""
    spec, device, prep = plan.spec, plan.device, plan.prep
    reporter.update(stage=f"run {r + 1}/{plan.params.nb_of_runs}: testing", fraction=0.92)
    test_loader = eval_loader(plan.ds, plan.splits.test, prep, spec.batch_size, device, spec.num_workers)
    target_test = evaluate(net, net, test_loader, prep, device, plan.ds.num_classes)
    cost.add_images(len(plan.splits.test))
    cost.add_flops(flops_forward * len(plan.splits.test))
    cached = "metrics" in source_cache and plan.source.kind != "random"
    source_test = _source_test(plan, net.source, source_cache)
    if source_test["evaluated"] and not cached:
        cost.add_images(source_test["n_images"])
        cost.add_flops(flops_source * source_test["n_images"])
    return target_test, source_test


def _quanta_weights(net: QuantaNetwork) -> list[list[float]]:
    """Each QUANTA layer's raw weights (w_S, w_T), as the seed's callback recorded them per epoch."""
    return [[float(w) for w in q.weight.detach().cpu()] for q in net.quanta]
