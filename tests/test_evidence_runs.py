"""Verdicts on real runs, and the advice they lead to: FE converged beside FT capped at one epoch.

The store is made once per module with real trainings on digits at 32 px (seconds on a CPU): a
feature-extraction curve and a fine-tuning curve stopped at one epoch, 5 samples per class, 3 draws.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tlcore import cli, experiments, results
from tlcore.errors import TrainingDiverged
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams
from tlcore.tracking import Tracker, resolve_tracking_uri

DATASET = "digits:0-4"  # five classes: half the images of digits, the same story


@pytest.fixture(scope="module")
def capped_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("capped-store")
    common = dict(samples_per_class=(5,), splits=3, resolution=32, mlflow_path=str(folder), measure_energy=False)
    fe = experiments.run(ExperimentSpec("fe", DATASET, params=FeatureExtractionParams(), **common), Reporter())
    ft = experiments.run(ExperimentSpec("ft", DATASET, batch_size=16, params=FineTuningParams(epochs=1), **common),
                         Reporter())
    return folder, fe, ft


def test_finished_runs_carry_their_verdict_as_tags(capped_store):
    folder, fe, ft = capped_store
    tracker = Tracker(str(folder))
    fe_tags = [tracker.get_run(r).data.tags for r in fe.run_ids]
    assert {t["quality"] for t in fe_tags} == {"converged"}
    ft_tags = [tracker.get_run(r).data.tags for r in ft.run_ids]
    assert {t["quality"] for t in ft_tags} == {"capped"}
    assert "cap of 1 epoch" in ft_tags[0]["quality_reason"]
    parent = tracker.get_run(ft.parent_run_id).data.tags
    assert parent["quality"] == "capped" and parent["quality_reason"].startswith("3 of 3 runs are weak evidence")
    # FE and FT trained on the same draws: their runs pair up by the train split's fingerprint
    hashes = lambda res: sorted(tracker.get_run(r).data.params["train_hash"] for r in res.run_ids)
    assert hashes(fe) == hashes(ft)


def test_the_tradeoffs_view_marks_the_capped_runs_weak(capped_store):
    folder, _, ft = capped_store
    df = results.load_view(resolve_tracking_uri(str(folder)), "tradeoffs").set_index("run_id")
    assert df.loc[ft.run_ids, "weak"].all()
    curves = results.learning_curves(df.reset_index())
    ft_curve = curves[curves["variant"] == "FT config 0"].iloc[0]
    assert ft_curve["weak"] and ft_curve["weak_reason"] == "3 capped (still improving)"


def test_advise_recommends_fe_and_lists_the_capped_ft_as_weak(capped_store, capsys):
    folder, _, _ = capped_store
    code = cli.main(["advise", "--dataset", DATASET, "--samples-per-class", "5", "--mlflow-path", str(folder),
                     "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "fe"
    assert all(r["strength"] in ("prior", "projection") for r in out["reasons"])  # nothing measured decided
    ignored = out["evidence"]["ignored"]
    assert any(i["strength"] == "weak" and "3 capped" in i["why_not_used"] for i in ignored)
    assert out["pilot_recommended"] and "weak evidence" in out["caution"]
    assert out["expected_accuracy"]["text"].startswith("Not known yet")


def test_advise_prints_the_same_answer_for_people(capped_store, capsys):
    folder, _, _ = capped_store
    assert cli.main(["advise", "--dataset", DATASET, "--samples-per-class", "5", "--mlflow-path", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "Recommendation: Feature extraction" in text and "[weak]" in text and "not used:" in text


def test_advise_without_a_dataset_or_numbers_is_one_sentence(capsys):
    assert cli.main(["advise"]) == 2
    assert "Give --dataset NAME" in capsys.readouterr().err


def test_guidelines_page_shows_the_weak_runs_and_does_not_let_them_decide(capped_store, monkeypatch):
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    folder, _, _ = capped_store
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(folder))
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page("pages/4_🧭_Guidelines.py").run()
    at.selectbox(key="g_dataset_choice").set_value("digits").run()
    at.text_input(key="g_dataset_classes").set_value("0-4").run()
    at.number_input(key=f"g_spc_{DATASET}").set_value(5).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Feature extraction" in "\n".join(str(e.value) for e in at.success)
    md = "\n".join(str(e.value) for e in at.markdown)
    assert ":orange-badge[weak]" in md and "Not used:" in md and "3 capped" in md
    assert "weak evidence" in "\n".join(str(e.value) for e in at.warning)


def test_a_diverging_run_is_failed_and_labelled_diverged(store_dir, monkeypatch):
    from tlcore.methods import fine_tuning

    real = fine_tuning.loop.F.cross_entropy
    monkeypatch.setattr(fine_tuning.loop.F, "cross_entropy", lambda logits, y: real(logits, y) * float("nan"))
    spec = ExperimentSpec("ft", "digits:0-2", samples_per_class=(5,), splits=1, resolution=32, batch_size=16,
                          mlflow_path=str(store_dir), measure_energy=False, params=FineTuningParams(epochs=2))
    with pytest.raises(TrainingDiverged, match="diverged at epoch 1"):
        experiments.run(spec, Reporter())
    df = results.load_view(resolve_tracking_uri(str(store_dir)), "runs")
    failed = df[(df["status"] == "FAILED") & ~df["is_sweep_parent"]]
    assert failed["quality"].tolist() == ["diverged"] and failed["weak"].all()
    assert "lower --learning-rate" in failed["error"].iloc[0]
