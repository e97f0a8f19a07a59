"""GPU figures that need a whole fine-tuning job: (amp) FT images/s with AMP vs fp32, (pack) four FT points
packed on one GPU as Ray tasks with 0.25 GPU each vs the same four one after another in one process.

bench/gpu.sh runs this beside the other benches' GPU modes; on a CPU, ``--small`` checks that it runs.
Images/s = images passed through the network (train, val and test passes) / the run's time_total_s, the
median over the runs of a sweep; rounds interleave the two settings.

    .venv/bin/python bench/gpu.py amp  [--resolution 224 --spc 50 --epochs 3]
    .venv/bin/python bench/gpu.py pack [--resolution 224 --spc 50 --epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spec(store: str, args, amp: bool = True, splits: int = 1, spc: int | None = None):
    from tlcore.specs import ExperimentSpec, FineTuningParams

    return ExperimentSpec("ft", "digits", samples_per_class=(spc or args.spc,), splits=splits,
                          resolution=args.resolution, mlflow_path=store, measure_energy=False, device=args.device,
                          batch_size=args.batch_size, params=FineTuningParams(epochs=args.epochs, amp=amp))


def images_per_s(store: str, run_ids: list[str]) -> float:
    from tlcore.tracking import Tracker

    tracker = Tracker(store)
    rates = [m["images_processed"] / m["time_total_s"] for m in (tracker.get_run(r).data.metrics for r in run_ids)]
    return statistics.median(rates)


def amp(args, store: str) -> None:
    from tlcore import experiments

    experiments.run(spec(store, args, splits=1, spc=2))  # warm-up: imports, cuDNN, the store
    rates: dict[str, list[float]] = {"amp": [], "fp32": []}
    for _ in range(args.repeats):
        for name, on in (("amp", True), ("fp32", False)):
            result = experiments.run(spec(store, args, amp=on))
            rates[name].append(images_per_s(store, result.run_ids))
    a, f = statistics.median(rates["amp"]), statistics.median(rates["fp32"])
    print(f"FT {args.resolution} px, batch {args.batch_size}, {args.spc}/class x 10 classes, {args.epochs} epochs: "
          f"AMP {a:.0f} images/s, fp32 {f:.0f} images/s, AMP/fp32 {a / f:.2f}x (medians of {args.repeats})")


def pack(args, store: str) -> None:
    from tlcore import experiments
    from tlcore.executors import Work, make_executor
    from tlcore.executors.ray import RayOptions, connect
    from tlcore.reporting import Reporter
    from tlcore.tracking import Tracker

    four = spec(store, args, splits=4)  # 4 points: one samples-per-class value x 4 draws
    experiments.run(spec(store, args, splits=1, spc=2))  # warm-up
    t = time.perf_counter()
    connect(RayOptions())
    startup = time.perf_counter() - t
    gpus = 0.25 if args.device != "cpu" else None
    executor = make_executor("ray", gpus_per_run=gpus, cpus_per_run=max(1, (os.cpu_count() or 4) // 4))
    executor.run(Work("warm", spec(store, args, splits=2, spc=2), Reporter(), Tracker(store), args.device))
    serial_s, packed_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        experiments.run(four)
        serial_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        outcome = executor.run(Work("pack", four, Reporter(), Tracker(store), args.device))
        if outcome.error is not None:
            raise outcome.error
        packed_s.append(time.perf_counter() - t)
    s, p = statistics.median(serial_s), statistics.median(packed_s)
    each = f"{gpus:g} GPU" if gpus else f"{max(1, (os.cpu_count() or 4) // 4)} CPU"
    print(f"4 FT points {args.resolution} px: one after another {s:.1f} s, packed 4 x {each} on Ray {p:.1f} s, "
          f"speed-up {s / p:.2f}x (medians of {args.repeats}); Ray start-up {startup:.1f} s apart")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["amp", "pack"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--spc", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="a CPU check that the script runs: 32 px, 2/class, 1 epoch")
    args = ap.parse_args()
    if args.small:
        args.resolution, args.spc, args.epochs, args.repeats, args.batch_size = 32, 2, 1, 1, 16
    os.environ.setdefault("TLCORE_CHECKPOINT_EVERY_S", "600")
    with tempfile.TemporaryDirectory() as tmp:
        {"amp": amp, "pack": pack}[args.what](args, str(Path(tmp) / "store"))


if __name__ == "__main__":
    main()
