"""Several processes create one new results store at once, or write to one at once: how often does one fail?

Each try makes a fresh folder and starts ``--processes`` Python processes together (a barrier
file releases them); each opens the store (``Tracker(folder)``), starts a run and finishes it.
With ``--runs N`` the store is created first and each process then writes N runs of ``--epochs``
metric rows (a fine-tuning run's per-epoch logging, without the training), as the app and CLI
processes writing to one local store do. A try fails when any process exits non-zero or a run
it wrote is not FINISHED; the first error line is counted. Figures in docs/benchmarks.md.

    .venv/bin/python bench/store_concurrency.py --processes 3 --tries 20
    .venv/bin/python bench/store_concurrency.py --processes 3 --tries 5 --runs 20 --epochs 30
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.005)
    from tlcore.tracking import Tracker
    t = Tracker(sys.argv[1])
    runs, epochs = int(sys.argv[3]), int(sys.argv[4])
    for r in range(max(runs, 1)):
        with t.start_run("ft", {"dataset": "x", "who": os.getpid(), "run": r}) as run:
            for epoch in range(1, epochs + 1):
                run.log_metrics({"train_loss": 1.0 / epoch, "val_loss": 1.0 / epoch, "val_accuracy": 0.5}, step=epoch)
            run.log_metrics({"time_total_s": 1.0, "test_accuracy": 0.5})
    print("ok")
""")


def one_try(processes: int, root: Path, runs: int = 0, epochs: int = 0) -> list[tuple[int, str]]:
    """(exit code, last stderr line) of each process creating the store in ``root`` (``runs`` = 0), or writing
    ``runs`` runs of ``epochs`` metric rows each to it once it exists."""
    go = root / "go"
    if runs:
        from tlcore.tracking import Tracker

        Tracker(str(root / "store")).client  # noqa: B018 - created here: the try measures writes only
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root / "store"), str(go), str(runs), str(epochs)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    time.sleep(2.0)  # every process has imported and waits at the barrier
    go.touch()
    out = []
    for p in procs:
        _stdout, stderr = p.communicate(timeout=600)
        lines = [line for line in stderr.splitlines() if line.strip()]
        out.append((p.returncode, lines[-1][:160] if lines else ""))
    return out


def unfinished(store: Path, expected: int) -> list[tuple[int, str]]:
    """A failure row per run missing or not FINISHED in ``store``."""
    from tlcore.tracking import Tracker

    t = Tracker(str(store))
    eid = t.experiment_id("Fine-tuning", create=False)
    runs = t.client.search_runs([eid], max_results=10000) if eid else []
    finished = sum(r.info.status == "FINISHED" for r in runs)
    return [(1, f"{expected - finished} of {expected} runs not FINISHED")] if finished < expected else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--runs", type=int, default=0, help="runs each process writes to an existing store (0: create)")
    ap.add_argument("--epochs", type=int, default=20, help="metric rows per run with --runs")
    args = ap.parse_args()
    failed_tries = 0
    errors: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    for i in range(args.tries):
        with tempfile.TemporaryDirectory(prefix="tlcore-store-") as tmp:
            results = one_try(args.processes, Path(tmp), args.runs, args.epochs)
            if args.runs:
                results += unfinished(Path(tmp) / "store", args.processes * args.runs)
        bad = [(rc, err) for rc, err in results if rc != 0]
        if bad:
            failed_tries += 1
            errors.update(err for _, err in bad)
        print(f"try {i + 1}: {len(bad)} of {args.processes} processes failed", flush=True)
    print(f"\n{args.processes} processes x {args.tries} tries: {failed_tries} tries with a failed process "
          f"({time.perf_counter() - t0:.0f} s)")
    for err, n in errors.most_common():
        print(f"  {n} x {err}")


if __name__ == "__main__":
    main()
