"""Flags every command shares (data, run, --dry-run) and the spec fields they fill."""

from __future__ import annotations

import argparse

MLFLOW_PATH_HELP = ("where results are stored: a folder (an sqlite store inside; a folder named mlruns, or one that "
                    "already is one, is an MLflow file store as the seed's ../mlruns), a file: URI (a file store) or "
                    "another tracking URI; default: $MLFLOW_TRACKING_URI, else ./mlflow.db")


def spc_list(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() in ("all", "default", ""):
        return None
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,5,10, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"samples per class must be integers >= 1, got {text!r}")
    return values


def common_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def data_args(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    g = p.add_argument_group("data")
    if dataset_required:
        g.add_argument("-d", "--dataset", required=True,
                       help="embedded name (digits, lfw_faces), torchvision name (cifar10, dtd, ...) or folder path; "
                            "a class filter carves a task: digits:0-4, cifar10:cat,dog; with --split-path any name "
                            "(the seed's textures, flowers102, ...) reads its images from the CSVs' paths")
    g.add_argument("--split-path", help="folder with the seed's split CSVs (val.csv, test.csv, "
                                        "train_samples_XX_split_K.csv); default: <dataset>/splits, else generated")
    g.add_argument("--splits", type=int, help="draws per samples-per-class value to run (default: all, 5)")
    g.add_argument("--samples-per-class", type=spc_list, default=None,
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


def run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("-b", "--batch-size", type=int, default=None)
    g.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers (default: none on the CPU, half the cores on a GPU)")
    g.add_argument("--mlflow-path", help=MLFLOW_PATH_HELP)
    g.add_argument("--seed-metric-names", action="store_true",
                   help="also log the seeds' metric and param names (tl-tradeoff's 'Test accuracy' in %%, ...; "
                        "QUANTA's Keras names), for notebooks written against the seeds' MLflow runs")
    g.add_argument("--job", help="a job id, kept as a tag (the seed's --job)")
    g.add_argument("--country", default=None, help="3-letter ISO code of the electricity grid for CO2 (default FRA)")
    g.add_argument("--carbon-intensity", type=float, default=None, help="force gCO2e/kWh instead of the country's")
    g.add_argument("--no-energy", action="store_true", help="do not measure energy (CodeCarbon off)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    executor_args(p)


def executor_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where the job runs: this process (default) or Ray tasks (docs/cluster.md)."""
    g = p.add_argument_group("where it runs") if isinstance(p, argparse.ArgumentParser) else p
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (default): in this process; ray: as Ray tasks (a fine-tuning sweep: one task per "
                        "point), on --ray-address or a Ray started on this machine")
    g.add_argument("--ray-address", default=None, help="a Ray cluster to join, e.g. ray://HEAD:10001 or HEAD:6379 "
                                                       "(default: start a local Ray; `ray job submit` sets it)")
    g.add_argument("--cpus-per-run", type=float, default=None, help="CPUs each Ray task takes (default 1)")
    g.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs each Ray task takes (default 0; 0.25 packs four runs on one GPU, with no memory limit)")
    g.add_argument("--max-retries", type=int, default=None,
                   help="times a Ray task whose worker died is run again, continuing its runs (default 3)")


def executor_of(args: argparse.Namespace):
    """The executor the flags ask for (``--executor`` and its options)."""
    from tlcore.executors import make_executor

    return make_executor(getattr(args, "executor", "local") or "local", address=args.ray_address,
                         cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                         max_retries=args.max_retries)


def dry_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and its projected cost (time from this machine's measured paces), then exit "
                        "without running anything or opening MLflow runs")


def spec_kwargs(args: argparse.Namespace) -> dict:
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
