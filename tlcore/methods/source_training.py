"""Training a source network from scratch: the pretrained, frozen source of a QUANTA transfer.

The reference trained its CIFAR network with Adam (lr 2e-4), batch 32, cross-entropy. Here the
images outside the test and val sets train it (splits: stratified and seeded, like every other
method); val loss/accuracy are logged per epoch and the seed's metric set on test at the end.
The weights are saved as a self-describing checkpoint, ``{"state_dict": ..., "tlcore": meta}``
(architecture, dataset, classes, input size, split seed): any ``--weights FILE`` flag reads the
state dict, and QUANTA also reads the meta (the source task, the input size it was trained at).
It is logged as the MLflow artifact ``source.pt`` of a ``Source training`` run, and written to
``--out`` when given. Like the seed's ``train_source_model.py``, the run also exports to
``{output_dir}/{source}_training/``: ``source.pt`` (the seed wrote ``source.keras`` and
``source.weights.h5``), ``training_metrics_of_source.jsonl`` (Keras' metric names keyed by the
0-based epoch) and ``testing_metrics_of_source.jsonl``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.data import load_dataset, resolve_splits
from tlcore.devices import resolve_device
from tlcore.errors import DatasetError, TLError
from tlcore.measure import CostMeter, EnergySettings, count_flops
from tlcore.methods.base import EXPERIMENTS, RunResult
from tlcore.methods.supervised import (
    ClassificationMeter,
    batches_on_device,
    check_finite_loss,
    configure_device,
    epoch_loader,
    eval_loader,
    evaluate,
    loader_seed,
    prefixed,
    seed_everything,
    train_step,
    use_channels_last,
)
from tlcore.models import create_backbone
from tlcore.reporting import Reporter
from tlcore.seed_names import KERAS_METRIC_NAMES
from tlcore.specs import ExperimentSpec, SourceTrainingParams
from tlcore.tracking import Tracker

ARTIFACT_NAME = "source.pt"
CHECKPOINT_FORMAT = "tlcore.source.v1"


def save_checkpoint(state_dict: dict[str, torch.Tensor], meta: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``{"state_dict", "tlcore": meta}`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"state_dict": state_dict, "tlcore": {"format": CHECKPOINT_FORMAT, **meta}}, tmp)
    os.replace(tmp, path)
    return path


def energy_settings(spec: ExperimentSpec) -> EnergySettings:
    return EnergySettings(spec.country_iso_code, spec.carbon_intensity_g_per_kwh, spec.measure_energy)


def _check_out(out: str | None) -> None:
    if not out:
        return
    p = Path(out).expanduser()
    if p.is_dir():
        raise TLError(f"--out {out} is a folder; give a file name such as {p / 'source.pt'}.")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLError(f"Cannot create the folder of --out {out} ({exc.strerror}); pick a writable path.") from None
    if not os.access(p.parent, os.W_OK):
        raise TLError(f"The folder of --out {out} is not writable; pick a writable path.")


def _per_class(labels: np.ndarray, pool: np.ndarray, n: int, seed: int, name: str) -> np.ndarray:
    """``n`` training images per class, stratified and seeded (the seed's --nb_of_samples took the first n)."""
    rng = np.random.default_rng([seed, 104729])
    chosen = []
    for c in np.unique(labels[pool]):
        members = pool[labels[pool] == c]
        if len(members) < n:
            raise DatasetError(f"--nb_of_samples {n}: class {int(c)} of {name} has only {len(members)} training "
                               f"images; use at most {len(members)}.")
        chosen.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


def _export(outdir: Path, task: str, state: dict, meta: dict, history: dict, test: dict) -> Path:
    """The seed's ``{output_dir}/{source}_training/`` folder (rewritten whole)."""
    from tlcore.methods.quanta.names import safe_name

    folder = outdir / f"{safe_name(task)}_training"
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, meta, folder / ARTIFACT_NAME)
    for name, row in (("training_metrics_of_source.jsonl", history),
                      ("testing_metrics_of_source.jsonl", {KERAS_METRIC_NAMES.get(k, k): v for k, v in test.items()})):
        (folder / name).write_text(json.dumps(row) + "\n")
    return folder


def train_source(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    params: SourceTrainingParams = spec.params
    device = resolve_device(spec.device)
    _check_out(params.out)
    reporter.update(stage="loading data", fraction=0.0)
    ds = load_dataset(spec.dataset, spec.data_dir, spec.download)
    splits = resolve_splits(ds, spec.split_path, seed=spec.seed, spc_values=None)
    for w in splits.warnings:
        reporter.message(w, "warning")
    train_idx = np.setdiff1d(np.arange(len(ds)), np.union1d(splits.test, splits.val))
    if len(np.unique(ds.labels[train_idx])) < 2:
        raise DatasetError(f"The training set of {ds.name} holds fewer than two classes; a source needs at least two.")
    if params.nb_of_samples:
        train_idx = _per_class(ds.labels, train_idx, params.nb_of_samples, spec.seed, ds.name)
    size = spec.input_size
    seed_everything(spec.seed)
    if params.train_from_previous_training:  # the seed's resume: these weights, head included when it fits
        model = create_backbone(spec.backbone, params.train_from_previous_training)
        head = [m for m in model.get_classifier().modules() if isinstance(m, torch.nn.Linear)][-1]
        if head.out_features != ds.num_classes:
            model.reset_classifier(ds.num_classes)
    else:
        model = create_backbone(spec.backbone, spec.weights, download=spec.download_weights,
                                num_classes=ds.num_classes)
    if params.show_only_build:
        n = sum(p.numel() for p in model.parameters())
        return RunResult("source", summary=f"Source {spec.backbone} for {spec.dataset} ({ds.num_classes} classes, "
                                           f"{size}x{size}), {n:,} total parameters; no MLflow run, nothing "
                                           f"trained (--show_only_build).\n{model.net}")
    prep = replace(model.preprocessing, input_size=size)
    configure_device(device)
    channels_last = use_channels_last(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate, eps=1e-7)
    fpi = count_flops(model, size, train=True, batch=2)  # 2: BatchNorm cannot train on one 1x1 image

    run_params = {
        "method": "source", "dataset": spec.dataset, "backbone": spec.backbone, "weights": model.weights_name,
        "samples_per_class": "all", "split": splits.origin, "seed": spec.seed, "device": str(device),
        "model_selection": False, "use_crops": False, "optimizer": "adam", "learning_rate": params.learning_rate,
        "batch_size": spec.batch_size, "epochs": params.epochs, "augment_data": params.augment_data,
        "resolution": size, "num_classes": ds.num_classes, "classes": ",".join(ds.classes)[:5000],
        "n_train_images": len(train_idx), "n_val_images": len(splits.val), "n_test_images": len(splits.test),
        "job": spec.job or "",
    }
    run = tracker.start_run("source", run_params, tags={**spec.tags, **({"job": spec.job} if spec.job else {})},
                            run_name=f"Source training · {spec.backbone} on {spec.dataset}")
    reporter.run_started(run.run_id, EXPERIMENTS["source"], run_params["dataset"])
    history: dict[str, dict] = {}
    with run:
        with CostMeter(device, energy_settings(spec)) as meter:
            steps_per_epoch = max(1, len(train_idx) // spec.batch_size)
            for epoch in range(1, params.epochs + 1):
                t0 = time.perf_counter()
                model.train()
                train_meter = ClassificationMeter(ds.num_classes, device)
                loader = epoch_loader(ds, train_idx, prep, spec.batch_size, device, spec.num_workers,
                                      loader_seed(spec.seed, epoch), augment=params.augment_data)
                with meter.lap("train"):
                    for step, (x, y) in enumerate(batches_on_device(loader, prep, device, channels_last)):
                        reporter.check_cancelled()
                        logits, loss = train_step(model, x, y, optimizer, device)
                        train_meter.update(logits, y, loss.detach() * len(y))
                        meter.add_images(len(y))
                        meter.add_flops(fpi.train_step * len(y))
                        reporter.update(stage=f"epoch {epoch}/{params.epochs}: training",
                                        fraction=(epoch - 1 + min(step + 1, steps_per_epoch) / steps_per_epoch)
                                        / params.epochs * 0.95)
                with meter.lap("eval"):
                    val = evaluate(model, model, eval_loader(ds, splits.val, prep, spec.batch_size, device,
                                                             spec.num_workers), prep, device, ds.num_classes)
                train_metrics = train_meter.compute()
                check_finite_loss(train_metrics["loss"], epoch, f"the source training on {spec.dataset}",
                                  params.learning_rate)
                epoch_metrics = {**prefixed("train", train_metrics), "val_loss": val["loss"],
                                 "val_accuracy": val["accuracy"], "epoch_time_s": time.perf_counter() - t0}
                run.log_metrics(epoch_metrics, step=epoch)
                history[str(epoch - 1)] = {KERAS_METRIC_NAMES.get(k, k): v for k, v in train_meter.compute().items()}
                reporter.log_metrics({k: epoch_metrics[k] for k in ("train_loss", "train_accuracy", "val_accuracy")},
                                     step=epoch)
            reporter.update(stage="testing", fraction=0.96)
            with meter.lap("eval"):
                test = evaluate(model, model, eval_loader(ds, splits.test, prep, spec.batch_size, device,
                                                          spec.num_workers), prep, device, ds.num_classes)
            meter.add_images(len(splits.test) + len(splits.val) * params.epochs)
            meter.add_flops(fpi.forward * (len(splits.test) + len(splits.val) * params.epochs))
            meta = {"architecture": spec.backbone, "dataset": spec.dataset, "classes": list(ds.classes),
                    "num_classes": ds.num_classes, "input_size": size, "seed": spec.seed, "split_origin": splits.origin,
                    "epochs": params.epochs, "run_id": run.run_id, "test_accuracy": test["accuracy"]}
            state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(state, meta, Path(tmp) / ARTIFACT_NAME)
                run.log_artifact(Path(tmp) / ARTIFACT_NAME)
            out_path = save_checkpoint(state, meta, Path(params.out).expanduser()) if params.out else None
            if params.outdir:
                _export(Path(params.outdir).expanduser(), spec.dataset, state, meta, history, test)
            run.log_metrics(prefixed("test", test))
        report = meter.report
        run.log_metrics(report.metrics())
        run.log_params({"energy_method": report.energy_method})
    where = f"run {run.run_id} (artifact {ARTIFACT_NAME})" + (f" and {out_path}" if out_path else "")
    summary = (f"Source {spec.backbone} trained on {spec.dataset} for {params.epochs} epoch(s): test accuracy "
               f"{test['accuracy']:.1%} on {len(splits.test)} images, {report.time_total_s:.0f} s. Weights: {where}.\n"
               f"Use it: python -m tlcore quanta --architecture {spec.backbone} -s {spec.dataset} "
               f"-sw {out_path or run.run_id} -t TARGET -l -1")
    return RunResult("source", [run.run_id], None, {"test_accuracy": test["accuracy"], **report.metrics()}, summary,
                     {"weights": str(out_path) if out_path else ARTIFACT_NAME})
