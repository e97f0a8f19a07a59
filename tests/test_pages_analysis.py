"""AppTest of the analysis pages (Trade-offs, Quanta, Runs): empty store, populated store, odd states."""

from __future__ import annotations

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tlcore import plots, results
from tlcore.tracking import resolve_tracking_uri

TRADEOFFS = "../pages/2_📈_Trade-offs.py"
QUANTA = "../pages/3_🔬_Quanta.py"
RUNS = "../pages/5_🗂️_Runs.py"
TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("fresh_streamlit_caches")


@pytest.fixture(scope="module")
def populated_dir(analysis_store):  # noqa: F811
    return analysis_store[0]


@pytest.fixture
def use_store(monkeypatch):
    def use(folder):
        monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(folder))
        return resolve_tracking_uri(str(folder))
    return use


def _run(page: str) -> AppTest:
    at = AppTest.from_file(page, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _texts(at: AppTest, kind: str) -> str:
    return " ".join(str(e.value) for e in at.get(kind))


@pytest.mark.parametrize("page", [TRADEOFFS, QUANTA, RUNS])
def test_empty_store_says_how_to_make_a_run(page, store_dir, use_store):
    use_store(store_dir)
    at = _run(page)
    assert "No " in _texts(at, "info")
    commands = _texts(at, "code")
    assert "python -m tlcore" in commands and f"--mlflow-path {store_dir}" in commands
    assert not at.get("plotly_chart")


def test_a_store_folder_that_does_not_exist_yet(tmp_path, use_store):
    use_store(tmp_path / "not-yet")
    at = _run(TRADEOFFS)
    assert "No feature-extraction or fine-tuning runs" in _texts(at, "info")
    assert not (tmp_path / "not-yet" / "mlflow.db").exists()  # reading never creates a store


def test_tradeoffs_page_draws_scatter_front_curves_and_ratio(populated_dir, use_store):
    use_store(populated_dir)
    at = _run(TRADEOFFS)
    charts = _charts(at)
    scatter = charts[0]
    names = {t.get("name") for t in scatter["data"]}
    # one samples-per-class value at a time (the one with most runs: 5), its Pareto front drawn
    assert {"FE linearsvc", "FT config 0", "FT config 3", "Pareto front"} <= names
    curve_titles = [c["layout"].get("title", {}).get("text") for c in charts[1:-1]]
    assert "digits · efficientnet_lite0" in curve_titles and "FT − FE · digits · efficientnet_lite0" in curve_titles
    digits_curve = charts[1 + curve_titles.index("digits · efficientnet_lite0")]
    # FE is clearly higher at 1 and 5 per class (same draws); at 10 one shared draw gives no interval: the
    # crossover is not resolved by these runs, so none is drawn
    assert "crossover" not in {t.get("name") for t in digits_curve["data"]}
    paired = charts[1 + curve_titles.index("FT − FE · digits · efficientnet_lite0")]
    assert {t.get("name") for t in paired["data"]} == {"FT config 0 − FE linearsvc", "FT config 3 − FE linearsvc"}
    assert {t.get("name") for t in charts[-1]["data"]} == {"FT config 0", "FT config 3"}  # the cost ratio
    frames = [f.value for f in at.dataframe]
    crossover_table = next(f for f in frames if "note" in f.columns)
    assert crossover_table["FT"].tolist() == ["FT config 0", "FT config 3"]
    assert not crossover_table["resolved"].any()
    assert "FE linearsvc scored higher at 1, 5 samples per class" in crossover_table["note"].iloc[0]
    assert "1 failed" in _texts(at, "caption")
    assert len(at.get("download_button")) >= 4
    # Energy on the x axis: estimated energy is explained as such.
    at.selectbox(key="tradeoffs.cost").set_value("energy_kwh").run()
    assert not at.exception
    assert "estimated" in _texts(at, "caption")
    assert "hollow: estimated energy" in {t.get("name") for t in _charts(at)[0]["data"]}


def test_tradeoffs_filters_down_to_one_method(populated_dir, use_store):
    use_store(populated_dir)
    at = _run(TRADEOFFS)
    at.multiselect(key="tradeoffs.method").set_value(["fe"]).run()
    assert not at.exception
    assert "Only feature extraction runs here" in _texts(at, "info")
    names = {t.get("name") for t in _charts(at)[0]["data"]}
    assert "FT config 0" not in names and "FE linearsvc" in names


def test_quanta_page_shows_control_beside_trained_and_the_freezing_depth(populated_dir, use_store):
    use_store(populated_dir)
    at = _run(QUANTA)
    assert at.selectbox(key="quanta.target").value == "digits:5-9"
    charts = _charts(at)
    # first the verdict: lambda_S of the trained source minus the control's, per layer (one run a side: the
    # measured margin, 0.22, decides); the store's layer 0 .94 vs .70 above, layer 1 .89 vs .85 within the margin,
    # layer 2 .61 vs .90 below
    delta = charts[0]["data"][0]
    assert delta["name"] == "source digits:0-4" and list(delta["x"]) == ["0", "1", "2"]
    assert [c for c in delta["marker"]["color"]] == [plots.VERDICT_COLORS[1], plots.VERDICT_COLORS[0],
                                                     plots.VERDICT_COLORS[-1]]
    assert "The target kept the source's features in the first 1 of 3 layers." in _texts(at, "caption")
    point_names = {t.get("name") for t in charts[1]["data"]}
    assert point_names == {results.TRAINED_SOURCE, results.RANDOM_SOURCE}
    assert not at.warning  # the control exists: no caveat
    all_names = {t.get("name") for c in charts for t in c["data"]}
    assert "fine-tuning accuracy" in all_names  # FT runs of quanta_cnn on digits:5-9 exist
    assert any(t.get("type") == "heatmap" for c in charts for t in c["data"])  # two targets
    # A target without a control run: the page warns that lambda_S alone proves nothing.
    at.selectbox(key="quanta.target").set_value("lfw_faces").run()
    assert not at.exception
    assert "random-source control" in _texts(at, "warning")
    assert "No finished fine-tuning run of quanta_cnn on lfw_faces" in _texts(at, "caption")


def test_runs_page_compares_shows_errors_and_archives_softly(populated_dir, tmp_path, use_store):
    folder = tmp_path / "store"
    shutil.copytree(populated_dir, folder)
    uri = use_store(folder)
    at = _run(RUNS)
    table = at.dataframe[0].value
    assert len(table) == 25  # every run but the 3 sweep parents
    assert {"Test accuracy (%)", "Wall time (s)", "status", "started", "error", "run_id"} <= set(table.columns)
    assert "mlflow ui --backend-store-uri" in _texts(at, "code")
    df = results.load_view(uri, "runs")
    failed = df.loc[df["status"] == "FAILED", "run_id"].iloc[0]
    other = df.loc[(df["sweep_id"] == "sweep-fe") & (df["spc"] == 5) & (df["split_index"] == 1), "run_id"].iloc[0]
    at.multiselect(key="runs.compare").set_value([failed, other]).run()
    assert not at.exception
    assert "CUDA out of memory" in _texts(at, "error")
    diff = next(f.value for f in at.dataframe if f.value.index.name == "param")
    assert list(diff.index) == ["split"]
    # Archive: asks first, then soft-deletes.
    at.button(key="runs.action").click().run()
    assert "Archive 2 run(s)" in _texts(at, "warning")
    assert len(results.load_view(uri, "runs")) == len(df)  # nothing happened yet
    at.button(key="runs.yes").click().run()
    assert not at.exception
    assert "2 run(s) archived" in _texts(at, "success")
    assert set(results.load_view(uri, "runs", archived=True)["run_id"]) == {failed, other}
    assert len(at.dataframe[0].value) == 23


def test_runs_page_compares_the_runs_another_page_sent(populated_dir, use_store):
    uri = use_store(populated_dir)
    df = results.load_view(uri, "runs")
    sent = df.loc[df["sweep_id"] == "sweep-ft0", "run_id"].head(2).tolist()
    at = AppTest.from_file(RUNS, default_timeout=TIMEOUT)
    at.query_params["runs"] = ",".join([*sent, "not-a-run"])
    at.run()
    assert not at.exception
    assert at.multiselect(key="runs.compare").value == [r for r in sent if r in set(df["run_id"])]
    assert "2 selected run(s)" in _texts(at, "subheader")
    curves = _charts(at)
    assert curves and len(curves[0]["data"]) == 2  # val_accuracy per epoch, one line per run


def test_runs_page_cancel_archives_nothing(populated_dir, use_store):
    uri = use_store(populated_dir)
    at = _run(RUNS)
    first = at.dataframe[0].value["run_id"].iloc[0]
    at.multiselect(key="runs.compare").set_value([first]).run()
    at.button(key="runs.action").click().run()
    at.button(key="runs.no").click().run()
    assert not at.exception and not at.get("warning")
    assert results.load_view(uri, "runs", archived=True).empty


def test_odd_states_missing_energy_running_and_failed_runs(store_dir, use_store):
    """TEST DATA: FE runs only, one without energy (CodeCarbon unavailable), one still RUNNING, and a
    QUANTA run that failed before logging any lambda_S."""
    from tlcore.tracking import Tracker

    tracker = Tracker(str(store_dir))
    base = {"method": "fe", "dataset": "digits", "backbone": "efficientnet_lite0", "classifier": "linearsvc",
            "split": 0}
    with tracker.start_run("fe", {**base, "samples_per_class": 5, "energy_method": "counters: rapl"}) as run:
        run.log_metrics({"test_accuracy": 0.7, "time_total_s": 3.0, "energy_kwh": 1e-5, "co2_kg": 1e-6})
    with tracker.start_run("fe", {**base, "samples_per_class": 10,
                                  "energy_method": "unavailable: codecarbon did not start"}) as run:
        run.log_metrics({"test_accuracy": 0.8, "time_total_s": 4.0})
    tracker.start_run("fe", {**base, "samples_per_class": 20})  # left RUNNING: a job in progress
    quanta = tracker.start_run("quanta", {"method": "quanta", "dataset": "digits:5-9", "backbone": "quanta_cnn",
                                          "source_weights": "random", "layer_to_transfer": -1})
    quanta.fail(RuntimeError("source weights file not found (test data)"))
    use_store(store_dir)

    at = _run(TRADEOFFS)
    at.selectbox(key="tradeoffs.cost").set_value("energy_kwh").run()
    assert not at.exception
    captions = _texts(at, "caption")
    assert "1 finished run(s) have no value for Energy (Wh)" in captions and "1 running" in captions
    assert "Only feature extraction runs here" in _texts(at, "info")

    at = _run(QUANTA)
    assert "No finished QUANTA run on digits:5-9" in _texts(at, "info")
    assert not at.get("plotly_chart")
    at.toggle(key="quanta.unfinished").set_value(True).run()
    assert not at.exception  # a failed run without lambda_S: still a message, never a traceback

    at = _run(RUNS)
    assert set(at.dataframe[0].value["status"]) == {"FINISHED", "RUNNING", "FAILED"}


def test_runs_compare_writes_metrics_for_people_and_stars_the_better_value(populated_dir, use_store):
    uri = use_store(populated_dir)
    df = results.load_view(uri, "runs")
    fe = df.loc[(df["sweep_id"] == "sweep-fe") & (df["spc"] == 5) & (df["split_index"] == 1), "run_id"].iloc[0]
    ft = df.loc[(df["sweep_id"] == "sweep-ft0") & (df["spc"] == 5) & (df["split_index"] == 1), "run_id"].iloc[0]
    at = AppTest.from_file(RUNS, default_timeout=TIMEOUT)
    at.query_params["runs"] = f"{fe},{ft}"
    at.run()
    assert not at.exception
    metrics = next(f.value for f in at.dataframe if f.value.index.name == "metric")
    # FE .72 at 2.5 s vs FT config 0 .70 at 100 s: accuracy in % with one decimal, the better one starred
    assert sorted(metrics.loc["test_accuracy"].tolist()) == sorted(["★ 72.0 %", "70.0 %"])
    assert sorted(metrics.loc["time_total_s"].tolist()) == sorted(["★ 2 s", "1 min 40 s"])
    assert sorted(metrics.loc["flops_total"].tolist()) == sorted(["★ 5 GFLOPs", "150 GFLOPs"])
    assert "★ the better value" in _texts(at, "caption")
    verdicts = next(f.value for f in at.dataframe if set(f.value.columns) == {"run", "verdict", "why"})
    assert set(verdicts["verdict"]) == {"converged"}


def test_units_are_one_family_and_the_cost_ratio_label_sits_on_its_line(populated_dir, use_store):
    use_store(populated_dir)
    at = _run(TRADEOFFS)
    at.selectbox(key="tradeoffs.cost").set_value("energy_kwh").run()
    scatter = _charts(at)[0]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "Energy (Wh) (log)"
    assert scatter["layout"]["xaxis"]["exponentformat"] == "none"  # no "40µ" after a unit
    front = next(f.value for f in at.dataframe if "Energy (Wh)" in f.value.columns)
    assert (front["Energy (Wh)"] >= 0.01).all()  # 1e-5 kWh and up, in Wh: 0.01 Wh
    for frame in at.dataframe:  # every accuracy on the page has one decimal
        for col in (c for c in frame.value.columns if str(c).endswith("(%)")):
            values = frame.value[col].dropna()
            assert (values.round(1) == values).all(), col
    ratio_fig = _charts(at)[-1]
    assert ratio_fig["layout"]["yaxis"]["type"] == "log"
    [label] = [a for a in ratio_fig["layout"]["annotations"] if a["text"] == "same cost"]
    assert label["y"] == 0.0 and label["yref"] == "y"  # log10(1): on the line at 1, not near 10
    ratio_table = next(f.value for f in at.dataframe if "FT / FE" in f.value.columns)
    assert not any(c in ratio_table.columns for c in ("fe_cost", "ft_cost", "n_fe"))  # readable headers


def test_a_run_written_by_another_process_shows_at_the_next_rerun(tmp_path, populated_dir, use_store):
    """The runs are cached by the store's change marker, not only by the job runner's version: a run the
    CLI writes (no job of this app ended) is on the page at the next click, without waiting for a TTL."""
    from tlcore.tracking import Tracker

    folder = tmp_path / "store"
    shutil.copytree(populated_dir, folder)
    uri = use_store(folder)
    at = _run(TRADEOFFS)
    assert "late_arrival" not in at.sidebar.multiselect(key="tradeoffs.dataset").options
    with Tracker(str(folder)).start_run("fe", {"dataset": "late_arrival", "backbone": "resnet18",
                                               "samples_per_class": 5, "split": 0}) as run:
        run.log_metrics({"test_accuracy": 0.5, "time_total_s": 1.0})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "late_arrival" in results.options(results.load_view(uri, "tradeoffs"), "dataset")
    assert "late_arrival" in at.sidebar.multiselect(key="tradeoffs.dataset").options
