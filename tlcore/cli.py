"""``python -m tlcore``: the command line over the same ``experiments.run`` the app uses.

The method commands accept the flags of the two research tools the product comes from
(tl-tradeoff's ``feature_extraction.py`` / ``fine_tuning.py`` and QUANTA's ``quanta.py``).
User errors print one line on stderr and exit 2, with no traceback unless ``--debug``.
Heavy imports (torch, mlflow) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_CANCELLED = 130

MLFLOW_PATH_HELP = ("where results are stored: a folder (an sqlite store inside; a folder named mlruns, or one that "
                    "already is one, is an MLflow file store as the seed's ../mlruns), a file: URI (a file store) or "
                    "another tracking URI; default: $MLFLOW_TRACKING_URI, else ./mlflow.db")


# ---------------------------------------------------------------------------------------------
# Argument helpers


def _spc_list(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() in ("all", "default", ""):
        return None
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,5,10, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"samples per class must be integers >= 1, got {text!r}")
    return values


def _common_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _data_args(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    g = p.add_argument_group("data")
    if dataset_required:
        g.add_argument("-d", "--dataset", required=True,
                       help="embedded name (digits, lfw_faces), torchvision name (cifar10, dtd, ...) or folder path; "
                            "a class filter carves a task: digits:0-4, cifar10:cat,dog; with --split-path any name "
                            "(the seed's textures, flowers102, ...) reads its images from the CSVs' paths")
    g.add_argument("--split-path", help="folder with the seed's split CSVs (val.csv, test.csv, "
                                        "train_samples_XX_split_K.csv); default: <dataset>/splits, else generated")
    g.add_argument("--splits", type=int, help="draws per samples-per-class value to run (default: all, 5)")
    g.add_argument("--samples-per-class", type=_spc_list, default=None,
                   help="comma-separated grid, e.g. 1,2,5,10 (default: the split set's values, the seed's grid)")
    g.add_argument("--model-selection", action="store_true",
                   help="one training on the largest split, scored on val.csv (choose hyperparameters)")
    g.add_argument("--use-crops", action="store_true", help="10 crops per image (4 corners + centre, mirrored)")
    g.add_argument("--precomputed-crops", help="folder of precomputed crops named image_crop_i.ext (implies crops)")
    g.add_argument("--data-dir", help="where torchvision datasets live (default: $TLCORE_DATA_DIR or "
                                      "~/.cache/tlcore/datasets)")
    g.add_argument("--download", action="store_true", help="download a torchvision dataset if missing (network)")
    g.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images and count them")
    g.add_argument("--resolution", type=int, help="input size in pixels (default: the backbone's)")


def _run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("-b", "--batch-size", type=int, default=None)
    g.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: half the cores)")
    g.add_argument("--mlflow-path", help=MLFLOW_PATH_HELP)
    g.add_argument("--seed-metric-names", action="store_true",
                   help="also log the seeds' metric and param names (tl-tradeoff's 'Test accuracy' in %%, ...; "
                        "QUANTA's Keras names), for notebooks written against the seeds' MLflow runs")
    g.add_argument("--job", help="a job id, kept as a tag (the seed's --job)")
    g.add_argument("--country", default=None, help="3-letter ISO code of the electricity grid for CO2 (default FRA)")
    g.add_argument("--carbon-intensity", type=float, default=None, help="force gCO2e/kWh instead of the country's")
    g.add_argument("--no-energy", action="store_true", help="do not measure energy (CodeCarbon off)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _dry_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and its projected cost (time from this machine's measured paces), then exit "
                        "without running anything or opening MLflow runs")


def _spec_kwargs(args: argparse.Namespace) -> dict:
    kw = dict(
        split_path=args.split_path, splits=args.splits, samples_per_class=args.samples_per_class,
        model_selection=args.model_selection, use_crops=args.use_crops or bool(args.precomputed_crops),
        precomputed_crops=args.precomputed_crops, data_dir=args.data_dir, download=args.download,
        skip_bad_images=args.skip_bad_images, resolution=args.resolution, seed=args.seed, device=args.device,
        num_workers=args.num_workers, mlflow_path=args.mlflow_path, job=args.job,
        measure_energy=not args.no_energy, carbon_intensity_g_per_kwh=args.carbon_intensity,
    )
    if args.seed_metric_names:
        kw["tags"] = {"seed_metric_names": "true"}
    if args.country:
        kw["country_iso_code"] = args.country.upper()
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    return kw


# ---------------------------------------------------------------------------------------------
# Commands: information


def cmd_backbones(args: argparse.Namespace) -> int:
    from tlcore.models import backbones
    from tlcore.models.catalog import backbone_table, tap_candidates

    if args.taps:
        backbones.get(args.taps)
        for name, kind, is_default in tap_candidates(args.taps):
            print(f"{'*' if is_default else ' '} {name:50s} {kind}")
        print("\n* = default taps (the 100% model description)")
        return 0
    rows = backbone_table()
    header = f"{'name':20s} {'params':>9s} {'GFLOPs':>8s} {'input':>6s} {'taps':>5s}  weights offline"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:20s} {r['params_m']:8.1f}M {r['gflops']:8.2f} {r['input_size']:>6d} {r['taps']:>5d}  "
              f"{r['weights']}")
    print("\nGFLOPs: one forward pass of one image at the input size (FLOPs = 2 x multiply-adds).")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from tlcore.data import dataset_info, default_data_dir
    from tlcore.data.torchvision_sets import torchvision_files_present

    data_dir = args.data_dir or default_data_dir()
    print(f"{'name':14s} {'kind':12s} {'classes':>7s} {'images':>8s}  available")
    for info in dataset_info():
        if info.kind == "torchvision":
            avail = "files present" if torchvision_files_present(info.name, data_dir) else "needs --download"
        else:
            avail = "embedded"
        print(f"{info.name:14s} {info.kind:12s} {info.num_classes or '':>7} {info.num_images or '':>8}  {avail}")
    print(f"\nFolder datasets: any path in the layout root/<split>/<label>/image.ext. Torchvision data dir: {data_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tlcore.models.catalog import predict_top_k

    for image, top in predict_top_k(args.backbone, args.images, weights=args.weights, k=args.top,
                                    download=args.download_weights, device=args.device):
        print(image)
        for label, p in top:
            print(f"  {p:6.1%}  {label}")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from tlcore.data import generate_splits, load_dataset, write_split_csvs

    ds = load_dataset(args.dataset)
    splits = generate_splits(ds, seed=args.seed, spc_values=list(args.samples_per_class)
                             if args.samples_per_class else None)
    files = write_split_csvs(ds, splits, args.out)
    counts = ", ".join(f"{s} ({len(d)})" for s, d in splits.train.items())
    print(f"Wrote {len(files)} CSV files to {args.out}: val {len(splits.val)} images, test {len(splits.test)}, "
          f"train splits per samples-per-class (draws): {counts}.")
    return 0


# ---------------------------------------------------------------------------------------------
# Commands: methods


def print_plan(spec, out=None) -> None:
    """``--dry-run``: what the command would run and its projected cost, without opening a run or
    creating a store (the history is read only when the store already exists)."""
    from tlcore.experiments import resolve_defaults
    from tlcore.planning import METHOD_NOUNS, estimate_cost, format_flops
    from tlcore.tracking import Tracker, resolve_tracking_uri, sqlite_path

    out = out or sys.stdout
    uri = resolve_tracking_uri(spec.mlflow_path)
    db = sqlite_path(uri)
    tracker = Tracker(uri) if db is None or db.exists() else None
    spec = resolve_defaults(spec.validate())
    est = estimate_cost(spec, tracker, calibrate=True)
    size = f" at {spec.input_size} px" if spec.input_size else ""
    print(f"Plan: {METHOD_NOUNS[spec.method]} of {spec.backbone}{size} on {spec.dataset}, device {spec.device}: "
          f"{est.runs} MLflow run{'s' if est.runs != 1 else ''}, {est.images:,} image passes x "
          f"{format_flops(est.flops_per_image)} per image = {format_flops(est.flops)}.", file=out)
    for note in est.notes:
        print(f"  {note}", file=out)
    print(f"Projected time: {est.describe_time()} ({est.basis}).", file=out)
    print(f"Dry run: nothing was run and no MLflow run was opened; drop --dry-run to run it (results go to {uri}).",
          file=out)


def _run_spec(spec, args: argparse.Namespace) -> int:
    from tlcore import experiments
    from tlcore.reporting import TerminalReporter

    if getattr(args, "dry_run", False):
        print_plan(spec)
        return 0

    reporter = TerminalReporter(enabled=not args.quiet)
    try:
        result = experiments.run(spec, reporter)
    finally:
        reporter.close()
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
                          params=params, **_spec_kwargs(args))
    return _run_spec(spec, args)


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
                          params=params, **_spec_kwargs(args))
    return _run_spec(spec, args)


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
    kw = dict(seed=seed, device=args.device, mlflow_path=args.mlflow_path, job=args.job,
              measure_energy=not args.no_energy, data_dir=args.data_dir, download=args.download,
              num_workers=args.num_workers, resolution=args.resolution, download_weights=args.download_weights)
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    if args.seed_metric_names:
        kw["tags"] = {"seed_metric_names": "true"}
    spec = ExperimentSpec("quanta", args.target_task, backbone=args.architecture, params=params, **kw)
    return _run_spec(spec, args)


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
    kw = dict(seed=args.seed, device=args.device, mlflow_path=args.mlflow_path, job=args.job,
              measure_energy=not args.no_energy, data_dir=args.data_dir, download=args.download,
              num_workers=args.num_workers)
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    if args.seed_metric_names:
        kw["tags"] = {"seed_metric_names": "true"}
    spec = ExperimentSpec("source", args.dataset, backbone=args.architecture, weights="random", params=params, **kw)
    return _run_spec(spec, args)


def cmd_examples(args: argparse.Namespace) -> int:
    from tlcore.examples import run_examples, summary_lines
    from tlcore.reporting import TerminalReporter
    from tlcore.tracking import mlflow_ui_command, resolve_tracking_uri

    reporter = TerminalReporter(enabled=not args.quiet)
    t0 = time.perf_counter()
    try:
        done = run_examples(args.mlflow_path, quick=args.quick, reporter=reporter, seed=args.seed)
    finally:
        reporter.close()
    print(f"{len(done)} examples, {sum(len(d.all_run_ids) for d in done)} MLflow runs (sweep parents included), "
          f"{time.perf_counter() - t0:.0f} s:")
    for line in summary_lines(args.mlflow_path, done):
        print(f"  {line}")
    uri = resolve_tracking_uri(args.mlflow_path)
    print(f"\nSee them in the app: TLCORE_MLFLOW_PATH={args.mlflow_path} streamlit run app.py, then the pages "
          "📈 Trade-offs (FE and FT curves, cost), 🔬 Quanta (lambda_S per layer, trained vs random source) and "
          f"🗂️ Runs (every run). Or in MLflow's UI: {mlflow_ui_command(uri)}")
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    """The Guidelines page's answer on the command line (the same :func:`tlcore.advice.advise`)."""
    import json

    from tlcore.advice import advise, situation_from_dataset
    from tlcore.errors import SpecError
    from tlcore.guidelines import STRENGTH_LABELS, Situation
    from tlcore.jobs import format_duration
    from tlcore.planning import format_flops

    answers = dict(domain=args.domain, device=args.device, budget_hours=args.budget_hours,
                   budget_kwh=args.budget_kwh, tuning_time=args.tuning_time, deployment_shift=args.deployment_shift,
                   backbone=args.backbone, epochs=args.epochs)
    if args.dataset:
        situation = situation_from_dataset(args.dataset, args.data_dir, samples_per_class=args.samples_per_class,
                                           resolution=args.resolution, **answers)
    elif args.samples_per_class and args.classes:
        situation = Situation(samples_per_class=args.samples_per_class, num_classes=args.classes,
                              resolution=args.resolution, **answers).validate()
    else:
        raise SpecError("Give --dataset NAME (its labels are counted), or --samples-per-class N with --classes K.")
    advice = advise(situation, args.mlflow_path)
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2, default=str))
        return 0
    rec = advice.recommendation
    s = advice.situation
    print(f"Situation: {s.samples_per_class} labelled images per class x {s.num_classes} classes"
          + (f" ({s.dataset})" if s.dataset else "") + f", {s.domain}, backbone {s.backbone}"
          + (f" at {s.resolution} px" if s.resolution else "") + ".")
    print(f"\nRecommendation: {rec.title}")
    print(f"Expected accuracy: {rec.accuracy_note}")
    cost = rec.chosen_cost
    if cost is not None:
        parts = [format_flops(cost.flops)]
        if cost.seconds is not None:
            parts.append(format_duration(cost.seconds))
        if cost.energy_kwh is not None:
            parts.append(f"{cost.energy_kwh:.3g} kWh")
        print("Projected cost: " + " · ".join(parts))
    if rec.caution:
        print(f"Caution: {rec.caution}")
    print("\nWhy:")
    for r in rec.reasons:
        print(f"  - [{r.strength}] {r.text}\n      Source: {r.source.citation}")
    ev = advice.evidence
    if ev is not None and ev.items:
        print("\nEvidence from your runs:")
        for item in ev.items:
            status = "used" if item.used else f"not used: {item.why_not}"
            print(f"  - [{item.strength}] {item.text} ({status})")
    if advice.store_error:
        print(f"\nThe results store could not be read: {advice.store_error}")
    print("\nAlternatives:")
    for o, note in rec.alternatives:
        when = format_duration(o.seconds) if o.seconds is not None else "time unknown"
        print(f"  - {o.label}: {format_flops(o.flops)}, {when}" + (f" ({note})" if note else ""))
    print("\nStrengths: " + "; ".join(STRENGTH_LABELS.values()) + ".")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    common = _common_parent()
    parser = argparse.ArgumentParser(
        prog="python -m tlcore", parents=[common],
        description="TL Lab: feature extraction, fine-tuning and QUANTA on pretrained vision backbones, "
                    "with cost (time, FLOPs, energy, CO2) recorded in MLflow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("backbones", parents=[common], help="list backbones: parameters, GFLOPs, taps, weights")
    p.add_argument("--taps", metavar="NAME", help="list every layer of NAME usable as a tap")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("datasets", parents=[common], help="list registered datasets")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("predict", parents=[common], help="top-5 ImageNet classes: check that weights really loaded")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="default", help="imagenet (default), or a state_dict file")
    p.add_argument("--download-weights", action="store_true", help="download weights if missing (network)")
    p.add_argument("--device", default="auto")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("splits", parents=[common], help="write seed-format split CSVs for a folder dataset")
    p.add_argument("--dataset", required=True, help="dataset folder (root/<split>/<label>/image.ext)")
    p.add_argument("--out", required=True, help="folder for the CSV files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-class", type=_spc_list, default=None)
    p.set_defaults(func=cmd_splits)

    p = sub.add_parser("fe", parents=[common], help="feature extraction (full-network embedding + linear classifier)")
    _data_args(p)
    _run_args(p)
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
    g.add_argument("--classifier", default="linearsvc",
                   help="linearsvc (default, the seed's: scikit-learn's LinearSVC), linear (LinearSVC's objective "
                        "fitted full-batch in torch, on the GPU when there is one: for thousands of images per "
                        "class), svc, sgd (tol 5e-4), knn, logreg, xgboost; the seed's names LinearSVC, SVC, "
                        "SGDClassifier, KNN, XGBoost work too")
    g.add_argument("--standardize", choices=["train", "per_set"], default="train",
                   help="statistics for standardisation: training set (FNE) or each set its own (the seed)")
    g.add_argument("--no-discretize", action="store_true", help="keep standardised values (no {-1,0,1})")
    g.add_argument("--threshold-high", type=float, default=0.15)
    g.add_argument("--threshold-low", type=float, default=-0.25)
    g.add_argument("--cache-dir", help="feature cache folder (default: feature_cache/ beside the results store)")
    g.add_argument("--no-cache", action="store_true", help="extract features afresh and keep nothing on disk")
    _dry_run_arg(p)
    p.set_defaults(func=cmd_fe)

    p = sub.add_parser("ft", parents=[common], help="fine-tuning with freezing configurations 0-3 or lp-ft")
    _data_args(p, dataset_required=False)
    _run_args(p)
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
    _dry_run_arg(p)
    p.set_defaults(func=cmd_ft)

    p = sub.add_parser("quanta", parents=[common], help="QUANTA: per-layer transferability (lambda_S)")
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
    g.add_argument("--device", default="auto")
    g.add_argument("--num-workers", type=int, default=None)
    g.add_argument("--mlflow-path", help=MLFLOW_PATH_HELP)
    g.add_argument("--seed-metric-names", action="store_true", help="also log QUANTA's Keras metric names")
    g.add_argument("--job")
    g.add_argument("--data-dir")
    g.add_argument("--download", action="store_true")
    g.add_argument("--no-energy", action="store_true")
    g.add_argument("--quiet", action="store_true")
    _dry_run_arg(p)
    p.set_defaults(func=cmd_quanta)

    p = sub.add_parser("train-source", parents=[common], help="train a source network (QUANTA's source; the seed's "
                                                              "train_source_model.py)")
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
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--mlflow-path", help=MLFLOW_PATH_HELP)
    p.add_argument("--seed-metric-names", action="store_true", help="also log the seed's Keras metric names")
    p.add_argument("--job")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true")
    p.add_argument("--no-energy", action="store_true")
    p.add_argument("--quiet", action="store_true")
    _dry_run_arg(p)
    p.set_defaults(func=cmd_train_source)

    p = sub.add_parser("examples", parents=[common], help="run the embedded examples (FE, FT, source, QUANTA on "
                                                          "digits) that every analysis page can show")
    p.add_argument("--mlflow-path", required=True, help="folder where results are stored (an sqlite store inside)")
    p.add_argument("--quick", action="store_true", help="a smaller grid (about a minute instead of several)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_examples)

    from tlcore.guidelines import DOMAINS, GPUS, TUNING_TIMES

    p = sub.add_parser("advise", parents=[common], help="feature extraction or fine-tuning, and how deep? The "
                                                        "Guidelines page's answer, from your runs and published "
                                                        "findings")
    g = p.add_argument_group("your labelled data (a dataset, or the numbers)")
    g.add_argument("--dataset", help="count the labels of this dataset (embedded, torchvision or folder path)")
    g.add_argument("--samples-per-class", type=int, help="labelled images per class (default: counted)")
    g.add_argument("--classes", type=int, help="number of classes (with --samples-per-class, without --dataset)")
    g.add_argument("--data-dir")
    g = p.add_argument_group("your images, budget and time")
    g.add_argument("--domain", default="imagenet_like", choices=list(DOMAINS),
                   help="how close your images are to everyday photos")
    g.add_argument("--deployment-shift", action="store_true", help="deployed images will differ from the "
                                                                   "training images")
    g.add_argument("--device", default="this_machine", choices=["this_machine", *GPUS],
                   help="where it runs: this machine (its measured pace) or a named GPU")
    g.add_argument("--budget-hours", type=float, help="compute budget in hours")
    g.add_argument("--budget-kwh", type=float, help="compute budget in kWh")
    g.add_argument("--tuning-time", default="hours", choices=list(TUNING_TIMES),
                   help="time for a hyperparameter search")
    g.add_argument("--backbone", default="efficientnet_lite0")
    g.add_argument("--epochs", type=int, default=40, help="most fine-tuning epochs (the projection's bound)")
    g.add_argument("--resolution", type=int, help="input size in px (default: follows the images)")
    p.add_argument("--mlflow-path", help="results store whose runs are the evidence (default: as every command)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON (method, configuration, expected "
                                                       "accuracy, cost, reasons with source and strength, evidence "
                                                       "used and ignored)")
    p.set_defaults(func=cmd_advise)
    return parser


def _one_line(exc: BaseException) -> str:
    """A user error's sentence; one re-raised by a DataLoader worker carries the worker's traceback
    in its text, and its own message is then the last line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        last = lines[-1]
        return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(lines)


def _fail_orphaned_runs(args: argparse.Namespace) -> list[str]:
    """Mark FAILED the runs whose owner process is dead, with the reason, as the app does at start-up:
    a command killed while it ran (a sweep stopped with kill -9, a closed terminal) left them RUNNING."""
    if not hasattr(args, "mlflow_path"):
        return []  # a command that opens no results store
    import logging

    from tlcore.errors import TLError
    from tlcore.tracking import Tracker

    try:
        tracker = Tracker(args.mlflow_path)
        failed = tracker.fail_orphaned_runs()
    except TLError:
        raise
    except Exception as exc:  # a store we cannot sweep is not a reason to refuse the command
        logging.getLogger(__name__).warning("Could not check for runs left RUNNING in the results store: %s", exc)
        return []
    if failed:
        print(f"Marked {len(failed)} run{'s' if len(failed) > 1 else ''} left RUNNING by a process that has ended as "
              f"FAILED (their 'error' tag says why): {', '.join(failed)}.", file=sys.stderr)
    return failed


def _stop_cleanly_on_sigterm():
    """``kill PID`` (SIGTERM) stops a command like Ctrl-C: its runs end KILLED instead of staying RUNNING.
    Returns the handler it replaced (restored when :func:`main` returns), or None."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    from tlcore.errors import Cancelled, TLError

    previous = None if getattr(args, "dry_run", False) else _stop_cleanly_on_sigterm()
    try:
        _fail_orphaned_runs(args)
        return int(args.func(args) or 0)
    except TLError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("cancelled: the run was stopped and is marked KILLED in MLflow.", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a bug: say so in one line, the traceback behind --debug
        if args.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: unexpected {type(exc).__name__}: {first} (run with --debug for the traceback; this is "
              "a bug, please report it)", file=sys.stderr)
        return EXIT_BUG
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
