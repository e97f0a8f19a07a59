"""Feature extraction's record: what the Run page, the cost estimate and the tables know of it.

The method itself is :mod:`tlcore.methods.feature_extraction` (imported when a job runs: it imports torch).
"""

from __future__ import annotations

from tlcore.methods.base import FormField, Method, Workload, register
from tlcore.specs import ExperimentSpec, FeatureExtractionParams

F = FormField


def classifier_names() -> tuple[str, ...]:
    from tlcore.classifiers import classifiers

    return tuple(classifiers.names())


def description_choices(backbone: str) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """Shipped model descriptions of a backbone: (names, labels); None = every tap."""
    from tlcore.models.descriptions import DESCRIPTIONS_DIR, PERCENTS

    names: list[str | None] = [None]
    labels = ["every tap (100%)"]
    for pct in PERCENTS:
        if pct != 100 and (DESCRIPTIONS_DIR / f"{backbone}_{pct}.json").is_file():
            names.append(f"{backbone}_{pct}")
            labels.append(f"{pct}% of the taps ({backbone}_{pct})")
    return tuple(names), tuple(labels)


def fe_fields(backbone: str) -> list[FormField]:
    names, labels = description_choices(backbone)
    return [
        F("classifier", "Classifier", "choice", "Trained on the embedding of each training image (or crop).",
          options=classifier_names()),
        F("model_description", "Layers (model description)", "choice",
          "Which taps feed the embedding: all of them, or an evenly spaced share (the seed's 75/50/25 % files).",
          options=names, option_labels=labels),
        F("standardize", "Standardisation statistics", "choice", "Training-set statistics for every set (FNE), "
          "or each set its own (reproduces the seed).", advanced=True, options=("train", "per_set"),
          option_labels=("training set (FNE)", "each set its own (the seed)")),
        F("discretize", "Discretise to {-1, 0, 1}", "bool", "The FNE post-processing.", advanced=True),
        F("threshold_high", "Upper threshold", "float", "Standardised values above it become 1.",
          advanced=True, minimum=0.0),
        F("threshold_low", "Lower threshold", "float", "Standardised values below it become -1.",
          advanced=True),
        F("cache", "Reuse extracted features", "bool", "Extract each image once per dataset, backbone, layers, "
          "crops and resolution, and reuse the features across runs.", advanced=True),
        F("cache_dir", "Feature cache folder", "text", "Empty: beside the results.", advanced=True,
          optional=True),
    ]


def fe_estimate(spec: ExperimentSpec) -> Workload:
    """Each image is extracted once per job (features are reused across the curve)."""
    import numpy as np

    from tlcore.data.loading import N_CROPS
    from tlcore.methods.common import load_data, plan_points
    from tlcore.models.catalog import meta_flops

    ds, splits = load_data(spec)
    points = plan_points(spec, ds, splits)
    crops = N_CROPS if spec.use_crops else 1
    fwd, _ = meta_flops(spec.backbone, spec.input_size, ds.num_classes)
    used = np.unique(np.concatenate([np.concatenate([p.train, p.eval]) for p in points]))
    images = len(used) * crops
    note = (f"{len(points)} classifier fit{'s' if len(points) > 1 else ''} on features extracted once from "
            f"{len(used):,} images" + (" x 10 crops" if crops > 1 else "") + ".")
    return Workload(runs=len(points) + (1 if len(points) > 1 else 0), images=images, flops=float(images) * fwd,
                    flops_per_image=float(fwd), notes=(note,))



register(Method(
    name="fe", label="Feature extraction", params=FeatureExtractionParams,
    run="tlcore.methods.feature_extraction:run_feature_extraction",
    blurb="Activations of many layers, standardised and discretised, then a linear classifier. Cheap: each image "
          "goes through the network once for a whole few-shot curve.",
    sweep=True, pace="forward", fields=fe_fields, estimate=fe_estimate, plan="tlcore.methods.common:plan_sweep",
    cli_help="feature extraction (full-network embedding + linear classifier)",
))
