"""A fine-tuning sweep of 8 points at 32 px: in this process (torch on every core) vs Ray tasks (one CPU each).

Parallel efficiency = serial time / (workers x Ray time): 1.0 when Ray's workers together are exactly as
fast as one process using every core, which is the honest baseline on one machine (a single process
already uses both cores through torch's threads). Ray's own start-up (``ray.init`` of a local cluster) is
timed apart; the first Ray sweep also pays for starting the worker processes (importing torch in each),
so it is reported apart too, and the Ray figure is the median of the sweeps after it.

Rounds interleave serial and Ray sweeps, so a machine whose load drifts affects both alike. Figures and the
machine go in docs/benchmarks.md.

    .venv/bin/python bench/ray_sweep.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sweep_spec(store: str, epochs: int):
    from tlcore.specs import ExperimentSpec, FineTuningParams

    # 8 points: 2 samples-per-class values x 4 draws, on the 10 digit classes at 32 px
    return ExperimentSpec("ft", "digits", samples_per_class=(5, 10), splits=4, resolution=32, mlflow_path=store,
                          measure_energy=False, num_workers=0, params=FineTuningParams(epochs=epochs))


def serial(store: str, epochs: int, threads: int | None = None) -> float:
    import torch

    from tlcore import experiments

    torch.set_num_threads(threads or os.cpu_count() or 1)
    t = time.perf_counter()
    result = experiments.run(sweep_spec(store, epochs))
    assert len(result.run_ids) == 8, result.run_ids
    return time.perf_counter() - t


def on_ray(store: str, epochs: int, workers: int) -> float:
    from tlcore.executors import Work, make_executor
    from tlcore.reporting import Reporter
    from tlcore.tracking import Tracker

    executor = make_executor("ray", cpus_per_run=1)
    t = time.perf_counter()
    outcome = executor.run(Work("bench", sweep_spec(store, epochs), Reporter(), Tracker(store), "cpu"))
    if outcome.error is not None:
        raise outcome.error
    assert len(outcome.result.run_ids) == 8
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="for the efficiency's denominator")
    args = ap.parse_args()
    os.environ["TLCORE_CHECKPOINT_EVERY_S"] = "60"
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        serial(store, 1)  # warm-up: creates the store, imports, decodes digits once; left out
        import ray

        from tlcore.executors.ray import RayOptions, connect

        t = time.perf_counter()
        connect(RayOptions())  # the local Ray the product starts (one CPU per core)
        startup = time.perf_counter() - t
        first_ray = on_ray(store, args.epochs, args.workers)
        serial_s, one_s, ray_s = [], [], []
        for _ in range(args.repeats):
            serial_s.append(serial(store, args.epochs))
            ray_s.append(on_ray(store, args.epochs, args.workers))
            one_s.append(serial(store, args.epochs, threads=1))
        ray.shutdown()
    s, r, one = statistics.median(serial_s), statistics.median(ray_s), statistics.median(one_s)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"8 FT points at 32 px, {args.epochs} epochs each, digits (10 classes, 5 and 10 per class x 4 draws)")
    def each(xs: list[float]) -> str:
        return ", ".join(f"{x:.1f}" for x in xs)

    print(f"serial, one process on {os.cpu_count()} threads: median {s:.1f} s  ({each(serial_s)})")
    print(f"serial, one process on 1 thread:  median {one:.1f} s  ({each(one_s)})")
    print(f"Ray, {args.workers} workers x 1 CPU:            median {r:.1f} s  ({each(ray_s)})")
    print(f"parallel efficiency serial / ({args.workers} x Ray) = {s / (args.workers * r):.2f} against the process on "
          f"{os.cpu_count()} threads (speed-up {s / r:.2f}x), {one / (args.workers * r):.2f} against one thread "
          f"(T1 / (p x Tp)); goal 0.8")
    print(f"Ray start-up (ray.init, local cluster): {startup:.1f} s; first Ray sweep (worker processes start): "
          f"{first_ray:.1f} s")


if __name__ == "__main__":
    main()
