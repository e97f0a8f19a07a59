"""End to end in headless Chromium: `streamlit run app.py`, FE on digits from the Run page, a SIGKILL mid-job.

Needs Debian's Chromium at /usr/bin/chromium (scripts/test.sh installs it). The server is a
real `streamlit run` process with its own MLflow store in a temp folder.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.streamlit_server import CHROMIUM, press_run, start_server
from tlcore.jobs import journal_path_for
from tlcore.tracking import Tracker

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (scripts/test.sh)")]

LOAD_S = 180_000  # ms: the first page load imports torch, mlflow and counts FLOPs on a 2-core CPU


def assert_clean_log(log: str) -> None:
    assert "Traceback" not in log, log[-4000:]
    assert "missing ScriptRunContext" not in log, log[-4000:]


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")


def run_statuses(store: Path) -> list[str]:
    tracker = Tracker(str(store))
    exps = [e.experiment_id for e in tracker.client.search_experiments()]
    return [r.info.status for r in tracker.client.search_runs(exps, "", max_results=1000)] if exps else []


def open_run_page(page, server) -> None:
    page.goto(f"{server.url}/Run")
    page.get_by_text("Projected time").wait_for(timeout=LOAD_S)


def test_pages_load_and_a_bad_input_gets_its_sentence(browser, tmp_path):
    server = start_server(tmp_path / "results", tmp_path / "server.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.get_by_text("Where results are stored").wait_for(timeout=LOAD_S)
        page.get_by_text("Open them in the MLflow UI with").wait_for(timeout=60_000)
        store_uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
        page.locator("code", has_text=store_uri).first.wait_for(timeout=60_000)  # code blocks render after text
        page.locator("code", has_text=f"mlflow ui --backend-store-uri {store_uri}").first.wait_for(timeout=60_000)
        page.get_by_role("link", name=re.compile("Run an experiment")).first.click()
        page.get_by_text("Projected time").wait_for(timeout=LOAD_S)
        fill(page, "Classes (optional)", "cat")
        page.get_by_text("Class 'cat' is not in dataset 'digits'").wait_for(timeout=60_000)
        # the error is drawn before the rest of the rerun reaches the button: wait for it
        expect(page.get_by_role("button", name="▶ Run")).to_be_disabled(timeout=60_000)
        # the sidebar names the entry page Home (Streamlit's own list would say "app")
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.get_by_role("link", name=re.compile("Home"))).to_be_visible(timeout=30_000)
        assert sidebar.get_by_role("link", name=re.compile(r"^app$")).count() == 0
        page.close()
    finally:
        server.stop()
    assert_clean_log(server.log())


def test_feature_extraction_on_digits_from_the_run_page(browser, tmp_path):
    store = tmp_path / "results"
    server = start_server(store, tmp_path / "server.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_run_page(page, server)
        fill(page, "Input size (px)", "32")
        fill(page, "Samples per class", "2,5")
        fill(page, "Draws per value", "2")
        press_run(page)
        page.get_by_text("Queued as job #1.").wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"MLflow runs \(4 of 4 finished\)")).wait_for(timeout=240_000)
        page.get_by_text(re.compile(r"vs samples per class \(4 finished\)")).wait_for(timeout=30_000)
        # the result card at the top of the page: the headline per samples-per-class value, cost and verdict
        card = page.get_by_role("heading", name=re.compile(r"Result of job #1"))
        card.wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"^Converged: All 4 runs converged")).wait_for(timeout=30_000)
        cells = page.locator('[role="gridcell"]')
        cells.filter(has_text=re.compile(r"^\d+\.\d % ± \d+\.\d$")).first.wait_for(state="attached", timeout=30_000)
        page.get_by_text(re.compile(r"compute \d")).first.wait_for(timeout=30_000)
        statuses = run_statuses(store)
        assert statuses.count("FINISHED") == 5 and len(statuses) == 5
        # the home page lists the job and its results
        page.goto(server.url)
        page.get_by_text("Latest results").wait_for(timeout=LOAD_S)
        # dataframes draw on a canvas; their cells exist (hidden) for accessibility
        cells = page.locator('[role="gridcell"]')
        cells.filter(has_text=re.compile(r"^#1$")).first.wait_for(state="attached", timeout=30_000)
        cells.filter(has_text=re.compile(r"^efficientnet_lite0$")).first.wait_for(state="attached", timeout=30_000)
        page.close()
    finally:
        server.stop()
    assert_clean_log(server.log())


def test_a_server_killed_mid_job_restarts_with_no_run_running_and_says_what_happened(browser, tmp_path):
    store = tmp_path / "results"
    journal = journal_path_for(Tracker(str(store)).uri)
    server = start_server(store, tmp_path / "server-1.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_run_page(page, server)
        fill(page, "Samples per class", "1,2,5,10,20")
        fill(page, "Draws per value", "5")
        press_run(page)
        page.get_by_text("Queued as job #1.").wait_for(timeout=60_000)
        deadline = time.monotonic() + 120
        while True:  # until the job has opened its MLflow runs
            jobs = json.loads(journal.read_text())["jobs"] if journal.exists() else []
            if jobs and jobs[0]["state"] == "running" and jobs[0]["runs"]:
                break
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        page.close()
    finally:
        server.kill()
    assert "RUNNING" in run_statuses(store)  # what the killed server left behind

    again = start_server(store, tmp_path / "server-2.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(again.url)
        notice = page.locator('[data-testid="stAlert"]', has_text="It was interrupted by a server restart")
        notice.first.wait_for(timeout=LOAD_S)
        text = notice.first.inner_text()
        assert "Job #1 (Feature extraction · digits" in text and "marked FAILED" in text, text
        statuses = run_statuses(store)
        assert "RUNNING" not in statuses and "FAILED" in statuses, statuses
        page.close()
    finally:
        again.stop()
    assert_clean_log(again.log())


def test_a_folder_with_an_unreadable_image_is_flagged_before_run(browser, tmp_path):
    from tests.conftest import write_digits_folder

    folder = write_digits_folder(tmp_path / "faces", classes=(0, 1), per_split={"train": 10, "val": 2, "test": 3})
    (folder / "train" / "digit0" / "broken.png").write_bytes(b"this is not a png")
    server = start_server(tmp_path / "results", tmp_path / "server.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_run_page(page, server)
        page.get_by_label("Dataset", exact=True).click()
        page.get_by_role("option", name=re.compile("A folder on this machine")).click()
        fill(page, "Folder path", str(folder))
        page.get_by_text(re.compile(r"1 of 31 images opened to check .* cannot be read \(e.g. "
                                    r"train/digit0/broken.png")).first.wait_for(timeout=60_000)
        expect(page.get_by_role("button", name="▶ Run")).to_be_disabled(timeout=60_000)
        page.get_by_text("Data and run options", exact=True).click()
        page.get_by_text("Skip unreadable images", exact=True).click()
        expect(page.get_by_role("button", name="▶ Run")).to_be_enabled(timeout=60_000)
        page.close()
    finally:
        server.stop()
    assert_clean_log(server.log())


def test_a_fine_tuning_killed_mid_run_continues_in_the_same_run_after_a_restart(browser, tmp_path):
    store = tmp_path / "results"
    server = start_server(store, tmp_path / "server-1.log")
    tracker = Tracker(str(store))
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_run_page(page, server)
        page.get_by_text("Fine-tuning", exact=True).click()
        page.get_by_text("Freezing configuration").wait_for(timeout=LOAD_S)
        fill(page, "Samples per class", "5")
        fill(page, "Draws per value", "1")
        fill(page, "Epochs (at most)", "13")
        fill(page, "Input size (px)", "32")
        press_run(page)
        page.get_by_text("Queued as job #1.").wait_for(timeout=60_000)
        deadline = time.monotonic() + 240
        while True:  # until two epochs are logged
            exps = [e.experiment_id for e in tracker.client.search_experiments()]
            runs = tracker.client.search_runs(exps, "", max_results=10) if exps else []
            steps = tracker.client.get_metric_history(runs[0].info.run_id, "val_loss") if runs else []
            if len(steps) >= 2:
                break
            assert time.monotonic() < deadline, "fine-tuning never logged two epochs"
            time.sleep(0.2)
        [run] = runs
        page.close()
    finally:
        server.kill()
    before = len(tracker.client.get_metric_history(run.info.run_id, "val_loss"))

    again = start_server(store, tmp_path / "server-2.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(again.url)
        page.get_by_role("button", name="Continue where it stopped").wait_for(timeout=LOAD_S)
        page.get_by_role("button", name="Continue where it stopped").click()
        deadline = time.monotonic() + 300
        while tracker.get_run(run.info.run_id).info.status != "FINISHED":
            assert time.monotonic() < deadline, "the continued run never finished"
            time.sleep(0.5)
        page.close()
    finally:
        again.stop()
    assert_clean_log(again.log())
    done = tracker.get_run(run.info.run_id)
    epochs = done.data.metrics["epochs_run"]
    history = tracker.client.get_metric_history(run.info.run_id, "val_loss")
    # the same run, continued from its checkpoint: every epoch once, up to the cap or an early stop
    assert sorted({m.step for m in history}) == list(range(1, int(epochs) + 1)) and epochs >= before
    assert done.data.tags["sessions"] == "2" and done.data.tags["quality"] in ("converged", "capped")
    exps = [e.experiment_id for e in tracker.client.search_experiments()]
    assert len(tracker.client.search_runs(exps, "", max_results=10)) == 1  # no second run
