"""Commands that are not a method: backbones, datasets, predict, splits, examples, advise."""

from __future__ import annotations

import argparse
import time

from tlcore.cli.args import spc_list


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    """The information and helper commands, in ``python -m tlcore --help`` order (before the methods')."""
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
    p.add_argument("--samples-per-class", type=spc_list, default=None)
    p.set_defaults(func=cmd_splits)


def add_late_commands(sub, common: argparse.ArgumentParser) -> None:
    """``examples`` and ``advise``, listed after the methods."""
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
    """The Guidelines page's answer on the command line (the same :func:`tlcore.guidelines.advise`)."""
    import json

    from tlcore.errors import SpecError
    from tlcore.guidelines import STRENGTH_LABELS, Situation
    from tlcore.guidelines.advice import advise, situation_from_dataset
    from tlcore.planning import format_flops
    from tlcore.units import format_duration

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
