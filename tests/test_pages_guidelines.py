"""AppTest of the guideline walkthrough: without runs, with runs (evidence and overrides), the pilot."""

from __future__ import annotations

import shutil
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tests.fake_method import fake_fe, fake_method, use_fake  # noqa: F401  (fixture)

PAGE = "pages/4_🧭_Guidelines.py"


pytestmark = pytest.mark.usefixtures("fresh_streamlit_caches")


def open_page(monkeypatch, folder) -> AppTest:
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(folder))
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in at.get(kind))


def test_without_runs_the_answer_rests_on_published_findings(store_dir, monkeypatch):
    at = open_page(monkeypatch, store_dir)
    at.radio(key="g_mode").set_value("Typing the numbers").run()
    at.number_input(key="g_spc_typed").set_value(10).run()
    at.selectbox(key="g_domain").set_value("medical").run()
    assert not at.exception and not at.error
    assert "Feature extraction" in texts(at, "success")
    md = texts(at, "markdown")
    assert "Source: Evci, Dumoulin, Larochelle, Mozer" in md  # far domain, few labels: FE (evci2022)
    assert "Not known yet" in md and "Measured in your runs" not in md
    assert "has no finished feature-extraction, fine-tuning or QUANTA runs yet" in texts(at, "info")
    assert "Speed: not known yet" in md  # no job on this machine: compute only, and a button to measure
    assert at.button(key="g_calibrate")
    assert "Pick your dataset in step 1 to run the pilot" in texts(at, "info")
    options = at.dataframe[0].value["option"].tolist()
    assert options[0].startswith("FT, configuration 0") and len(options) == 5


def test_measuring_this_machine_projects_time(store_dir, monkeypatch):
    at = open_page(monkeypatch, store_dir)
    at.selectbox(key="g_backbone").set_value("quanta_cnn").run()
    at.button(key="g_calibrate").click().run()
    assert not at.exception
    md = texts(at, "markdown")
    assert "Speed: measured just now on cpu" in md
    assert at.dataframe[0].value["time"].ne("unknown").all()


def test_a_named_gpu_and_a_budget(store_dir, monkeypatch):
    at = open_page(monkeypatch, store_dir)
    at.radio(key="g_mode").set_value("Typing the numbers").run()
    at.number_input(key="g_spc_typed").set_value(100_000).run()  # 1e8 images of 1,000 classes
    at.number_input(key="g_classes_typed").set_value(1000).run()
    at.selectbox(key="g_device").set_value("h100").run()
    assert "FT, configuration" in texts(at, "success")  # no limit: enough labels to fine-tune
    at.radio(key="g_limit").set_value("Hours").run()
    at.number_input(key="g_budget").set_value(1.0).run()  # 40 epochs of FT take the H100 ~8 h; FE minutes
    md = texts(at, "markdown")
    assert "NVIDIA H100 SXM5: rated 989 TFLOP/s" in md and "30% utilisation" in md
    assert "Feature extraction" in texts(at, "success")
    assert "Within your budget." in texts(at, "caption")


def test_with_runs_the_evidence_is_graded_and_shown_with_its_strength(analysis_store, monkeypatch):  # noqa: F811
    at = open_page(monkeypatch, analysis_store[0])
    at.number_input(key="g_spc_digits").set_value(20).run()
    assert not at.exception and not at.error
    md = texts(at, "markdown")
    # closest measured point: 10 per class, FE .80 vs FT config 0 .90 on one shared draw: no interval, so the
    # runs do not separate them and the cheaper option is recommended, with a strong badge and a caution
    assert ":green-badge[strong] In your runs on digits with efficientnet_lite0 at 10 samples per class, feature " \
           "extraction and fine-tuning (configuration 0) were not separated" in md
    assert "the cheaper option wins" in md and "Source: Measured in your runs" in md
    assert "Feature extraction" in texts(at, "success")
    assert "do not separate the two methods" in texts(at, "warning")
    # QUANTA runs of quanta_cnn say nothing about efficientnet_lite0's layers
    assert "Not used: not your backbone (efficientnet_lite0)" in md
    assert at.get("plotly_chart")


def test_the_pilot_queues_an_fe_curve_and_one_ft_configuration(store_dir, monkeypatch, fake_fe):  # noqa: F811
    use_fake(monkeypatch, "ft")
    at = open_page(monkeypatch, store_dir)
    at.number_input(key="g_spc_digits").set_value(5).run()
    at.button(key="g_pilot").click().run()
    assert not at.exception and not at.error
    assert "Queued as jobs #1, #2" in texts(at, "success")
    from pages.shared import widgets

    runner = widgets.runner()
    deadline = time.time() + 60
    while any(j.active for j in runner.jobs()) and time.time() < deadline:
        time.sleep(0.1)
    jobs = sorted(runner.jobs(), key=lambda j: j.number)
    assert [j.state for j in jobs] == ["finished", "finished"]
    fe, ft = (j.spec for j in jobs)
    assert (fe.method, fe.samples_per_class, fe.dataset, fe.tags["pilot"]) == ("fe", (1, 2, 5), "digits", "guidelines")
    assert (fe.splits, fe.resolution) == (3, 64)  # digits are 8x8: the pilot runs at 64 px
    assert ft.method == "ft" and ft.samples_per_class == (2, 5) and ft.splits == 3  # same draws as FE
    # the pilot's runs are what the Trade-offs page reads
    at.switch_page("pages/2_📈_Trade-offs.py").run()
    assert not at.exception
    assert "2 runs match the filters: 2 finished" in texts(at, "caption")


def test_a_store_that_cannot_be_read_still_gets_an_answer(tmp_path, monkeypatch):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "mlflow.db").write_text("not a database")
    at = open_page(monkeypatch, folder)
    assert texts(at, "error").startswith(f"Could not read runs from sqlite:///{folder / 'mlflow.db'}")
    assert "FT, configuration" in texts(at, "success")  # 179 digits per class: the generic rules still answer
    shutil.rmtree(folder)
