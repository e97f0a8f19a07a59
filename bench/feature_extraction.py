"""Feature extraction benchmarks: (a) pipeline throughput from image files vs the bare forward, (b) a
few-shot curve extracting once vs re-extracting for every run (the seed's way).

    python bench/feature_extraction.py throughput [--images 256 --batch-size 64 --resolution 224]
    python bench/feature_extraction.py throughput --resolution 32 --images 2048 --repeats 5
    python bench/feature_extraction.py curve [--resolution 64 --repeats 3 --existing-store]
    python bench/feature_extraction.py            # both

Each measurement is interleaved with its baseline in the same process and repeated; the
medians are compared, as ratios, which survive a noisy shared machine better than seconds.
Goals: (a) >= 0.8 at 32 px and at 224 px, (b) >= 8x. (a)'s baseline is the forward the pipeline
runs (up to the last tap, with its pooling) on tensors decoded, resized and normalised beforehand;
the full ``model(x)`` forward is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlcore import experiments
from tlcore.classifiers import fit_predict
from tlcore.data import load_dataset
from tlcore.data.loading import ImageBatches, default_num_workers, normalize_batch
from tlcore.devices import hardware_info, resolve_device
from tlcore.measure import EnergySettings
from tlcore.methods.common import load_data, plan_points, score_metrics
from tlcore.methods.feature_extraction import (
    Extractor,
    full_network_embedding,
    iter_features,
    resolve_taps,
)
from tlcore.models import create_backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams


def write_digits_pngs(root: Path, n_images: int, size: int = 32) -> Path:
    """Digits as PNG files in the seed layout (train/<label>/...), ``n_images`` in all."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for k in range(n_images):
        i = k % len(d.target)  # past 1,797 images the digits repeat, as new files
        folder = root / "train" / f"digit{d.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        img = (d.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(img, mode="L").resize((size, size)).save(folder / f"{k:05d}.png")
    return root


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


# ---------------------------------------------------------------------------------------------
# (a) throughput


def bench_throughput(args: argparse.Namespace) -> float:
    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="fe-bench-"))
    root = write_digits_pngs(tmp / "digits_png", args.images)
    spec = ExperimentSpec("fe", str(root), backbone=args.backbone, resolution=args.resolution,
                          batch_size=args.batch_size, num_workers=args.num_workers).validate()
    ds = load_dataset(str(root))
    sel = resolve_taps(spec)
    bb = create_backbone(args.backbone).eval().to(device)
    prep = replace(bb.preprocessing, input_size=spec.input_size)
    indices = np.arange(len(ds))
    energy = EnergySettings()

    # ready tensors for the bare forward: the same images, decoded and normalised beforehand
    images = ImageBatches(ds, indices, prep)
    ready = [normalize_batch(torch.stack([images[j][0] for j in range(i, min(i + args.batch_size, len(ds)))]),
                             prep, device) for i in range(0, len(ds), args.batch_size)]

    def bare() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for x in ready:
                bb.extract_taps(x, sel.taps)  # the network work the pipeline does
        return time.perf_counter() - t

    def full() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for x in ready:
                bb(x)
        return time.perf_counter() - t

    def pipeline(k: int) -> float:
        from tlcore.features import FeatureCache

        cache = FeatureCache.open(tmp / f"cache-{k}", {"bench": k})  # empty: every image is extracted and written
        ex = Extractor(spec, ds, bb, sel.taps, prep, device, cache, energy, 0)
        t = time.perf_counter()
        bank, stats = ex.run(indices, Reporter())
        elapsed = time.perf_counter() - t
        assert stats.extracted == len(ds) and bank.available.all()
        return elapsed

    pipeline(-1)  # warm-up: worker start, codecarbon's first start (~1.5 s), allocator
    bare()
    t_bare, t_full, t_pipe = [], [], []
    for k in range(args.repeats):
        t_bare.append(bare())
        t_full.append(full())
        t_pipe.append(pipeline(k))
    ratio = _median(t_bare) / _median(t_pipe)
    print(f"(a) throughput, {args.backbone} at {spec.input_size}px, batch {args.batch_size}, {len(ds)} PNG files, "
          f"{args.repeats} interleaved repeats, num_workers={args.num_workers} "
          f"(resolved: {default_num_workers(device) if args.num_workers is None else args.num_workers})")
    print(f"    bare taps forward, ready tensors: {len(ds) / _median(t_bare):8.1f} img/s  (runs: "
          f"{', '.join(f'{x:.2f}' for x in t_bare)} s)")
    print(f"    full model(x), ready tensors:  {len(ds) / _median(t_full):8.1f} img/s  (runs: "
          f"{', '.join(f'{x:.2f}' for x in t_full)} s)")
    print(f"    FE pipeline from files:       {len(ds) / _median(t_pipe):8.1f} img/s  (runs: "
          f"{', '.join(f'{x:.2f}' for x in t_pipe)} s)")
    print(f"    ratio pipeline / bare = {ratio:.2f}  (goal >= 0.8)")
    return ratio


# ---------------------------------------------------------------------------------------------
# (b) curve: extract once vs re-extract per run


def seed_way(spec: ExperimentSpec) -> tuple[float, list[float]]:
    """Every run extracts its own train and test images afresh, like the seed (no MLflow: favours it)."""
    device = resolve_device(spec.device)
    ds, splits = load_data(spec)
    points = plan_points(spec, ds, splits)
    sel = resolve_taps(spec)
    t = time.perf_counter()
    bb = create_backbone(spec.backbone).eval().to(device)
    prep = replace(bb.preprocessing, input_size=spec.input_size)
    p = spec.params
    accs = []
    for point in points:
        feats = {}
        for name, idx in (("train", point.train), ("eval", point.eval)):
            chunks = [f for _, f, _ in iter_features(bb, ImageBatches(ds, idx, prep), sel.taps, device,
                                                     spec.batch_size, spec.num_workers)]
            feats[name] = np.concatenate(chunks)
        z_train, z_eval = full_network_embedding(feats["train"], [feats["eval"]], p.standardize, p.discretize,
                                                 p.threshold_high, p.threshold_low)
        pred = fit_predict(p.classifier, z_train, ds.labels[point.train], z_eval, spec.seed).predictions
        accs.append(score_metrics("test", ds.labels[point.eval], pred)["test_accuracy"])
    return time.perf_counter() - t, accs


def bench_curve(args: argparse.Namespace) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="fe-bench-curve-"))
    spc = tuple(int(s) for s in args.spc.split(","))
    base = dict(backbone=args.backbone, resolution=args.resolution, samples_per_class=spc, splits=5,
                batch_size=args.batch_size, num_workers=args.num_workers, device=args.device)
    t_ours, t_seed, t_kept, accs_ours, accs_seed = [], [], [], None, None
    for k in range(args.repeats):
        if args.existing_store:  # the same, into a store that exists already (a user's): no schema to create
            from tlcore.tracking import Tracker

            kept = Tracker(str(tmp / f"kept-{k}"))
            kept.experiment_id("Feature extraction")
            spec = ExperimentSpec("fe", args.dataset, mlflow_path=str(tmp / f"kept-{k}"),
                                  params=FeatureExtractionParams(cache_dir=str(tmp / f"kept-cache-{k}")), **base)
            t = time.perf_counter()
            experiments.run(spec, Reporter(), kept)
            t_kept.append(time.perf_counter() - t)
        # ours, end to end through experiments.run (MLflow runs, energy, a cold feature cache)
        spec = ExperimentSpec("fe", args.dataset, mlflow_path=str(tmp / f"res-{k}"),
                              params=FeatureExtractionParams(cache_dir=str(tmp / f"cache-{k}")), **base)
        t = time.perf_counter()
        result = experiments.run(spec, Reporter())
        t_ours.append(time.perf_counter() - t)
        from tlcore.tracking import Tracker

        tracker = Tracker(str(tmp / f"res-{k}"))
        accs_ours = [tracker.get_run(r).data.metrics["test_accuracy"] for r in result.run_ids]
        if k < args.seed_repeats:
            elapsed, accs_seed = seed_way(ExperimentSpec("fe", args.dataset, **base).validate())
            t_seed.append(elapsed)
    ratio = _median(t_seed) / _median(t_ours)
    n = len(accs_ours)
    ds, splits = load_data(ExperimentSpec("fe", args.dataset, **base).validate())
    points = plan_points(spec, ds, splits)
    once = len(np.unique(np.concatenate([np.concatenate([p.train, p.eval]) for p in points])))
    per_run = sum(len(p.train) + len(p.eval) for p in points)
    print(f"(b) curve on {args.dataset}, {args.backbone} at {args.resolution}px, spc {args.spc} x 5 splits = {n} runs")
    print(f"    extract once (experiments.run, cold cache, MLflow + energy on): median {_median(t_ours):.1f} s "
          f"(runs: {', '.join(f'{x:.1f}' for x in t_ours)})")
    print(f"    re-extract per run (the seed's way, no MLflow):                median {_median(t_seed):.1f} s "
          f"(runs: {', '.join(f'{x:.1f}' for x in t_seed)})")
    if t_kept:
        print(f"    extract once, into an existing store:                          median {_median(t_kept):.1f} s "
              f"(runs: {', '.join(f'{x:.1f}' for x in t_kept)}): {_median(t_seed) / _median(t_kept):.1f}x")
    print(f"    images forwarded: {once} once vs {per_run} re-extracting (x{per_run / once:.1f}: the bound without "
          "classifier time)")
    same = np.allclose(accs_ours, accs_seed, atol=1e-9)
    print(f"    speed-up = {ratio:.1f}x  (goal >= 8x); accuracies identical to the seed's way: {same} "
          f"(mean {np.mean(accs_ours):.3f})")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", choices=["throughput", "curve", "both"], default="both")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=256, help="(a) PNG files to extract")
    ap.add_argument("--resolution", type=int, default=None, help="input size (default: 224 for (a), 64 for (b))")
    ap.add_argument("--dataset", default="digits", help="(b) dataset")
    ap.add_argument("--spc", default="1,2,5,10", help="(b) samples-per-class grid (5 splits each)")
    ap.add_argument("--seed-repeats", type=int, default=1, help="(b) repeats of the slow baseline")
    ap.add_argument("--existing-store", action="store_true",
                    help="(b) also time ours into a store created beforehand (a user's store exists already)")
    args = ap.parse_args()
    hw = hardware_info()
    print(f"machine: {hw.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.which in ("throughput", "both"):
        bench_throughput(argparse.Namespace(**{**vars(args), "resolution": args.resolution or 224}))
    if args.which in ("curve", "both"):
        bench_curve(argparse.Namespace(**{**vars(args), "resolution": args.resolution or 64}))


if __name__ == "__main__":
    main()
