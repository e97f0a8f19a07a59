"""The method commands. The built-in methods keep the flags of the two research tools the product comes from
(tl-tradeoff's ``feature_extraction.py`` / ``fine_tuning.py``, QUANTA's ``quanta.py`` and
``train_source_model.py``); any other registered method gets a command read off its record and params class."""

from __future__ import annotations

import argparse
import os
import sys

from tlcore.cli.args import MLFLOW_PATH_HELP, data_args, dry_run_arg, executor_args, run_args, spec_kwargs
from tlcore.cli.plan import print_plan, run_with_progress


def quanta_run_args(g, metric_names_help: str) -> None:
    """The run flags QUANTA's two scripts (quanta.py, train_source_model.py) share, as they spell them."""
    g.add_argument("--device", default="auto")
    g.add_argument("--num-workers", type=int, default=None)
    g.add_argument("--mlflow-path", help=MLFLOW_PATH_HELP)
    g.add_argument("--seed-metric-names", action="store_true", help=metric_names_help)
    g.add_argument("--job")
    g.add_argument("--data-dir")
    g.add_argument("--download", action="store_true")
    g.add_argument("--no-energy", action="store_true")
    g.add_argument("--quiet", action="store_true")
    executor_args(g)


def quanta_spec_kwargs(args: argparse.Namespace, seed: int, **extra) -> dict:
    """The spec fields :func:`quanta_run_args` fill (plus ``extra``)."""
    kw = dict(seed=seed, device=args.device, mlflow_path=args.mlflow_path, job=args.job,
              measure_energy=not args.no_energy, data_dir=args.data_dir, download=args.download,
              num_workers=args.num_workers, **extra)
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    if args.seed_metric_names:
        kw["tags"] = {"seed_metric_names": "true"}
    return kw


def add_seed_commands(sub, common: argparse.ArgumentParser) -> None:
    """fe, ft, quanta, train-source: the seeds' flags."""
    from tlcore.methods import base

    p = sub.add_parser("fe", parents=[common], help=base.get("fe").cli_help)
    data_args(p)
    run_args(p)
    g = p.add_argument_group("feature extraction")
    g.add_argument("--backbone", default=None, help="registered backbone (python -m tlcore backbones); default: the "
                                                    "model description's, else efficientnet_lite0")
    g.add_argument("-m", "--model", nargs="+", metavar="PATH",
                   help="the seed's --model WEIGHTS DESCRIPTION: a weights file and/or a model description "
                        "(JSON path or shipped name)")
    g.add_argument("--weights", default=None, help="imagenet (default), random, or a state_dict file")
    g.add_argument("--model-description", help="JSON listing the taps (a path or a shipped name such as "
                                               "efficientnet_lite0_50)")
    g.add_argument("--taps", help="comma-separated layer names (overrides the description)")
    g.add_argument("--classifier", default="auto",
                   help="auto (default: linearsvc up to 1,000 training images x crops, linear above; the run logs "
                        "which, as classifier_fitted), linearsvc (the seed's: scikit-learn's LinearSVC), linear "
                        "(LinearSVC's objective fitted full-batch in torch, on the GPU when there is one: for "
                        "thousands of images per class), svc, sgd (tol 5e-4), knn, logreg, xgboost; the seed's "
                        "names LinearSVC, SVC, SGDClassifier, KNN, XGBoost work too")
    g.add_argument("--standardize", choices=["train", "per_set"], default="train",
                   help="statistics for standardisation: training set (FNE) or each set its own (the seed)")
    g.add_argument("--no-discretize", action="store_true", help="keep standardised values (no {-1,0,1})")
    g.add_argument("--threshold-high", type=float, default=0.15)
    g.add_argument("--threshold-low", type=float, default=-0.25)
    g.add_argument("--cache-dir", help="feature cache folder (default: feature_cache/ beside the results store)")
    g.add_argument("--no-cache", action="store_true", help="extract features afresh and keep nothing on disk")
    dry_run_arg(p)
    p.set_defaults(func=cmd_fe)

    p = sub.add_parser("ft", parents=[common], help=base.get("ft").cli_help)
    data_args(p, dataset_required=False)
    run_args(p)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("-d", "--dataset", help="embedded name (digits, lfw_faces), torchvision name or folder path, "
                                           "with an optional class filter (digits:0-4); required unless --resume")
    g.add_argument("-a", "--backbone", "--architecture", dest="backbone", default="efficientnet_lite0",
                   help="registered backbone (python -m tlcore backbones); --architecture is the seed's name")
    g.add_argument("--source", default="imagenet", help="weights source: imagenet, random, or a weights file")
    g.add_argument("-m", "--model", help="weights file (the seed's --model)")
    g.add_argument("-c", "--configuration", default="1",
                   help="0 (train all), 1 (default, the seed's), 2, 3 (freeze ~1/4, 1/2, 3/4) or lp-ft")
    g.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    g.add_argument("--learning-rate", type=float, default=0.01)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("-e", "--epochs", type=int, default=40, help="at most this many epochs (early stop from the 11th)")
    g.add_argument("--patience", type=int, default=3, help="epochs without val-loss improvement before stopping")
    g.add_argument("--bn-trainable", action="store_true", help="BatchNorm trains on batch statistics everywhere, "
                                                               "frozen layers too (the seed; = --bn-statistics batch)")
    g.add_argument("--bn-statistics", choices=["running", "frozen_layers", "batch"], default="running",
                   help="which BatchNorm layers use their running statistics while training: all (running, default: "
                        "best with few images), those in frozen layers, or none (batch)")
    g.add_argument("--lp-epochs", type=int, default=5, help="lp-ft: epochs of the linear probe before fine-tuning")
    g.add_argument("--resume", metavar="RUN_ID", help="continue a killed or failed run (or a sweep's unfinished "
                                                      "runs) from its last completed epoch, with its own settings")
    g.add_argument("--keep-weights", action="store_true", help="keep the best weights as the run's artifact "
                                                               "model/best.pt")
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    dry_run_arg(p)
    p.set_defaults(func=cmd_ft)

    p = sub.add_parser("quanta", parents=[common], help=base.get("quanta").cli_help)
    g = p.add_argument_group("QUANTA (the seed's flags)")
    g.add_argument("-o", "--output_dir", "--outdir", dest="outdir", default="./expe",
                   help="where the seed's export files go (default ./expe)")
    g.add_argument("-s", "--source_task", default=None,
                   help="the source task (a dataset name): names the export folder and scores the source on its "
                        "test set (default: the task saved with the weights)")
    g.add_argument("-sw", "--source_weights", default="default",
                   help="source weights: a file, a Source training run id, 'random' (the control) or "
                        "'imagenet'/'default' (the backbone's pretrained weights)")
    g.add_argument("-t", "--target_task", required=True,
                   help="target dataset (e.g. digits:5-9, cifar100, mnist, fashion_mnist)")
    g.add_argument("-l", "--layer_to_transfer", default="-1", help="layer index (0..6 for quanta_cnn), a tap "
                                                                   "name, or -1 for every layer")
    g.add_argument("-r", "--nb_of_runs", type=int, default=1)
    g.add_argument("--nb_of_target_epochs", "--nb_of_epochs", dest="nb_of_target_epochs", type=int, default=1)
    g.add_argument("--nb_of_target_samples", "--nb_of_samples", dest="nb_of_target_samples", type=int, default=None,
                   help="training samples per class (the seed's 0 = all)")
    g.add_argument("--seed", type=int, default=0, help="runs are seeded with seed + run index")
    g.add_argument("--augment_data", action="store_true")
    g.add_argument("--train_from_previous_training", metavar="PATH", help="resume a saved target checkpoint")
    g.add_argument("--show_only_build", action="store_true", help="print both models and train nothing")
    g.add_argument("--keep-weights", action="store_true",
                   help="also keep each run's target checkpoint as an MLflow artifact (models/target_*.pt); by "
                        "default the run references its source (param source_reference) and keeps no weights, and "
                        "the checkpoint stays only in the export folder, where --train_from_previous_training reads it")
    g.add_argument("--architecture", default="quanta_cnn",
                   help="source and target architecture (quanta_cnn, or a backbone: python -m tlcore backbones)")
    g.add_argument("--resolution", type=int, default=None, help="input size in pixels (default: the architecture's)")
    g.add_argument("--download-weights", action="store_true", help="download pretrained source weights if missing")
    g.add_argument("--quanta-lr", type=float, default=None, help="separate learning rate for the QUANTA weights")
    g.add_argument("--learning-rate", type=float, default=2e-4)
    g.add_argument("--batch-size", type=int, default=32)
    quanta_run_args(g, "also log QUANTA's Keras metric names")
    dry_run_arg(p)
    p.set_defaults(func=cmd_quanta)

    p = sub.add_parser("train-source", parents=[common], help=base.get("source").cli_help)
    p.add_argument("--architecture", "--backbone", dest="architecture", default="quanta_cnn")
    p.add_argument("-s", "--source_task", "--dataset", dest="dataset",
                   help="the task to train on (a dataset name: cifar10, mnist, digits:0-4, a folder, ...)")
    p.add_argument("-o", "--output_dir", "--outdir", dest="outdir", default="./expe",
                   help="the seed's export folder: weights and metrics go to OUTPUT_DIR/{source}_training/")
    p.add_argument("--epochs", "--nb_of_epochs", dest="epochs", type=int, default=1,
                   help="training epochs (default 1, the seed's)")
    p.add_argument("--nb_of_samples", type=int, default=None,
                   help="training images per class (default, or the seed's 0: every training image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the weights to this file")
    p.add_argument("--augment_data", "--augment-data", dest="augment_data", action="store_true")
    p.add_argument("--train_from_previous_training", metavar="PATH",
                   help="start from these weights (a source.pt, or the seed's source.keras / .weights.h5) and train "
                        "--nb_of_epochs more")
    p.add_argument("--show_only_build", action="store_true", help="print the network and train nothing")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    quanta_run_args(p, "also log the seed's Keras metric names")
    dry_run_arg(p)
    p.set_defaults(func=cmd_train_source)


def run_spec(spec, args: argparse.Namespace) -> int:
    if getattr(args, "dry_run", False):
        print_plan(spec)
        return 0

    result = run_with_progress(spec, args)
    if result.summary:
        print(result.summary)
    if result.run_ids or result.parent_run_id:
        from tlcore.tracking import mlflow_ui_command, resolve_tracking_uri

        print(f"Open the results in MLflow's UI: {mlflow_ui_command(resolve_tracking_uri(spec.mlflow_path))}")
    return 0


def cmd_fe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tlcore.models.descriptions import DESCRIPTIONS_DIR
    from tlcore.specs import ExperimentSpec, FeatureExtractionParams

    weights, description = args.weights, args.model_description
    for item in args.model or []:  # the seed's --model WEIGHTS DESCRIPTION, in any order
        is_description = item.lower().endswith(".json") or (
            not Path(item).expanduser().exists() and (DESCRIPTIONS_DIR / f"{item}.json").is_file())
        if is_description:
            description = description or item
        else:
            weights = weights or item
    backbone = args.backbone
    if description:  # a description names its backbone (and the seed's, its input size)
        from tlcore.models import load_description

        desc = load_description(description, backbone=backbone)
        backbone = backbone or desc.backbone
        if args.resolution is None and desc.input_size:
            args.resolution = desc.input_size
    from tlcore.classifiers import classifiers

    params = FeatureExtractionParams(
        classifier=classifiers.canonical(args.classifier), model_description=description,
        taps=tuple(t.strip() for t in args.taps.split(",") if t.strip()) if args.taps else None,
        standardize=args.standardize, discretize=not args.no_discretize, threshold_high=args.threshold_high,
        threshold_low=args.threshold_low, cache=not args.no_cache, cache_dir=args.cache_dir)
    spec = ExperimentSpec("fe", args.dataset, backbone=backbone or "efficientnet_lite0", weights=weights or "default",
                          params=params, **spec_kwargs(args))
    return run_spec(spec, args)


def cmd_ft(args: argparse.Namespace) -> int:
    from tlcore.specs import ExperimentSpec, FineTuningParams

    weights = "default"
    if args.source and args.source.lower() not in ("imagenet", "default", "file"):
        weights = args.source
    if args.model:
        weights = args.model
    if args.source and args.source.lower() == "file" and not args.model:
        from tlcore.errors import SpecError

        raise SpecError("--source file needs --model /path/to/weights.pt naming the weights file.")
    configuration: int | str = args.configuration
    if isinstance(configuration, str) and configuration.lstrip("-").isdigit():
        configuration = int(configuration)
    if not args.dataset and not args.resume:
        from tlcore.errors import SpecError

        raise SpecError("--dataset is required (a registered name such as digits, or a folder), unless --resume "
                        "RUN_ID continues a run with its own settings.")
    params = FineTuningParams(
        configuration=configuration, optimizer=args.optimizer, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, momentum=args.momentum, epochs=args.epochs, patience=args.patience,
        bn_trainable=args.bn_trainable, bn_statistics=args.bn_statistics, resume=args.resume, amp=not args.no_amp,
        lp_epochs=args.lp_epochs, keep_weights=args.keep_weights)
    from tlcore.models import backbones

    backbone = args.backbone
    if backbone not in backbones and backbone.lower() in backbones:
        backbone = backbone.lower()  # the seed's spelling: --architecture VGG16, ResNet50
    # With --resume the run's stored settings are used; the dataset given here (if any) is not.
    spec = ExperimentSpec("ft", args.dataset or "(the resumed run's)", backbone=backbone, weights=weights,
                          params=params, **spec_kwargs(args))
    return run_spec(spec, args)


def cmd_quanta(args: argparse.Namespace) -> int:
    from tlcore.specs import ExperimentSpec, QuantaParams

    layer: int | str = args.layer_to_transfer
    try:
        layer = int(layer)
    except ValueError:
        pass
    if isinstance(layer, int) and layer < -1:
        layer = -1  # the seed: "-1 or a negative value" means every layer
    params = QuantaParams(
        source_task=args.source_task, source_weights=args.source_weights, layer_to_transfer=layer,
        nb_of_runs=args.nb_of_runs, nb_of_target_epochs=args.nb_of_target_epochs,
        nb_of_target_samples=args.nb_of_target_samples or None, augment_data=args.augment_data,
        learning_rate=args.learning_rate, quanta_lr=args.quanta_lr, outdir=args.outdir,
        train_from_previous_training=args.train_from_previous_training, show_only_build=args.show_only_build,
        keep_weights=args.keep_weights)
    seed = args.seed
    if seed < 0:  # the seed: a negative value sets no seed; we draw one and say which, so the run can be replayed
        seed = int.from_bytes(os.urandom(4), "little") % 2**31
        print(f"--seed {args.seed}: no seed given, using seed {seed} (recorded in MLflow).", file=sys.stderr)
    kw = quanta_spec_kwargs(args, seed, resolution=args.resolution, download_weights=args.download_weights)
    spec = ExperimentSpec("quanta", args.target_task, backbone=args.architecture, params=params, **kw)
    return run_spec(spec, args)


def cmd_train_source(args: argparse.Namespace) -> int:
    from tlcore.errors import SpecError
    from tlcore.specs import ExperimentSpec, SourceTrainingParams

    if not args.dataset:
        raise SpecError("train-source needs the task to train on: -s/--source_task (the seed's name) or --dataset, "
                        "e.g. -s cifar10 or --dataset digits:0-4.")
    params = SourceTrainingParams(epochs=args.epochs, learning_rate=args.learning_rate,
                                  augment_data=args.augment_data, out=args.out, outdir=args.outdir,
                                  nb_of_samples=args.nb_of_samples or None, show_only_build=args.show_only_build,
                                  train_from_previous_training=args.train_from_previous_training)
    kw = quanta_spec_kwargs(args, args.seed)
    spec = ExperimentSpec("source", args.dataset, backbone=args.architecture, weights="random", params=params, **kw)
    return run_spec(spec, args)


# ---------------------------------------------------------------------------------------------
# Every other registered method, and the list of methods

#: The registered methods whose commands above keep the seeds' flags, and those commands' names.
SEED_COMMANDS = {"fe": "fe", "ft": "ft", "quanta": "quanta", "source": "train-source"}
#: Every method with a hand-written command (the seeds' and those with flags of their own), and its name.
OWN_COMMANDS = {**SEED_COMMANDS, "rank": "rank"}


def add_method_commands(sub, common: argparse.ArgumentParser) -> None:
    """The seeds' method commands, one command per other registered method, and ``methods``."""
    from tlcore.cli.ranking import add_rank_command
    from tlcore.methods import base

    add_seed_commands(sub, common)
    add_rank_command(sub, common)
    for name in base.names():
        if name not in OWN_COMMANDS:
            add_record_command(sub, common, base.get(name))
    p = sub.add_parser("methods", parents=[common], help="list the registered methods (and their commands)")
    p.set_defaults(func=cmd_methods)


def add_record_command(sub, common: argparse.ArgumentParser, record) -> None:
    """``python -m tlcore NAME``: the shared data and run flags, plus one flag per field of the params class."""
    from tlcore.methods.base import fields_from_params

    p = sub.add_parser(record.name, parents=[common], help=record.cli_help or record.title)
    data_args(p)
    run_args(p)
    g = p.add_argument_group(record.noun)
    g.add_argument("--backbone", default=record.default_backbone,
                   help=f"registered backbone (python -m tlcore backbones); default {record.default_backbone}")
    g.add_argument("--weights", default=record.fixed_weights or "default",
                   help="default (the backbone's pretrained weights), random, or a state_dict file")
    defaults = record.params()
    for f in fields_from_params(record.params):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.kind == "bool":
            g.add_argument(flag, dest=f"param_{f.name}", action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = {"int": int, "float": float}.get(f.kind, str)
            g.add_argument(flag, dest=f"param_{f.name}", type=kind, default=default, help=f"default {default!r}")
    dry_run_arg(p)
    p.set_defaults(func=cmd_record, method=record.name)


def cmd_record(args: argparse.Namespace) -> int:
    from tlcore.methods import base
    from tlcore.specs import ExperimentSpec

    record = base.get(args.method)
    values = {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_")}
    spec = ExperimentSpec(record.name, args.dataset, backbone=args.backbone, weights=args.weights,
                          params=record.params(**values), **spec_kwargs(args))
    return run_spec(spec, args)


def cmd_methods(args: argparse.Namespace) -> int:
    from tlcore.methods import base

    header = f"{'method':8s} {'command':13s} {'label':20s} {'MLflow experiment':20s} {'params':24s} default backbone"
    print(header)
    print("-" * len(header))
    for name in base.names():
        m = base.get(name)
        print(f"{name:8s} {OWN_COMMANDS.get(name, name):13s} {m.label:20s} {m.experiment:20s} "
              f"{m.params.__name__:24s} {m.default_backbone}")
    print(f"\nA method is a record (tlcore.methods.base.Method) registered by its module; modules named in "
          f"${base.PLUGINS_ENV} (comma-separated) register theirs too. See docs/architecture.md.")
    return 0
