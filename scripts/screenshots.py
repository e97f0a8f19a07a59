"""Screenshots for the README (docs/screenshot-*.png).

Default: starts `streamlit run app.py` on a throwaway store, runs feature extraction on digits from
the Run page in headless Chromium (Debian's /usr/bin/chromium), waits for it to finish, and saves
the Run page (with the result) and the home page.

With ``--analysis-store DIR`` (a store filled by ``python -m tlcore examples --mlflow-path DIR``):
serves that store and saves the Trade-offs page (its few-shot curves tab), the Quanta page and the
Guidelines page as it opens.

    .venv/bin/python scripts/screenshots.py [--out docs]
    .venv/bin/python -m tlcore examples --mlflow-path /tmp/tl-examples-full
    .venv/bin/python scripts/screenshots.py --analysis-store /tmp/tl-examples-full
    .venv/bin/python -m tlcore rank --dataset digits --random-control --mlflow-path /tmp/tl-ranking
    .venv/bin/python scripts/screenshots.py --ranking-store /tmp/tl-ranking

The pages' emoji need a colour emoji font (Debian: ``apt-get install fonts-noto-color-emoji``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.streamlit_server import fill_fields, launch_chromium, press_run, start_server  # noqa: E402

LOAD_MS = 180_000


def run_and_home(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "results", Path(tmp) / "server.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.goto(f"{server.url}/Run")
                page.get_by_text("Projected time").wait_for(timeout=LOAD_MS)
                fill_fields(page, {"Input size (px)": "64", "Samples per class": "1,2,5,10", "Draws per value": "3"},
                            settle_ms=3000)
                press_run(page)
                page.get_by_text(re.compile(r"MLflow runs \((\d+) of \1 finished\)")).wait_for(timeout=600_000)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / "screenshot-run.png"))
                page.goto(server.url)
                page.get_by_text("Latest results").wait_for(timeout=LOAD_MS)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / "screenshot-home.png"))
                browser.close()
        finally:
            server.stop()
    return [out / "screenshot-run.png", out / "screenshot-home.png"]


@contextmanager
def served_page(store: Path, height: int):
    """A browser page on a server over ``store``; fails (SystemExit) if the server logged a traceback."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(store, Path(tmp) / "server.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1400, "height": height})
                yield page, server.url
                browser.close()
        finally:
            server.stop()
        log = server.log()
    if "Traceback" in log:
        raise SystemExit(f"the server logged a traceback:\n{log[-4000:]}")


def analysis_pages(store: Path, out: Path) -> list[Path]:
    with served_page(store, 1250) as (page, url):
        page.goto(f"{url}/Trade-offs")
        page.get_by_role("heading", name="📈 Trade-offs").wait_for(timeout=LOAD_MS)
        page.get_by_role("tab", name="Few-shot curves").click()
        page.get_by_role("heading", name="Crossovers").wait_for(timeout=LOAD_MS)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "screenshot-tradeoffs.png"))
        page.set_viewport_size({"width": 1400, "height": 1450})
        page.goto(f"{url}/Quanta")
        page.get_by_role("heading", name="λ_S over training steps").wait_for(timeout=LOAD_MS)
        page.locator(".legendtext", has_text="layer 0").first.wait_for(timeout=LOAD_MS)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "screenshot-quanta.png"))
        page.goto(f"{url}/Guidelines")
        page.get_by_role("heading", name="🧭 Feature extraction or fine-tuning?").wait_for(timeout=LOAD_MS)
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=LOAD_MS)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "screenshot-guidelines.png"))
    return [out / "screenshot-tradeoffs.png", out / "screenshot-quanta.png", out / "screenshot-guidelines.png"]


def ranking_page(store: Path, out: Path) -> list[Path]:
    with served_page(store, 1500) as (page, url):
        page.goto(f"{url}/Ranking")
        page.get_by_role("heading", name="Which layers carry the signal").wait_for(timeout=LOAD_MS)
        page.locator(".legendtext").first.wait_for(timeout=LOAD_MS)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "screenshot-ranking.png"))
    return [out / "screenshot-ranking.png"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--analysis-store", metavar="DIR",
                        help="a store filled by `python -m tlcore examples`: screenshot the Trade-offs, Quanta and "
                             "Guidelines pages instead")
    parser.add_argument("--ranking-store", metavar="DIR",
                        help="a store holding a ranking (python -m tlcore rank ...): screenshot the Ranking page")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.ranking_store:
        written = ranking_page(Path(args.ranking_store), out)
    elif args.analysis_store:
        store = Path(args.analysis_store)
        if not (store / "mlflow.db").is_file():
            parser.error(f"{store} holds no mlflow.db: fill it with python -m tlcore examples --mlflow-path {store}")
        written = analysis_pages(store, out)
    else:
        written = run_and_home(out)
    print("Wrote " + " and ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
