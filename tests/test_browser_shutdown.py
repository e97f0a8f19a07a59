"""Ctrl-C on a real `streamlit run app.py` while a job runs: the server stops the job at its next
checkpoint, its MLflow runs end KILLED (never left RUNNING), and the journal says what happened.

The job is started from the Run page in headless Chromium (Debian's /usr/bin/chromium), as a user would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.streamlit_server import CHROMIUM, press_run, start_server
from tests.test_browser import assert_clean_log, fill, open_run_page, run_statuses
from tlcore.jobs import SHUTDOWN_REASON, journal_path_for
from tlcore.tracking import Tracker

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (scripts/test.sh)")]


def test_ctrl_c_stops_the_running_job_and_its_runs_end_killed(browser, tmp_path):
    store = tmp_path / "results"
    journal = journal_path_for(Tracker(str(store)).uri)
    server = start_server(store, tmp_path / "server.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_run_page(page, server)
        fill(page, "Samples per class", "1,2,5,10,20")  # minutes of work: still running when Ctrl-C comes
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
        server.proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            server.proc.wait(120)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit after Ctrl-C")
    finally:
        server.stop()
    statuses = run_statuses(store)
    assert statuses and "RUNNING" not in statuses and "KILLED" in statuses, statuses
    tracker = Tracker(str(store))
    exps = [e.experiment_id for e in tracker.client.search_experiments()]
    killed = tracker.client.search_runs(exps, "attributes.status = 'KILLED'")
    assert all(r.data.tags.get("error") == SHUTDOWN_REASON for r in killed)
    (job,) = json.loads(journal.read_text())["jobs"]
    assert job["state"] == "interrupted" and "server was stopped" in job["note"], job
    assert_clean_log(server.log())
