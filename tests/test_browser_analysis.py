"""The analysis pages in headless Chromium, over a store filled with the quick embedded examples.

One real ``streamlit run app.py`` serves a store holding the FE and FT curves, a source and QUANTA
with its random-source control (``tlcore.examples``, quick grid, run in process). Each test opens
one page as a user would, checks what they read there, that no exception box is shown and that the
server logged no traceback, and saves a full-page screenshot in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.streamlit_server import CHROMIUM, ROOT, screenshot_streamlit_page, start_server
from tlcore import experiments
from tlcore.examples import QUICK, run_examples
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FineTuningParams, RankingParams

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (scripts/test.sh)")]

LOAD_S = 180_000  # ms: the first page load imports torch, mlflow and counts FLOPs on a 2-core CPU
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FE_FT = ["FE auto", "FT config 0", "FT config 2"]
TARGET = f"digits:{QUICK.target_classes}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis")
    store = tmp / "results"
    run_examples(str(store), quick=True)
    # and one fine-tuning run stopped at its cap of one epoch: weak evidence, drawn as weak
    experiments.run(ExperimentSpec("ft", QUICK.dataset, samples_per_class=(5,), splits=1, resolution=QUICK.resolution,
                                   batch_size=32, mlflow_path=str(store),
                                   params=FineTuningParams(configuration=3, epochs=1)), Reporter())
    # and a ranking of efficientnet_lite0 beside its random-weights control (reads the examples' cached features)
    experiments.run(ExperimentSpec("rank", QUICK.dataset, samples_per_class=(5,), splits=2, resolution=QUICK.resolution,
                                   mlflow_path=str(store), params=RankingParams(backbones=("efficientnet_lite0",),
                                                                                random_control=True)), Reporter())
    srv = start_server(store, tmp / "server.log")
    yield srv
    srv.stop()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    page.close()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert "missing ScriptRunContext" not in log, log[-4000:]


def open_page(page, server, path: str, title: str) -> None:
    page.goto(f"{server.url}/{path}")
    page.get_by_role("heading", name=title).first.wait_for(timeout=LOAD_S)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=LOAD_S)  # the script ran


def assert_no_error_shown(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


def legend(chart) -> list[str]:
    chart.locator(".legendtext").first.wait_for(timeout=60_000)
    return chart.locator(".legendtext").all_text_contents()  # SVG text: no innerText


def test_tradeoffs_draws_fe_and_ft_runs_against_cost_and_their_few_shot_curves(page, server):
    open_page(page, server, "Trade-offs", "📈 Trade-offs")
    page.get_by_text(re.compile(r"^9 runs match the filters: 9 finished")).wait_for(timeout=30_000)
    scatter = page.locator('[data-testid="stPlotlyChart"]').first
    names = legend(scatter)
    assert set(FE_FT) <= set(names) and "Pareto front" in names, names
    # one marker per finished FE/FT run at 5 samples per class (the largest, shown first): 2 FE, 2 + 2 FT, 1 capped
    assert scatter.locator(".scatterlayer .point").count() >= 7

    page.get_by_role("tab", name="Few-shot curves").click()
    panel = page.locator('[role="tabpanel"]:visible')
    curve = panel.locator('[data-testid="stPlotlyChart"]').first
    curve.wait_for(timeout=30_000)
    assert set(FE_FT) <= set(legend(curve))
    assert f"{QUICK.dataset} · efficientnet_lite0" in curve.locator(".gtitle").text_content()
    panel.get_by_role("heading", name="Crossovers").wait_for(timeout=30_000)
    assert_no_error_shown(page)
    screenshot_streamlit_page(page, SCREENSHOTS / "tradeoffs.png")


def test_tradeoffs_draws_a_capped_run_as_weak_with_the_reason_on_hover(page, server):
    open_page(page, server, "Trade-offs", "📈 Trade-offs")
    scatter = page.locator('[data-testid="stPlotlyChart"]').first
    names = legend(scatter)
    assert "faded: weak evidence (capped, near chance)" in names and "FT config 3" in names, names
    faded = scatter.locator(".scatterlayer .point[style*='opacity: 0.25']")
    assert faded.count() == 1  # only the run capped at one epoch
    page.get_by_text(re.compile(r"^Faded: 1 weak run\(s\)")).wait_for(timeout=30_000)
    box = faded.first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover = scatter.locator(".hoverlayer")
    # one epoch leaves it capped and, at this size, usually near chance too: the worse verdict is shown
    hover.get_by_text(re.compile(r"weak evidence: (capped \(still improving\)|near chance)")).wait_for(timeout=30_000)
    text = hover.text_content()
    assert "cap of 1 epoch" in text or "within what guessing reaches" in text, text
    # the few-shot curves say what hollow points are
    page.get_by_role("tab", name="Few-shot curves").click()
    page.get_by_text(re.compile("Hollow, faded points rest on weak runs")).wait_for(timeout=30_000)
    assert_no_error_shown(page)
    screenshot_streamlit_page(page, SCREENSHOTS / "tradeoffs-weak.png")


def test_quanta_draws_lambda_per_layer_beside_the_random_source_control(page, server):
    open_page(page, server, "Quanta", "🔬 QUANTA: which layers transfer")
    page.get_by_role("heading", name=f"Which layers transfer · {TARGET} · quanta_cnn").wait_for(timeout=30_000)
    delta = page.locator('[data-testid="stPlotlyChart"]').first
    delta.locator(".xtick").first.wait_for(timeout=60_000)
    assert delta.locator(".xtick").all_text_contents() == [str(i) for i in range(7)]  # quanta_cnn's 7 QUANTA layers
    assert delta.locator(".scatterlayer .point").count() == 7  # one difference to the control per layer
    page.get_by_role("heading", name=f"Final λ_S per layer · {TARGET} · quanta_cnn").wait_for(timeout=30_000)
    points = page.locator('[data-testid="stPlotlyChart"]').nth(1)
    assert set(legend(points)) == {"trained source", "random source (control)"}
    assert points.locator(".scatterlayer .point").count() == 14  # each layer: trained and control
    steps = page.locator('[data-testid="stPlotlyChart"]').nth(2)
    assert {"layer 0", "layer 6 (control)"} <= set(legend(steps))
    # with the control present the page does not warn that lambda_S stands alone
    assert page.get_by_text("No random-source control run here").count() == 0
    page.get_by_role("heading", name="Source vs target test accuracy").wait_for(timeout=30_000)
    assert_no_error_shown(page)
    screenshot_streamlit_page(page, SCREENSHOTS / "quanta.png")


def test_runs_lists_every_run_of_the_examples_and_the_ranking(page, server):
    open_page(page, server, "Runs", "🗂️ Runs")
    page.get_by_text(re.compile(r"^14 of 18 runs shown: 14 finished")).wait_for(timeout=30_000)  # parents hidden
    # dataframes draw on a canvas; their cells exist (hidden) for accessibility
    cells = page.locator('[data-testid="stDataFrame"] [role="gridcell"]')
    cells.first.wait_for(state="attached", timeout=30_000)
    texts = set(cells.all_text_contents())
    assert {*FE_FT, "QUANTA", "Source training", QUICK.dataset, TARGET, "quanta_cnn", "efficientnet_lite0"} <= texts
    assert_no_error_shown(page)
    screenshot_streamlit_page(page, SCREENSHOTS / "runs.png")


def test_ranking_draws_the_backbone_above_its_random_control_with_per_tap_scores(page, server):
    open_page(page, server, "Ranking", "🏅 Ranking backbones before training")
    page.get_by_role("heading", name="Which layers carry the signal").wait_for(timeout=30_000)
    bars = page.locator('[data-testid="stPlotlyChart"]').first
    bars.locator(".ytick").first.wait_for(timeout=60_000)
    # best on top: plotly draws the last category at the top of a horizontal bar chart
    assert bars.locator(".ytick").all_text_contents() == ["efficientnet_lite0 (random weights)", "efficientnet_lite0"]
    taps = page.locator('[data-testid="stPlotlyChart"]').nth(1)
    assert set(legend(taps)) == {"efficientnet_lite0", "efficientnet_lite0 (random weights)"}
    page.get_by_text(re.compile("^Not yet: this check needs finished feature-extraction")).wait_for(timeout=30_000)
    assert_no_error_shown(page)
    screenshot_streamlit_page(page, SCREENSHOTS / "ranking.png")


def test_home_lists_the_latest_results(page, server):
    open_page(page, server, "", "🧪 TL Lab")
    page.get_by_role("heading", name="Latest results").wait_for(timeout=30_000)
    cells = page.locator('[data-testid="stDataFrame"] [role="gridcell"]')
    cells.first.wait_for(state="attached", timeout=30_000)
    texts = set(cells.all_text_contents())
    assert {TARGET, "quanta_cnn"} <= texts, texts
    # the "what" column names each job by its run name: the QUANTA runs and the source training are there
    assert any(t.startswith("QUANTA trained source") for t in texts), texts
    assert any(t.startswith("QUANTA random source (control)") for t in texts), texts
    assert any(t.startswith("Source training") for t in texts), texts
    assert page.get_by_text("No runs yet").count() == 0
    assert_no_error_shown(page)
    screenshot_streamlit_page(page, SCREENSHOTS / "home.png")
