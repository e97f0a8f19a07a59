"""Several processes create one new results store at once: how often does one fail?

Each try makes a fresh folder and starts ``--processes`` Python processes together (a barrier
file releases them); each opens the store (``Tracker(folder)``), starts a run and finishes it.
A try fails when any process exits non-zero; the first error line is counted. Figures in
docs/benchmarks.md.

    .venv/bin/python bench/store_concurrency.py --processes 3 --tries 20
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
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.005)
    from tlcore.tracking import Tracker
    t = Tracker(sys.argv[1])
    with t.start_run("fe", {"dataset": "x", "who": os.getpid()}) as run:
        run.log_metrics({"time_total_s": 1.0})
    print("ok")
""")


def one_try(processes: int, root: Path) -> list[tuple[int, str]]:
    """(exit code, last stderr line) of each process creating the store in ``root``."""
    go = root / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root / "store"), str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    time.sleep(2.0)  # every process has imported and waits at the barrier
    go.touch()
    out = []
    for p in procs:
        _stdout, stderr = p.communicate(timeout=600)
        lines = [line for line in stderr.splitlines() if line.strip()]
        out.append((p.returncode, lines[-1][:160] if lines else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--tries", type=int, default=20)
    args = ap.parse_args()
    failed_tries = 0
    errors: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    for i in range(args.tries):
        with tempfile.TemporaryDirectory(prefix="tlcore-store-") as tmp:
            results = one_try(args.processes, Path(tmp))
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
