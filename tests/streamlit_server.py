"""Start ``streamlit run app.py`` on a free port and drive it with Debian's Chromium (browser tests, screenshots).

Chromium is the system one (``/usr/bin/chromium``, installed by scripts/test.sh), never a
browser downloaded by ``playwright install``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: what a crash or an out-of-memory kill does (no clean-up runs)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(store: Path, log_path: Path, timeout: float = 180.0, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env = dict(os.environ, TLCORE_MLFLOW_PATH=str(store), PYTHONUNBUFFERED="1", **(env or {}))
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return Server(proc, url, log_path)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout} s:\n{log_path.read_text()}")


@contextmanager
def streamlit_server(store: Path, log_path: Path):
    server = start_server(store, log_path)
    try:
        yield server
    finally:
        server.stop()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def screenshot_streamlit_page(page, path: str | Path, width: int = 1400, min_height: int = 1000) -> None:
    """The whole page in one PNG: Streamlit scrolls inside its main block, not the document, so
    Playwright's ``full_page`` alone stops at the viewport; grow the viewport to the content first."""
    height = page.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]') || document.querySelector('section.main');
        return Math.max(document.body.scrollHeight, main ? main.scrollHeight : 0);
    }""")
    page.set_viewport_size({"width": width, "height": max(min_height, int(height))})
    page.wait_for_timeout(1500)  # plotly redraws at the new size
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def fill_fields(page, values: dict[str, str], settle_ms: int = 2000) -> None:
    """Type into labelled inputs (Enter commits each), then let the rerun they trigger finish."""
    for label, value in values.items():
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
    page.wait_for_timeout(settle_ms)


def press_run(page, timeout_ms: int = 180_000) -> None:
    """Press the Run page's Run button once the form has settled.

    The projection comes from a pace measured on this machine, so on a loaded machine the same job can
    project over the confirmation threshold: tick "Run it anyway" when the page asks for it.
    """
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=timeout_ms)
    confirm = page.get_by_text(re.compile(r"^Run it anyway \("))
    if confirm.count():
        confirm.first.click()
        page.wait_for_timeout(500)
        page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=timeout_ms)
    page.get_by_role("button", name="▶ Run").click()
