"""Fine-tuning's record: what the Run page, the cost estimate and the tables know of it.

The method itself is :mod:`tlcore.methods.fine_tuning` (imported when a job runs: it imports torch).
"""

from __future__ import annotations

import functools

from tlcore.methods.base import FormField, Method, Workload, register
from tlcore.specs import ExperimentSpec, FineTuningParams

F = FormField


@functools.lru_cache(maxsize=32)
def ft_configurations(backbone: str) -> tuple:
    """The freezing configurations a backbone defines, plus LP-FT."""
    from tlcore.models.catalog import meta_backbone

    try:
        return (*meta_backbone(backbone).configurations(), "lp-ft")
    except Exception:
        return (0, 1, 2, 3, "lp-ft")


def ft_fields(backbone: str) -> list[FormField]:
    confs = ft_configurations(backbone)
    conf_labels = {0: "0: train everything", 1: "1: freeze about a quarter", 2: "2: freeze about half",
                   3: "3: freeze about three quarters", "lp-ft": "LP-FT: linear probe, then fine-tune all"}
    return [
        F("configuration", "Freezing configuration", "choice", "How much of the network, from the input, "
          "stays frozen.", options=confs, option_labels=tuple(conf_labels.get(c, str(c)) for c in confs)),
        F("optimizer", "Optimizer", "choice", "SGD with momentum and decoupled weight decay (the seed), or Adam.",
          options=("sgd", "adam", "adamw")),
        F("learning_rate", "Learning rate", "float", minimum=1e-8),
        F("epochs", "Epochs (at most)", "int", "Early stopping may end sooner.", minimum=1),
        F("patience", "Early-stopping patience", "int", "Epochs without a lower val loss before stopping.",
          advanced=True, minimum=1),
        F("early_stop_from_epoch", "Early stopping from epoch", "int", "The seed: from the 11th.",
          advanced=True, minimum=1),
        F("weight_decay", "Weight decay", "float", advanced=True, minimum=0.0),
        F("momentum", "Momentum", "float", advanced=True, minimum=0.0),
        F("grad_clip_norm", "Gradient-norm clipping", "float", advanced=True, minimum=1e-8),
        F("bn_trainable", "BatchNorm trainable in frozen layers", "bool", "The seed kept it trainable.",
          advanced=True),
        F("lp_epochs", "LP-FT: linear-probe epochs", "int", advanced=True, minimum=1),
        F("amp", "Mixed precision on GPU", "bool", "bf16 autocast; ignored on CPU.", advanced=True),
        F("resume", "Resume run id", "text", "Continue a killed fine-tuning run from its last epoch.",
          advanced=True, optional=True),
    ]


def ft_estimate(spec: ExperimentSpec) -> Workload:
    """Every epoch up to the cap (an upper bound: early stopping usually ends sooner); LP-FT's probe epochs
    train only the head."""
    from tlcore.data.loading import N_CROPS
    from tlcore.methods.common import load_data, plan_points
    from tlcore.models.catalog import meta_flops

    ds, splits = load_data(spec)
    points = plan_points(spec, ds, splits)
    crops = N_CROPS if spec.use_crops else 1
    size, p = spec.input_size, spec.params
    conf, epochs = p.configuration, p.epochs
    fwd, _ = meta_flops(spec.backbone, size, ds.num_classes)
    f_all, b_all = meta_flops(spec.backbone, size, ds.num_classes, 0 if conf == "lp-ft" else conf, p.bn_trainable)
    f_lp, b_lp = meta_flops(spec.backbone, size, ds.num_classes, "lp-ft") if conf == "lp-ft" else (0, 0)
    images, flops = 0, 0.0
    for pt in points:
        n_train, n_val, n_eval = len(pt.train) * crops, len(pt.val), len(pt.eval) * crops
        full_epochs = epochs
        if conf == "lp-ft":  # the probe's epochs are the first of the run's epochs, not extra ones
            full_epochs -= p.lp_epochs
            images += p.lp_epochs * (n_train + n_val)
            flops += p.lp_epochs * (n_train * (f_lp + b_lp) + n_val * fwd)
        images += full_epochs * (n_train + n_val) + n_eval
        flops += full_epochs * (n_train * (f_all + b_all) + n_val * fwd) + n_eval * fwd
    note = (f"{len(points)} training{'s' if len(points) > 1 else ''} of up to {epochs} epochs; early stopping usually "
            "ends them sooner.")
    return Workload(runs=len(points) + (1 if len(points) > 1 else 0), images=images, flops=flops,
                    flops_per_image=float(fwd), notes=(note,), upper_bound=True)


register(Method(
    name="ft", label="Fine-tuning", params=FineTuningParams, run="tlcore.methods.fine_tuning:fine_tune",
    blurb="A new head on the pretrained network, trained with 0-3 quarters of the network frozen (or LP-FT). Costs a "
          "forward and a backward pass per image and epoch.",
    sweep=True, cpu_grid="2,10", fields=ft_fields, estimate=ft_estimate, plan="tlcore.methods.common:plan_sweep",
    task_points="tlcore.methods.common:point_pairs",
    cli_help="fine-tuning with freezing configurations 0-3 or lp-ft",
))
