"""Trade-offs page speed with 5,000 runs: data load and figure build, cold and cached, against a bare
``mlflow.search_runs`` of the same rows.

SYNTHETIC DATA, FOR THIS BENCHMARK ONLY: the store is seeded with made-up runs (datasets named
``bench_synthetic_*``, tag ``synthetic=true``, accuracies drawn from a formula). The store and its
experiments are created through ``tlcore.tracking.Tracker``; the runs are then written in bulk
through MLflow's own SQLAlchemy models (50,000 runs in ~2 min instead of ~3 h through the MLflow
API), row for row what ``Tracker`` writes (``--slow-seed`` writes them through ``Tracker``; a test,
tests/test_bench_seeding.py, holds the two equal). Nothing here is a result.

Usage:
    python bench/tradeoffs_load.py [--runs 5000] [--store /tmp/tl-lab-bench-5000] [--repeats 5] [--slow-seed]

The store is seeded once and reused while it holds the requested number of runs.
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


def synthetic_sweeps(n_runs: int):
    """The synthetic runs, as data: ``(parent, children)`` per sweep, each run a dict of ``method``,
    ``params``, ``tags``, ``run_name`` and (children) ``metrics``. Both seeders write exactly these."""
    import numpy as np

    rng = np.random.default_rng(0)
    written = 0
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
                    parent = {"method": method, "params": {**common, "samples_per_class": "sweep", "split": "sweep"},
                              "tags": {"sweep_id": sweep, "sweep_parent": "true", "synthetic": "true"},
                              "run_name": f"{dataset} sweep (synthetic)"}
                    written += 1
                    children = []
                    for spc in SPC:
                        for split in range(1 if spc == SPC[-1] else 5):
                            if written >= n_runs:
                                break
                            ft = method == "ft"
                            base = 0.3 + 0.1 * d_i / len(DATASETS) + 0.02 * b_i
                            acc = base + (0.45 if ft else 0.35) * (1 - np.exp(-spc / (8 if ft else 3)))
                            acc = float(np.clip(acc + rng.normal(0, 0.02), 0, 1))
                            seconds = (30.0 if ft else 3.0) * spc * (1 + b_i) * float(rng.uniform(0.8, 1.2))
                            children.append({
                                "method": method, "params": {**common, "samples_per_class": spc, "split": split},
                                "tags": {"sweep_id": sweep, "synthetic": "true"},
                                "run_name": f"spc={spc} split={split} (synthetic)",
                                "metrics": {"test_accuracy": acc, "test_plain_accuracy": acc,
                                            "time_total_s": seconds, "device_hours": seconds / 3600,
                                            "flops_total": seconds * 1e11, "energy_kwh": seconds * 3e-5,
                                            "co2_kg": seconds * 1.5e-6, "images_processed": 100.0 * spc}})
                            written += 1
                    yield parent, children


def seed_store_slow(folder: Path, n_runs: int) -> None:
    """Write ``n_runs`` synthetic runs through ``Tracker``, one MLflow call at a time (~0.1-0.25 s a run)."""
    from tlcore.tracking import Tracker

    tracker = Tracker(str(folder))
    written, t0 = 0, time.perf_counter()
    for parent_spec, children in synthetic_sweeps(n_runs):
        parent = tracker.start_run(parent_spec["method"], parent_spec["params"], tags=parent_spec["tags"],
                                   run_name=parent_spec["run_name"])
        for child in children:
            run = tracker.start_run(child["method"], child["params"], tags=child["tags"],
                                    parent_run_id=parent.run_id, run_name=child["run_name"])
            run.log_metrics(child["metrics"])
            run.finish()
        parent.finish()
        written += 1 + len(children)
        if written % 500 < 30:
            print(f"  seeded {written} runs ({time.perf_counter() - t0:.0f} s)", flush=True)


def seed_store_fast(folder: Path, n_runs: int, chunk: int = 5000) -> None:
    """Write the same runs as :func:`seed_store_slow` in bulk INSERTs through MLflow's own SQLAlchemy
    models (thousands of runs a second instead of a few). The store and its experiments are created
    through ``Tracker`` first, so the schema, migrations and experiment rows are MLflow's; each run
    gets the rows MLflow would write: ``runs``, ``params``, ``tags`` (ours, ``mlflow.runName``,
    ``mlflow.parentRunId``, the verdict ``finish()`` records), ``metrics`` and ``latest_metrics``.
    Only ids and times differ (a test holds the two seeders equal)."""
    import os as _os
    import socket
    import uuid

    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import create_engine, insert

    from tlcore import quality
    from tlcore.tracking import (
        TAG_HEARTBEAT,
        TAG_HOST,
        TAG_PID,
        TAG_START,
        Tracker,
        _process_start_time,
        _stringify,
        experiment_of,
    )
    from tlcore.version import __version__

    tracker = Tracker(str(folder))
    experiments = {}
    for method in dict.fromkeys(m for m, _ in VARIANTS):
        eid = tracker.experiment_id(experiment_of(method))
        experiments[method] = (int(eid), tracker.client.get_experiment(eid).artifact_location)
    pid = _os.getpid()
    own_tags = {"tlcore_version": __version__, TAG_PID: str(pid), TAG_HOST: socket.gethostname(),
                TAG_START: str(_process_start_time(pid) or "")}
    engine = create_engine(tracker.uri)
    rows: dict = {"runs": [], "params": [], "tags": [], "metrics": []}
    clock = [int(time.time() * 1000)]  # synthetic start times, 20 ms apart

    def add(spec: dict, run_id: str, parent_id: str | None, verdict, start: int | None = None) -> None:
        if start is None:
            start = clock[0] = clock[0] + 20
        method = spec["method"]
        eid, location = experiments[method]
        rows["runs"].append({"run_uuid": run_id, "name": spec["run_name"], "source_type": "UNKNOWN",
                             "source_name": "", "entry_point_name": "", "user_id": "unknown",
                             "status": "FINISHED", "start_time": start, "end_time": start + 15,
                             "source_version": "", "lifecycle_stage": "active",
                             "artifact_uri": f"{location}/{run_id}/artifacts", "experiment_id": eid})
        tags = {**own_tags, TAG_HEARTBEAT: f"{start / 1000:.0f}", "method": method,
                **({"mlflow.parentRunId": parent_id} if parent_id else {}),
                **{k: str(v) for k, v in spec["tags"].items()}, "mlflow.runName": spec["run_name"],
                **(verdict.tags() if verdict is not None else {})}
        rows["tags"] += [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()]
        rows["params"] += [{"run_uuid": run_id, "key": k, "value": _stringify(v)} for k, v in spec["params"].items()]
        rows["metrics"] += [{"run_uuid": run_id, "key": k, "value": float(v), "timestamp": start + 5, "step": 0,
                             "is_nan": False} for k, v in spec.get("metrics", {}).items()]

    def flush() -> None:
        with engine.begin() as con:
            for model, key in ((SqlRun, "runs"), (SqlParam, "params"), (SqlTag, "tags"), (SqlMetric, "metrics"),
                               (SqlLatestMetric, "metrics")):
                if rows[key]:
                    con.execute(insert(model.__table__), rows[key])
        for key in rows:
            rows[key] = []

    written, t0 = 0, time.perf_counter()
    for parent_spec, children in synthetic_sweeps(n_runs):
        # the parent row is added after its children (it sums up their verdicts), started before them
        parent_id, parent_start = uuid.uuid4().hex, clock[0] + 20
        clock[0] = parent_start
        verdicts = []
        for child in children:
            params = {k: _stringify(v) for k, v in child["params"].items()}
            verdict = quality.judge_run(child["method"], "FINISHED", params, child["metrics"], [], None)
            verdicts.append(verdict.quality if verdict else None)
            add(child, uuid.uuid4().hex, parent_id, verdict)
        add(parent_spec, parent_id, None, quality.summarize(verdicts), parent_start)
        written += 1 + len(children)
        if len(rows["runs"]) >= chunk:
            flush()
            print(f"  seeded {written} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    flush()
    engine.dispose()


def seed_store(folder: Path, n_runs: int, fast: bool = True) -> None:
    """Write ``n_runs`` synthetic runs (sweeps of few-shot points with their parents)."""
    (seed_store_fast if fast else seed_store_slow)(folder, n_runs)


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
    ap.add_argument("--slow-seed", action="store_true", help="seed through Tracker, one MLflow call at a time")
    ap.add_argument("--slow-repeats", type=int, default=None,
                    help="rounds of the slow reads (search_runs, the MlflowClient path, --server); default --repeats")
    ap.add_argument("--server", default=None,
                    help="also time the page's loader against this tracking server (e.g. http://127.0.0.1:5055)")
    args = ap.parse_args()

    from tlcore.tracking import resolve_tracking_uri

    folder = Path(args.store)
    uri = resolve_tracking_uri(str(folder))
    have = count_runs(uri) if (folder / "mlflow.db").exists() else 0
    if have != args.runs:
        print(f"Seeding {args.runs} synthetic runs into {folder} (found {have}) ...", flush=True)
        if (folder / "mlflow.db").exists():
            (folder / "mlflow.db").unlink()
        seed_store(folder, args.runs, fast=not args.slow_seed)
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
    rows: dict[str, list[float]] = {"baseline": [], "sqlite": [], "client": [], "server": [], "cached": [],
                                    "figures": []}
    slow_repeats = args.repeats if args.slow_repeats is None else args.slow_repeats
    for i in range(args.repeats):
        if i < slow_repeats:
            rows["baseline"].append(timed(baseline)[0])
            rows["client"].append(timed(lambda: results._tidy(
                results._read_client(uri, results.TRADEOFF_COLUMNS, ["Feature extraction", "Fine-tuning"], False),
                results.TRADEOFF_COLUMNS))[0])
            if args.server:
                rows["server"].append(timed(results.load_view, args.server, "tradeoffs")[0])
        rows["sqlite"].append(timed(results.load_view, uri, "tradeoffs")[0])
        rows["cached"].append(timed(results_cache.runs, "tradeoffs")[0])
        rows["figures"].append(timed(figures, df)[0])
    base_rows = len(baseline()) if args.runs <= 20_000 else args.runs

    # The whole page under AppTest: a first run with the page's cache cleared (the store read, the
    # analyses and figures; imports are already warm) and a rerun, i.e. what a click costs on the server.
    from streamlit.testing.v1 import AppTest

    page = str(ROOT / "pages" / "2_📈_Trade-offs.py")
    firsts, reruns = [], []
    for _ in range(args.repeats):
        results_cache.clear()
        at = AppTest.from_file(page, default_timeout=600)
        firsts.append(timed(at.run)[0])
        reruns.append(timed(at.run)[0])
        assert not at.exception, [e.value for e in at.exception]
    t_first = statistics.median(firsts)

    med = {k: statistics.median(v) if v else float("nan") for k, v in rows.items()}
    base = med["baseline"]

    def line(label: str, seconds: float, vs_baseline: bool = True) -> str:
        ratio = f"   {seconds / base:7.4f}x baseline ({base / seconds:6.0f}x faster)" if vs_baseline else ""
        return f"  {label:<44s}{seconds:8.3f}{ratio}"

    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, pandas {pd.__version__}, "
          f"mlflow {mlflow.__version__}")
    print(f"Store: {uri}: {len(df)} FE/FT runs in the page's frame, {base_rows} rows from mlflow.search_runs")
    print(f"Medians of {args.repeats} interleaved rounds ({slow_repeats} of the slow reads), seconds; "
          f"load average now {os.getloadavg()[0]:.1f}:")
    print(line("import mlflow, fresh process (sqlite path: none)", t_import, False))
    print(f"  {'baseline: mlflow.search_runs (pandas)':<44s}{base:8.3f}")
    print(line("load_view, sqlite read path, cold", med["sqlite"]))
    print(line("load_view, MlflowClient path, cold", med["client"]))
    if args.server:
        print(line(f"load_view, server {args.server}", med["server"]))
    print(line("page cache, first call (cold)", t_cache_cold))
    print(line("page cache, cached call", med["cached"]))
    print(line("analyses + 3 figures + JSON (one rerun)", med["figures"], False))
    print(line("whole page (AppTest), first run", t_first, False))
    print(line("whole page (AppTest), rerun = a click", statistics.median(reruns), False) + "   (goal: < 2 s)")

if __name__ == "__main__":
    main()
