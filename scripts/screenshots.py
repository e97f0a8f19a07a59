"""Screenshots of the home and Run pages for the README (docs/screenshot-*.png).

Starts `streamlit run app.py` on a throwaway store, runs feature extraction on digits from the
Run page in headless Chromium (Debian's /usr/bin/chromium), waits for it to finish, and saves
the Run page (with the result) and the home page.

    .venv/bin/python scripts/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.streamlit_server import launch_chromium, start_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "results", Path(tmp) / "server.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.goto(f"{server.url}/Run")
                page.get_by_text("Projected time").wait_for(timeout=180_000)
                for label, value in (("Input size (px)", "64"), ("Samples per class", "1,2,5,10"),
                                     ("Draws per value", "3")):
                    box = page.get_by_label(label, exact=True)
                    box.fill(value)
                    box.press("Enter")
                page.wait_for_timeout(3000)
                page.get_by_role("button", name="▶ Run").click()
                page.get_by_text(re.compile(r"MLflow runs \((\d+) of \1 finished\)")).wait_for(timeout=600_000)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / "screenshot-run.png"))
                page.goto(server.url)
                page.get_by_text("Latest results").wait_for(timeout=180_000)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / "screenshot-home.png"))
                browser.close()
        finally:
            server.stop()
    print(f"Wrote {out / 'screenshot-run.png'} and {out / 'screenshot-home.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
