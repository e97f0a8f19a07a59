"""Trade-offs page speed with 5,000 runs: data load and figure build, cold and cached, against a bare
``mlflow.search_runs`` of the same rows.

SYNTHETIC DATA, FOR THIS BENCHMARK ONLY: the store is seeded with made-up runs (datasets named
``bench_synthetic_*``, accuracies drawn from a formula), written through ``tlcore.tracking.Tracker``
like real runs so MLflow holds them the same way. Nothing here is a result.

Usage:
    python bench/tradeoffs_load.py [--runs 5000] [--store /tmp/tl-lab-bench-5000] [--repeats 5]

The store is seeded once (a few minutes) and reused while it holds the requested number of runs.
Timings are medians of ``--repeats`` interleaved rounds; ratios to the baseline measured in the
same rounds survive a noisy machine better than absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = [f"bench_synthetic_{c}" for c in "abcdef"]
BACKBONES = ["efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large"]
VARIANTS = [("fe", {"classifier": "linearsvc"}), ("fe", {"classifier": "logreg"})] + [
    ("ft", {"configuration": c, "optimizer": "sgd", "learning_rate": 0.01}) for c in (0, 1, 2, 3, "lp-ft")]
SPC = [1, 2, 3, 5, 10, 20]


def seed_store(folder: Path, n_runs: int) -> None:
    """Write ``n_runs`` synthetic runs (sweeps of few-shot points with their parents)."""
    import numpy as np

    from tlcore.tracking import Tracker

    tracker = Tracker(str(folder))
    rng = np.random.default_rng(0)
    written, t0 = 0, time.perf_counter()
    while written < n_runs:
        for d_i, dataset in enumerate(DATASETS):
            for b_i, backbone in enumerate(BACKBONES):
                for method, extra in VARIANTS:
                    if written >= n_runs:
                        return
                    common = {"method": method, "dataset": dataset, "backbone": backbone, "weights": "default",
                              "seed": 0, "device": "cpu", "model_selection": False, "use_crops": False,
                              "energy_method": "estimate: cpu_load_tdp+ram_estimate" if rng.random() < 0.7
                              else "counters: nvml", **extra}
                    sweep = f"bench-{written}"
                    parent = tracker.start_run(method, {**common, "samples_per_class": "sweep", "split": "sweep"},
                                               tags={"sweep_id": sweep, "sweep_parent": "true", "synthetic": "true"},
                                               run_name=f"{dataset} sweep (synthetic)")
                    written += 1
                    for spc in SPC:
                        for split in range(1 if spc == SPC[-1] else 5):
                            if written >= n_runs:
                                break
                            ft = method == "ft"
                            base = 0.3 + 0.1 * d_i / len(DATASETS) + 0.02 * b_i
                            acc = base + (0.45 if ft else 0.35) * (1 - np.exp(-spc / (8 if ft else 3)))
                            acc = float(np.clip(acc + rng.normal(0, 0.02), 0, 1))
                            seconds = (30.0 if ft else 3.0) * spc * (1 + b_i) * float(rng.uniform(0.8, 1.2))
                            run = tracker.start_run(method, {**common, "samples_per_class": spc, "split": split},
                                                    tags={"sweep_id": sweep, "synthetic": "true"},
                                                    parent_run_id=parent.run_id,
                                                    run_name=f"spc={spc} split={split} (synthetic)")
                            run.log_metrics({"test_accuracy": acc, "test_plain_accuracy": acc,
                                             "time_total_s": seconds, "device_hours": seconds / 3600,
                                             "flops_total": seconds * 1e11, "energy_kwh": seconds * 3e-5,
                                             "co2_kg": seconds * 1.5e-6, "images_processed": 100.0 * spc})
                            run.finish()
                            written += 1
                    parent.finish()
                    if written % 500 < 30:
                        print(f"  seeded {written} runs ({time.perf_counter() - t0:.0f} s)", flush=True)


def count_runs(uri: str) -> int:
    from tlcore import results

    return len(results.load_runs(uri, results.RunColumns(), ("fe", "ft")))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--store", default="/tmp/tl-lab-bench-5000")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from tlcore.tracking import resolve_tracking_uri

    folder = Path(args.store)
    uri = resolve_tracking_uri(str(folder))
    have = count_runs(uri) if (folder / "mlflow.db").exists() else 0
    if have != args.runs:
        print(f"Seeding {args.runs} synthetic runs into {folder} (found {have}) ...", flush=True)
        if (folder / "mlflow.db").exists():
            (folder / "mlflow.db").unlink()
        seed_store(folder, args.runs)
    os.environ["TLCORE_MLFLOW_PATH"] = str(folder)

    import subprocess

    import pandas as pd

    from tlcore import plots, results

    t_import = statistics.median(
        timed(subprocess.run, [sys.executable, "-c", "import mlflow"], check=True)[0]
        - timed(subprocess.run, [sys.executable, "-c", "pass"], check=True)[0] for _ in range(3))
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    exp_ids = [MlflowClient(uri).get_experiment_by_name(n).experiment_id for n in ("Feature extraction", "Fine-tuning")]

    def baseline():
        return mlflow.search_runs(experiment_ids=exp_ids, max_results=100_000)

    def figures(df):
        """What one rerun of the page computes and serialises (Streamlit sends the figure JSON)."""
        shown = results.filter_runs(df, results.RunFilter())
        pts = results.tradeoff_points(shown, "energy_kwh", "test_accuracy")
        front = results.pareto_front(pts, "energy_kwh", "test_accuracy")
        figs = [plots.tradeoff_scatter(pts, "energy_kwh", "test_accuracy", front)]
        curves = results.learning_curves(shown)
        cross = results.crossovers(curves)
        pair = curves[["dataset", "backbone"]].drop_duplicates().iloc[0]
        part = curves[(curves["dataset"] == pair["dataset"]) & (curves["backbone"] == pair["backbone"])]
        figs.append(plots.learning_curve_figure(part, cross[cross["dataset"] == pair["dataset"]]))
        ratio = results.cost_ratio(shown, "time_total_s")
        figs.append(plots.cost_ratio_figure(ratio[(ratio["dataset"] == pair["dataset"])
                                                  & (ratio["backbone"] == pair["backbone"])]))
        table = results.display_table(front, ["test_accuracy"], ["energy_kwh"])
        return [f.to_json() for f in figs], table

    from pages.shared import results_cache

    # Cold through the page's cache (first call) and cached (later calls: unpickling a copy).
    t_cache_cold, df = timed(results_cache.runs, "tradeoffs")
    rows = {"baseline": [], "sqlite": [], "client": [], "cached": [], "figures": []}
    for _ in range(args.repeats):
        rows["baseline"].append(timed(baseline)[0])
        rows["sqlite"].append(timed(results.load_view, uri, "tradeoffs")[0])
        rows["client"].append(timed(lambda: results._tidy(
            results._read_client(uri, results.TRADEOFF_COLUMNS, ["Feature extraction", "Fine-tuning"], False),
            results.TRADEOFF_COLUMNS))[0])
        rows["cached"].append(timed(results_cache.runs, "tradeoffs")[0])
        rows["figures"].append(timed(figures, df)[0])
    base_rows = len(baseline())

    # The whole page under AppTest: first run (cache warm from above: the script, imports, figures)
    # and reruns, i.e. what a click costs on the server.
    from streamlit.testing.v1 import AppTest

    page = str(ROOT / "pages" / "2_📈_Trade-offs.py")
    results_cache.clear()
    at = AppTest.from_file(page, default_timeout=300)
    t_first, _ = timed(at.run)
    reruns = [timed(at.run)[0] for _ in range(args.repeats)]
    assert not at.exception, [e.value for e in at.exception]

    med = {k: statistics.median(v) for k, v in rows.items()}
    base = med["baseline"]

    def line(label: str, seconds: float, vs_baseline: bool = True) -> str:
        ratio = f"   {seconds / base:7.4f}x baseline ({base / seconds:6.0f}x faster)" if vs_baseline else ""
        return f"  {label:<44s}{seconds:8.3f}{ratio}"

    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, pandas {pd.__version__}, "
          f"mlflow {mlflow.__version__}")
    print(f"Store: {uri}: {len(df)} FE/FT runs in the page's frame, {base_rows} rows from mlflow.search_runs")
    print(f"Medians of {args.repeats} interleaved rounds (seconds):")
    print(line("import mlflow, fresh process (sqlite path: none)", t_import, False))
    print(f"  {'baseline: mlflow.search_runs (pandas)':<44s}{base:8.3f}")
    print(line("load_view, sqlite read path, cold", med["sqlite"]))
    print(line("load_view, MlflowClient path, cold", med["client"]))
    print(line("page cache, first call (cold)", t_cache_cold))
    print(line("page cache, cached call", med["cached"]))
    print(line("analyses + 3 figures + JSON (one rerun)", med["figures"], False))
    print(line("whole page (AppTest), first run", t_first, False))
    print(line("whole page (AppTest), rerun = a click", statistics.median(reruns), False) + "   (goal: < 2 s)")

if __name__ == "__main__":
    main()
