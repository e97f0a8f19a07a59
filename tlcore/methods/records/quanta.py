"""QUANTA's and source training's records: what the Run page, the cost estimate and the tables know of them.

The methods themselves are :mod:`tlcore.methods.quanta` and :mod:`tlcore.methods.source_training` (imported
when a job runs: they import torch). Source training is QUANTA's first step, and both split a dataset the same way.
"""

from __future__ import annotations

from typing import Any

from tlcore.methods.base import FormField, Method, Workload, register
from tlcore.specs import ExperimentSpec, QuantaParams, SourceTrainingParams

F = FormField


def quanta_layer_choices(backbone: str) -> tuple[tuple, tuple[str, ...]]:
    """The layers QUANTA can mix on ``backbone``: -1 (every layer at once) and each one, in network order."""
    from tlcore.models import backbone_config
    from tlcore.models.quanta_layer import quanta_points

    try:
        points = quanta_points(backbone_config(backbone))
    except Exception:
        return (-1,), ("every layer at once",)
    options = (-1, *(p.index if p.key == str(p.index) else p.key for p in points))
    labels = (f"every layer at once ({len(points)})",
              *(f"{p.key}: {p.module}" if p.key == str(p.index) else p.key for p in points))
    return options, labels


def quanta_fields(backbone: str) -> list[FormField]:
    layer_options, layer_labels = quanta_layer_choices(backbone)
    return [
        F("source_weights", "Source weights", "source", "'default' (the backbone's pretrained weights), 'random' "
          "(the control), a weights file, or the run id of a finished source training."),
        F("layer_to_transfer", "Layer to transfer", "choice", "Every layer at once (one QUANTA pair each, "
          "trained together), or one layer of the backbone.", options=layer_options,
          option_labels=layer_labels),
        F("nb_of_target_samples", "Training samples per class", "int", "Empty: every training image.",
          minimum=1, optional=True),
        F("nb_of_target_epochs", "Target epochs", "int", minimum=1),
        F("nb_of_runs", "Runs (seeds)", "int", "Each run is seeded with seed + run index.", minimum=1),
        F("learning_rate", "Learning rate", "float", advanced=True, minimum=1e-8),
        F("quanta_lr", "QUANTA weights' learning rate", "float", "Empty: the same as the network's.",
          advanced=True, minimum=1e-8, optional=True),
        F("augment_data", "Augment data", "bool", advanced=True),
        F("source_task", "Source task (for the record)", "text", advanced=True, optional=True),
        F("outdir", "Export folder for the seed's files", "text", advanced=True),
        F("train_from_previous_training", "Resume from a checkpoint file", "text", advanced=True, optional=True),
        F("keep_weights", "Keep the target checkpoint in the run", "bool", "Also store each run's target "
          "checkpoint in MLflow (models/); it always stays in the export folder, where a resume reads it.",
          advanced=True),
    ]


def train_test_sizes(spec: ExperimentSpec, per_class: int | None):
    """(dataset, training images, test images) as QUANTA and source training split it: the same
    ``resolve_splits`` call (its test and val sets are held out; the rest trains, or ``per_class`` of it)."""
    import numpy as np

    from tlcore.data import load_dataset, resolve_splits

    ds = load_dataset(spec.dataset, spec.data_dir, download=False)
    splits = resolve_splits(ds, spec.split_path, seed=spec.seed, spc_values=[per_class] if per_class else None)
    n_train = len(ds) - len(np.union1d(splits.test, splits.val))
    if per_class:
        n_train = min(n_train, per_class * ds.num_classes)
    return ds, n_train, len(splits.test)


def quanta_estimate(spec: ExperimentSpec) -> Workload:
    """Each step is a frozen source forward plus a target training step."""
    from tlcore.models.catalog import meta_flops

    p = spec.params
    ds, n_train, n_test = train_test_sizes(spec, p.nb_of_target_samples)
    fwd, bwd = meta_flops(spec.backbone, spec.input_size, ds.num_classes, 0)
    per_epoch = n_train * (fwd + fwd + bwd) + n_test * 2 * fwd
    note = (f"{p.nb_of_runs} run(s) x {p.nb_of_target_epochs} epoch(s) on about {n_train:,} training images; each "
            "step is a frozen source forward plus a target training step.")
    return Workload(runs=p.nb_of_runs + (1 if p.nb_of_runs > 1 else 0),
                    images=p.nb_of_runs * p.nb_of_target_epochs * (n_train + n_test),
                    flops=float(p.nb_of_runs * p.nb_of_target_epochs * per_epoch), flops_per_image=float(fwd),
                    notes=(note,))


def quanta_store_defaults(tracking_uri: str | None) -> dict[str, Any]:
    """The app writes QUANTA's seed-format exports beside a local store, never in the server's working folder."""
    from pathlib import Path

    from tlcore.tracking import sqlite_path

    path = sqlite_path(tracking_uri) if tracking_uri else None
    if path is not None and ":memory:" not in tracking_uri:
        return {"outdir": str(path.parent / "quanta_exports")}
    return {"outdir": str(Path.home() / ".cache" / "tlcore" / "quanta_exports")}


def quanta_control(values: dict[str, Any]) -> dict[str, Any] | None:
    """The random-source control of a QUANTA job: the same settings with a random source (none for a random one)."""
    if str(values.get("source_weights", "")).lower() == "random":
        return None
    return {"source_weights": "random"}


def source_fields(backbone: str) -> list[FormField]:
    return [
        F("epochs", "Epochs", "int", minimum=1),
        F("learning_rate", "Learning rate", "float", minimum=1e-8),
        F("augment_data", "Augment data", "bool", advanced=True),
        F("out", "Also write the weights to", "text", "A file path; the weights are an MLflow artifact anyway.",
          advanced=True, optional=True),
    ]


def source_estimate(spec: ExperimentSpec) -> Workload:
    from tlcore.models.catalog import meta_flops

    p = spec.params
    ds, n_train, n_test = train_test_sizes(spec, p.nb_of_samples)
    fwd, bwd = meta_flops(spec.backbone, spec.input_size, ds.num_classes, 0)
    return Workload(runs=1, images=p.epochs * (n_train + n_test),
                    flops=float(p.epochs * (n_train * (fwd + bwd) + n_test * fwd)), flops_per_image=float(fwd),
                    notes=(f"{p.epochs} epochs on about {n_train:,} training images.",))


register(Method(
    name="quanta", label="QUANTA", noun="QUANTA", title="QUANTA (per-layer transferability)", params=QuantaParams,
    run="tlcore.methods.quanta:quanta", task_points="tlcore.methods.quanta.method:run_pairs",
    blurb="A frozen source and a fresh target network mixed layer by layer; lambda_S says how much each layer of "
          "the target wants the source's features.",
    default_backbone="quanta_cnn", data_title="Target data", pretrained_weights=False, fields=quanta_fields,
    estimate=quanta_estimate, store_defaults=quanta_store_defaults, control=quanta_control,
    control_label="Also run the random-source control (same settings)", control_noun="random-source control",
    control_help="lambda_S also moves with the scale of the activations: a layer transfers only where the trained "
                 "source's lambda_S differs from a random source's. The Quanta page compares them layer by layer.",
    analysis_page="quanta",
    # the seed's 1 epoch at lr 2e-4 moves lambda_S by ~0.0002 on the embedded tasks (0.90025 -> 0.9004), so nothing
    # separates a trained source from the control; measured on digits 0-4 -> 5-9 (docs/evidence.md), 6 target epochs
    # with the QUANTA weights at lr 0.05 and 40 images per class separate them at layer 0.
    app_defaults={"nb_of_target_epochs": 6, "quanta_lr": 0.05, "nb_of_target_samples": 40},
    app_defaults_note="The app's defaults differ from the seed's (1 target epoch at lr 2e-4, which leaves lambda_S at "
                      "0.900 on small tasks): 6 epochs, the QUANTA weights at lr 0.05, 40 images per class. The "
                      "command line keeps the seed's values.",
    cli_help="QUANTA: per-layer transferability (lambda_S)",
))


register(Method(
    name="source", label="Source training", title="Train a source network", params=SourceTrainingParams,
    run="tlcore.methods.source_training:train_source",
    blurb="Train a network from scratch (QUANTA's source), e.g. on digits:0-4 before transferring to digits:5-9.",
    default_backbone="quanta_cnn", fixed_weights="random", pretrained_weights=False, fields=source_fields,
    estimate=source_estimate, analysis_page="quanta",
    cli_help="train a source network (QUANTA's source; the seed's train_source_model.py)",
))
