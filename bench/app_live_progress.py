"""What watching a job in the browser costs the job: FE on digits with the Run page closed vs open.

The job runs on a worker thread of the Streamlit server and shares the GIL with the script
thread that redraws the live progress every second. Three conditions, interleaved, each a
fresh `streamlit run app.py` with its own store, driven by headless Chromium:

- ``closed``: the page submits the job and closes (the baseline);
- ``open``: the page stays open and polls (the app as shipped, ``.streamlit/config.toml``);
- ``open-gc``: the same with Streamlit's default ``runner.postScriptGC = true``, a full
  ``gc.collect(2)`` after every script and fragment run.

The job's time is its worker's (journal ``started_at`` -> ``ended_at``). Prints medians and the
ratios to ``closed``.

    .venv/bin/python bench/app_live_progress.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.streamlit_server import fill_fields, launch_chromium, press_run, start_server

CONDITIONS = {"closed": {}, "open": {}, "open-gc": {"STREAMLIT_RUNNER_POST_SCRIPT_GC": "true"}}


def job_seconds(browser, condition: str, folder: Path) -> float:
    store = folder / "results"
    server = start_server(store, folder / "server.log", env=CONDITIONS[condition])
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{server.url}/Run")
        page.get_by_text("Projected time").wait_for(timeout=300_000)
        fill_fields(page, {"Input size (px)": "64", "Samples per class": "1,2,5,10,20", "Draws per value": "3"})
        press_run(page)
        page.get_by_text("Queued as job #1.").wait_for(timeout=120_000)
        if condition == "closed":
            page.close()
        journal = store / "tlcore-jobs.json"
        while True:
            job = json.loads(journal.read_text())["jobs"][0]
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        if job["state"] != "finished":
            raise RuntimeError(f"the job ended {job['state']}: {job.get('error')}")
        if condition != "closed":
            page.close()
        return job["ended_at"] - job["started_at"]
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = launch_chromium(p)
        for r in range(args.repeats):
            for condition in CONDITIONS:
                folder = Path(tmp) / f"{condition}-{r}"
                folder.mkdir()
                times[condition].append(job_seconds(browser, condition, folder))
                print(f"repeat {r + 1} {condition:8s} {times[condition][-1]:6.1f} s", flush=True)
        browser.close()
    base = statistics.median(times["closed"])
    print(f"\nFE on digits (64 px, samples per class 1,2,5,10,20 x 3 draws), job time, median of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, {platform.python_version()}")
    for condition, values in times.items():
        med = statistics.median(values)
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {condition:8s} {med:6.1f} s   x{med / base:4.2f} vs closed   ({each})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
