"""How long each page takes to show something, in a real browser (issue 17: first paint under 3 s).

Starts ``streamlit run app.py`` on a store (the full examples: ``python -m tlcore examples
--mlflow-path DIR``), opens every page in headless Chromium, and times from navigation to the page's
title (first paint) and to the end of its script run (Streamlit's running indicator gone). The
first load of the server is reported apart (it imports the app's modules once per process);
then each page is opened ``--repeats`` times in a fresh tab, medians reported.

    python bench/page_load.py --store /tmp/tl-examples-full [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.streamlit_server import launch_chromium, start_server

PAGES = [("Home", "", "🧪 TL Lab"), ("Run", "Run", "🧪 Run an experiment"),
         ("Trade-offs", "Trade-offs", "📈 Trade-offs"), ("Quanta", "Quanta", "🔬 QUANTA: which layers transfer"),
         ("Guidelines", "Guidelines", "🧭 Feature extraction or fine-tuning?"), ("Runs", "Runs", "🗂️ Runs")]


def load(browser, url: str, title: str) -> tuple[float, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.get_by_role("heading", name=title).first.wait_for(timeout=180_000)
        first = time.perf_counter() - t0
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=180_000)
        return first, time.perf_counter() - t0
    finally:
        page.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a results folder (the full examples)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    log = Path(args.store) / "bench-server.log"
    server = start_server(Path(args.store), log)
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            cold = load(browser, server.url, PAGES[0][2])
            print(f"server's first page load (imports once per process): first paint {cold[0]:.1f} s, script done "
                  f"{cold[1]:.1f} s", flush=True)
            for name, path, title in PAGES:
                times = [load(browser, f"{server.url}/{path}", title) for _ in range(args.repeats)]
                first = statistics.median(t[0] for t in times)
                done = statistics.median(t[1] for t in times)
                print(f"{name:11s} first paint {first:5.2f} s   script done {done:5.2f} s   "
                      f"(median of {args.repeats}; each {', '.join(f'{t[0]:.2f}' for t in times)})", flush=True)
            browser.close()
    finally:
        server.stop()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
