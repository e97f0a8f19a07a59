"""Ranking backbones (issue 15): a real ranking on digits end to end, read back from MLflow; the check against
measured accuracy on a store of known runs; the Guidelines' backbone suggestion; the Ranking page and the Run
page's ranking job (AppTest)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tlcore import results
from tlcore.cli import main
from tlcore.errors import SpecError
from tlcore.results import ranking as ranking_results
from tlcore.specs import ExperimentSpec, RankingParams
from tlcore.tracking import Tracker, resolve_tracking_uri

RANKING_PAGE = "../pages/6_🏅_Ranking.py"
SPC, DRAWS = 10, 2


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """``rank --json`` on digits: efficientnet_lite0 and its random-weights control, 2 draws of 10 per class."""
    folder = tmp_path_factory.mktemp("ranked")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["rank", "--dataset", "digits", "--backbones", "efficientnet_lite0", "--random-control",
                     "--samples-per-class", str(SPC), "--splits", str(DRAWS), "--mlflow-path", str(folder),
                     "--quiet", "--json"])
    assert code == 0
    return folder, json.loads(out.getvalue())


def test_rank_on_digits_puts_the_random_control_last_by_every_feature_score(ranked):
    _, report = ranked
    rows = {r["network"]: r for r in report["ranking"]}
    assert list(rows) == ["efficientnet_lite0", "efficientnet_lite0 (random weights)"]  # best first
    trained, control = rows["efficientnet_lite0"], rows["efficientnet_lite0 (random weights)"]
    for score in ("logme", "sfda"):
        assert trained["scores"][score]["mean"] > control["scores"][score]["mean"], score
        assert len(trained["scores"][score]["per_draw"]) == DRAWS
        assert all(math.isfinite(v) for v in trained["scores"][score]["per_draw"])
    # LEEP and NCE read the ImageNet head: the pretrained backbone has them, its random control has none
    assert {"leep", "nce"} <= set(trained["scores"]) and not {"leep", "nce"} & set(control["scores"])
    assert trained["scores"]["nce"]["mean"] <= 0.0  # a negative conditional entropy
    # per tap: one value per tap of the 100 % description
    from tlcore.models import default_description

    assert list(trained["per_tap"]["logme"]) == list(default_description("efficientnet_lite0", 100).taps)


def test_the_ranking_is_in_mlflow_as_a_parent_and_one_run_per_network(ranked):
    folder, report = ranked
    uri = resolve_tracking_uri(str(folder))
    runs = results.load_view(uri, "ranking")
    jobs = ranking_results.rankings(runs)
    assert len(jobs) == 1 and jobs["run_id"].iloc[0] == report["parent_run_id"]
    assert jobs["status"].iloc[0] == "FINISHED" and jobs["networks"].iloc[0] == 2
    table = ranking_results.ranking_table(runs, report["parent_run_id"])
    assert table["network"].tolist() == ["efficientnet_lite0", "efficientnet_lite0 (random weights)"]
    assert table["control"].tolist() == [False, True]
    assert (table["samples_per_class"] == str(SPC)).all() and (table["n_draws"] == str(DRAWS)).all()
    assert (table["n_images"] == str(SPC * 10)).all()
    assert table["logme_std"].notna().all() and (table["time_total_s"] > 0).all()
    assert ranking_results.measured_spc(table) == SPC
    assert ranking_results.control_warnings(table) == [] or all("H-score" in w for w in
                                                                  ranking_results.control_warnings(table))
    hist = results.metric_histories(uri, table["run_id"].tolist(), keys=("logme_tap",), max_points=None)
    n_taps = int(table["n_taps"].iloc[0])
    assert hist.groupby("run_id")["step"].nunique().tolist() == [n_taps, n_taps]


def test_a_second_ranking_and_feature_extraction_read_the_features_the_first_one_cached(ranked, tmp_path,
                                                                                         monkeypatch):
    folder, _ = ranked
    store = tmp_path / "store"
    shutil.copytree(folder, store)  # the store and the feature cache beside it
    from tlcore import experiments

    spec = ExperimentSpec("rank", "digits", samples_per_class=(SPC,), splits=DRAWS, mlflow_path=str(store),
                          params=RankingParams(backbones=("efficientnet_lite0",), scores=("logme",), per_tap=False))
    from tlcore.methods.ranking import method

    def no_network(*args, **kwargs):
        raise AssertionError("every feature was cached: the network must not be built")

    with monkeypatch.context() as m:
        m.setattr(method, "create_backbone", no_network)
        result = experiments.run(spec)
    run = Tracker(str(store)).client.get_run(result.run_ids[0])
    assert run.data.metrics["feature_cache_hits"] == float(run.data.params["n_images_embedded"]) > SPC * 10
    assert run.data.metrics["images_processed"] == 0.0  # no forward: every image came from the cache
    # feature extraction of the same backbone, taps and resolution finds the training images there too
    fe = experiments.run(ExperimentSpec("fe", "digits", samples_per_class=(SPC,), splits=1, mlflow_path=str(store)))
    parent_or_run = fe.parent_run_id or fe.run_ids[0]
    hits = Tracker(str(store)).client.get_run(parent_or_run).data.metrics["feature_cache_hits"]
    assert hits >= SPC * 10


def test_a_cold_pretrained_network_runs_one_forward_for_its_taps_and_head_and_caches_each_apart(ranked, tmp_path):
    """The module's ranking met efficientnet_lite0 cold: taps and ImageNet head came from one forward. Its
    head cache removed, a second ranking reads the taps from the cache and runs the head alone: LEEP, NCE and
    LogME must be the same numbers, so the one forward split its columns right."""
    folder, report = ranked
    store = tmp_path / "store"
    shutil.copytree(folder, store)
    metas = {d: json.loads((d / "meta.json").read_text())["identity"] for d in (store / "feature_cache").iterdir()}
    caches = {(m["weights"], tuple(m["taps"])): d for d, m in metas.items()}
    from tlcore.models import backbone_config

    head = ("imagenet", (backbone_config("efficientnet_lite0").head_path,))
    assert head in caches and len(caches) == 3  # taps and head apart (pretrained), taps (random control)
    # the parent counts every image each network put through a forward: once per network, not twice for lite0
    parent = Tracker(str(folder)).client.get_run(report["parent_run_id"])
    embedded = float(parent.data.params["n_images_embedded"])
    assert parent.data.metrics["images_processed"] == 2 * embedded
    def rows(folder):
        out = {}
        for chunk in sorted(folder.glob("chunk-*.json")):
            keys = json.loads(chunk.read_text())["keys"]
            out.update(zip(keys, np.load(chunk.with_suffix(".npy")), strict=True))
        return out

    one_forward = rows(caches[head])
    taps_folder = next(d for key, d in caches.items() if key[0] == "imagenet" and key != head)
    taps_width = sum(json.loads((taps_folder / "meta.json").read_text())["tap_widths"])
    assert {r.shape for r in rows(taps_folder).values()} == {(taps_width,)}  # the taps' columns, no more
    assert {r.shape for r in one_forward.values()} == {(1000,)}  # the ImageNet logits, no more
    shutil.rmtree(caches[head])
    from tlcore import experiments

    again = experiments.run(ExperimentSpec("rank", "digits", samples_per_class=(SPC,), splits=DRAWS,
                                           mlflow_path=str(store),
                                           params=RankingParams(backbones=("efficientnet_lite0",), per_tap=False)))
    first = {r["network"]: r for r in report["ranking"]}["efficientnet_lite0"]["scores"]
    second = again.rows[0]["scores"]
    for score in ("leep", "nce", "logme"):
        assert second[score]["per_draw"] == pytest.approx(first[score]["per_draw"], rel=1e-5), score
    run = Tracker(str(store)).client.get_run(again.run_ids[0])
    assert run.data.metrics["feature_cache_hits"] == embedded  # the taps came from the cache
    head_alone = rows(caches[head])  # the head cache again, from a forward of the head alone
    assert head_alone.keys() == one_forward.keys()
    np.testing.assert_allclose(np.stack([head_alone[k] for k in one_forward]), np.stack(list(one_forward.values())),
                               rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The check against reality, on a store of known runs (made-up scores and accuracies: test data)

BACKBONES = ("resnet18", "resnet50", "vgg16", "efficientnet_lite0")
SCORES = {"resnet18": 1.0, "resnet50": 3.0, "vgg16": 2.0, "efficientnet_lite0": 4.0}
ACCURACY = {"resnet18": 0.60, "resnet50": 0.70, "vgg16": 0.75, "efficientnet_lite0": 0.90}  # vgg16/resnet50 swapped


@pytest.fixture
def known_store(store_dir):
    tracker = Tracker(str(store_dir))
    shared = {"method": "rank", "dataset": "digits", "samples_per_class": "10", "n_draws": 1, "n_images": 100}
    parent = tracker.start_run("rank", shared, tags={"sweep_parent": "true"})
    for b in BACKBONES:
        with tracker.start_run("rank", {**shared, "backbone": b, "weights": "default", "control": False},
                               parent_run_id=parent.run_id) as run:
            run.log_metrics({"logme": SCORES[b], "sfda": -SCORES[b], "time_total_s": 1.0})
    with tracker.start_run("rank", {**shared, "backbone": "resnet18", "weights": "random", "control": True},
                           parent_run_id=parent.run_id) as run:
        run.log_metrics({"logme": 0.5, "sfda": 0.0, "time_total_s": 1.0})  # sfda puts the control on top
    parent.finish()
    for b in BACKBONES:
        for split, delta in ((0, 0.01), (1, -0.01)):
            with tracker.start_run("fe", {"method": "fe", "dataset": "digits", "backbone": b, "weights": "default",
                                          "samples_per_class": 10, "split": split}) as run:
                run.log_metrics({"test_accuracy": ACCURACY[b] + delta})
    # runs that must not count: another samples-per-class value, random weights
    with tracker.start_run("fe", {"method": "fe", "dataset": "digits", "backbone": "resnet18", "weights": "default",
                                  "samples_per_class": 5, "split": 0}) as run:
        run.log_metrics({"test_accuracy": 0.99})
    with tracker.start_run("fe", {"method": "fe", "dataset": "digits", "backbone": "resnet18", "weights": "random",
                                  "samples_per_class": 10, "split": 0}) as run:
        run.log_metrics({"test_accuracy": 0.99})
    return tracker.uri, parent.run_id


def test_kendall_tau_against_measured_accuracy_on_a_store_of_known_runs(known_store):
    uri, parent = known_store
    table = ranking_results.ranking_table(results.load_view(uri, "ranking"), parent)
    check = ranking_results.agreement(table, results.load_view(uri, "tradeoffs"), "digits", 10)
    logme = check[check["score"] == "logme"].iloc[0]
    # by hand: score order r18 < vgg < r50 < lite0 vs accuracy r18 < r50 < vgg < lite0: 5 concordant pairs, 1
    # discordant, tau = (5 - 1) / 6
    assert logme["method"] == "fe" and logme["n_backbones"] == 4
    assert logme["tau"] == pytest.approx(4 / 6)
    assert check[check["score"] == "sfda"].iloc[0]["tau"] == pytest.approx(-4 / 6)  # the reversed score
    assert logme["chance_of_perfect"] == pytest.approx(1 / 24) and "once in 24" in logme["note"]
    # a check on two backbones is no check
    two = table[table["backbone"].isin(["resnet18", "vgg16"])]
    assert ranking_results.agreement(two, results.load_view(uri, "tradeoffs"), "digits", 10).empty
    assert ranking_results.agreement(table, results.load_view(uri, "tradeoffs"), "digits", 5).empty  # 1 backbone
    warnings = ranking_results.control_warnings(table)
    assert len(warnings) == 1 and warnings[0].startswith("SFDA")


def test_guidelines_suggest_the_backbone_the_trusted_scores_rank_first(known_store):
    from tlcore.guidelines import Situation, advise

    uri, _ = known_store
    advice = advise(Situation(samples_per_class=10, num_classes=10, dataset="digits"), uri)
    hint = advice.backbone_suggestion
    assert hint is not None and hint.backbone == "efficientnet_lite0" and hint.scores == ("logme",)
    assert hint.text == "efficientnet_lite0: ranked first by LogME on your images (digits)."
    assert hint.left_out and hint.left_out[0].startswith("SFDA")  # its control came first: it does not decide
    assert advice.to_dict()["backbone_suggestion"]["strength"] == "measured proxy"
    # another dataset: no suggestion
    assert advise(Situation(samples_per_class=10, num_classes=10, dataset="lfw_faces"), uri).backbone_suggestion \
        is None


def test_a_split_ranking_suggests_no_backbone():
    from tlcore.guidelines.backbone import suggest_backbone

    rows = []
    for b, logme, sfda in (("a", 2.0, 1.0), ("b", 1.0, 2.0)):
        rows.append({"run_id": b, "parent_run_id": "p", "is_sweep_parent": False, "status": "FINISHED", "dataset": "d",
                     "backbone": b, "control": "False", "logme": logme, "sfda": sfda, "start_time": 1})
    rows.append({"run_id": "p", "parent_run_id": None, "is_sweep_parent": True, "status": "FINISHED", "dataset": "d",
                 "backbone": None, "control": None, "logme": np.nan, "sfda": np.nan, "start_time": 1,
                 "samples_per_class": "5"})
    hint = suggest_backbone(pd.DataFrame(rows), "d")
    assert hint.backbone is None and hint.scores == ("sfda", "logme")
    assert hint.text.startswith("Your ranking on d is split: SFDA puts b first, LogME puts a first.")


# ---------------------------------------------------------------------------------------------
# Input errors


def test_bad_ranking_parameters_get_one_sentence():
    with pytest.raises(SpecError, match="'scores' parameter of RankingParams"):
        ExperimentSpec("rank", "digits", params=RankingParams(scores=("logme", "accuracy"))).validate()
    with pytest.raises(SpecError, match="names layers of one backbone"):
        ExperimentSpec("rank", "digits", params=RankingParams(
            backbones=("efficientnet_lite0", "efficientnet_lite1"), taps=("_blocks.3",))).validate()
    with pytest.raises(SpecError, match="registered backbones"):
        ExperimentSpec("rank", "digits", params=RankingParams(backbones=("resnet1000",))).validate()


def test_cli_rank_with_a_backbone_whose_weights_are_absent_is_one_line_and_exit_2(capsys, store_dir):
    code = main(["rank", "--dataset", "digits", "--backbones", "resnet18", "--mlflow-path", str(store_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "pretrained weights of resnet18 are not on this machine" in err[0] and "--backbones" in err[0]


def test_cli_rank_dry_run_prints_the_plan_without_opening_a_run(capsys, tmp_path):
    assert main(["rank", "--dataset", "digits", "--random-control", "--mlflow-path", str(tmp_path / "s"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan: ranking at 64 px on digits") and "6 network(s) x 1,120 images" in out
    assert not (tmp_path / "s" / "mlflow.db").exists()


# ---------------------------------------------------------------------------------------------
# The pages


@pytest.mark.usefixtures("fresh_streamlit_caches")
def test_ranking_page_draws_the_ranking_its_controls_and_the_missing_check(ranked, monkeypatch):
    folder, _ = ranked
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(folder))
    at = AppTest.from_file(RANKING_PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.metric if m.label == "Draws"] == ["2"]
    bars = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert bars and bars[0]["data"][0]["y"] == ["efficientnet_lite0 (random weights)", "efficientnet_lite0"]
    assert bars[0]["data"][0]["marker"]["color"][0] == "#9e9e9e"  # the control is grey
    captions = " ".join(c.value for c in at.caption)
    assert "needs finished feature-extraction or fine-tuning runs on digits at 10 per class" in captions
    assert "For scale: one feature-extraction curve" in captions
    at.radio(key="ranking.score").set_value("sfda").run()
    assert not at.exception


@pytest.mark.usefixtures("fresh_streamlit_caches")
def test_ranking_page_on_an_empty_store_says_how_to_rank(store_dir, monkeypatch):
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file(RANKING_PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No rankings in this store yet" in i.value for i in at.info)
    assert any("python -m tlcore rank --dataset digits --random-control" in c.value for c in at.code)


@pytest.mark.usefixtures("fresh_streamlit_caches")
def test_a_ranking_runs_from_the_run_page_and_its_card_shows_the_networks(store_dir, monkeypatch):
    from pages.shared import widgets
    from tlcore.jobs import JobState

    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page("pages/1_🧪_Run.py").run()
    at.radio(key="run_method").set_value("rank").run()
    assert not at.exception, at.exception
    assert not [s for s in at.selectbox if s.label == "Backbone"]  # backbones are picked in the form below
    pick = next(m for m in at.multiselect if m.label == "Backbones to rank")
    pick.set_value(["efficientnet_lite0"]).run()
    at.text_input(key="run_spc_rank").set_value("5").run()
    at.number_input(key="run_splits_rank").set_value(1).run()
    assert [e.value for e in at.error] == []
    assert "**MLflow runs:** 3" in " ".join(m.value for m in at.markdown)  # a parent, the backbone, its control
    at.button(key="run_submit").click().run()
    runner = widgets.runner()
    job = runner.wait(runner.jobs()[0].id, timeout=150)
    assert job.state is JobState.FINISHED, job.error
    at.run()
    assert not at.exception
    card = next(df.value for df in at.dataframe if "network" in df.value.columns)
    assert card["network"].tolist() == ["efficientnet_lite0", "efficientnet_lite0 (random weights)"]
    assert "LogME" in card.columns


@pytest.mark.usefixtures("fresh_streamlit_caches")
def test_guidelines_page_names_the_top_ranked_backbone_as_a_measured_proxy(known_store, store_dir, monkeypatch):
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page("pages/4_🧭_Guidelines.py").run()
    assert not at.exception, at.exception
    hint = [i.value for i in at.info if "Backbone to try first" in i.value]
    assert hint and "efficientnet_lite0: ranked first by LogME on your images (digits)." in hint[0]
    assert "measured proxy" in hint[0] and "never decides the method" in hint[0]
    assert any(c.value.startswith("Left out: SFDA") for c in at.caption)
