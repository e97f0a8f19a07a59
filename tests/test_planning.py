"""Planning (form -> spec, dataset checks, cost estimate), run history and the live job charts."""

from __future__ import annotations

import dataclasses
import socket

import pandas as pd
import pytest

from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tlcore.errors import DatasetError, SpecError
from tlcore.history import job_runs, measured_speed, recent_runs
from tlcore.job_charts import curve_figure, live_figures
from tlcore.jobs import MetricPoint
from tlcore.methods import base
from tlcore.pace import PACE_FILE
from tlcore.planning import (
    RunForm,
    build_spec,
    check_dataset,
    default_spc_grid,
    estimate_cost,
    method_fields,
    parse_spc_grid,
    spec_fingerprint,
)
from tlcore.specs import ExperimentSpec
from tlcore.tracking import TAG_HOST

PARAMS_BY_METHOD = {name: base.get(name).params for name in base.names()}
APP_DEFAULTS = {name: dict(base.get(name).app_defaults) for name in base.names()}


def test_samples_per_class_grid_parsing():
    assert parse_spc_grid(" 10, 1,2 ,5,5") == (1, 2, 5, 10)
    assert parse_spc_grid("") is None and parse_spc_grid(None) is None
    with pytest.raises(SpecError, match=r"comma-separated integers >= 1 such as 1,2,5,10. Got '1,x' instead"):
        parse_spc_grid("1,x")
    with pytest.raises(SpecError, match="integers >= 1"):
        parse_spc_grid("0,5")


@pytest.mark.parametrize("method", list(PARAMS_BY_METHOD))
def test_every_method_form_builds_its_default_spec(method):
    fields = method_fields(method)
    # the params classes keep the seeds' defaults (the CLI's); the app changes only what APP_DEFAULTS lists
    defaults = dataclasses.replace(PARAMS_BY_METHOD[method](), **APP_DEFAULTS.get(method, {}))
    assert fields and all(f.default == getattr(defaults, f.name) for f in fields if f.kind != "choice")
    spec = build_spec(RunForm(method, "digits", params={f.name: f.default for f in fields}))
    if method == "quanta":  # the app never writes exports into the server's working directory
        assert spec.params.outdir != defaults.outdir
        defaults = dataclasses.replace(defaults, outdir=spec.params.outdir)
    assert spec.method == method and spec.params == defaults


def test_quanta_exports_from_the_app_go_beside_the_results_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = build_spec(RunForm("quanta", "digits:5-9"), tracking_uri=uri)
    assert spec.params.outdir == str(tmp_path / "quanta_exports")
    chosen = build_spec(RunForm("quanta", "digits:5-9", params={"outdir": str(tmp_path / "mine")}), tracking_uri=uri)
    assert chosen.params.outdir == str(tmp_path / "mine")


def test_form_values_become_the_spec_the_cli_would_build():
    spec = build_spec(RunForm("ft", "digits", class_filter=" 0-4 ", backbone="resnet18", samples_per_class="5,10",
                              splits=2, resolution=64, batch_size=16,
                              params={"configuration": 2, "learning_rate": 1, "epochs": 3.0, "resume": ""}))
    assert spec.dataset == "digits:0-4" and spec.samples_per_class == (5, 10) and spec.splits == 2
    assert spec.resolution == 64 and spec.batch_size == 16
    assert spec.params.learning_rate == 1.0 and isinstance(spec.params.learning_rate, float)
    assert spec.params.epochs == 3 and spec.params.resume is None
    # a size typed on the form is kept as typed, the backbone's own too: unset, tiny images would run at 64 px
    assert build_spec(RunForm("fe", "digits", resolution=224)).resolution == 224
    assert build_spec(RunForm("fe", "digits")).resolution is None
    assert build_spec(RunForm("quanta", "digits", backbone="quanta_cnn", resolution=32)).resolution is None  # fixed
    # spec validation speaks for the form
    with pytest.raises(SpecError, match=r"'learning_rate' parameter of FineTuningParams must be a float in the "
                                        r"range \(0, inf\). Got -0.1 instead."):
        build_spec(RunForm("ft", "digits", params={"learning_rate": -0.1}))
    # the layer is picked from the backbone's list: an index on quanta_cnn, a tap name elsewhere
    quanta = build_spec(RunForm("quanta", "digits", backbone="quanta_cnn",
                                params={"layer_to_transfer": 3, "source_weights": "random"}))
    assert quanta.params.layer_to_transfer == 3
    taps = next(f for f in method_fields("quanta", "efficientnet_lite0") if f.name == "layer_to_transfer")
    assert taps.options[1] == "_blocks.0" and taps.kind == "choice"


def test_the_client_token_changes_with_the_spec_only():
    a = build_spec(RunForm("fe", "digits", samples_per_class="5"))
    b = build_spec(RunForm("fe", "digits", samples_per_class="5"))
    c = build_spec(RunForm("fe", "digits", samples_per_class="10"))
    assert spec_fingerprint(a) == spec_fingerprint(b) != spec_fingerprint(c)


def test_dataset_checks_say_what_was_found_or_what_is_wrong(digits_folder, tmp_path):
    ok = check_dataset("digits:0-4")
    assert ok.ok and ok.num_classes == 5 and ok.message.startswith("5 classes, 901 images")
    folder = check_dataset(str(digits_folder))
    assert folder.ok and folder.kind == "folder"
    assert "split folders train 60, val 15, test 24" in folder.message and "generated" in folder.message
    missing = check_dataset(str(tmp_path / "nope"))
    assert not missing.ok and missing.message.startswith(f"Folder {tmp_path / 'nope'} does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_dataset(str(empty)).message.startswith(f"No images found in {empty}")
    assert not check_dataset("digits:3").ok
    tv = check_dataset("cifar10", data_dir=str(tmp_path))
    assert not tv.ok and tv.needs_download and str(tmp_path / "cifar10") in tv.message
    assert check_dataset("cifar10", data_dir=str(tmp_path), download=True).ok


def test_fe_estimate_counts_each_image_once_for_the_whole_curve():
    spec = ExperimentSpec("fe", "digits:0-2", samples_per_class=(2, 5), splits=2, resolution=32)
    est = estimate_cost(spec)
    from tlcore.methods.common import load_data, plan_points

    ds, splits = load_data(spec)
    points = plan_points(spec, ds, splits)
    import numpy as np

    used = np.unique(np.concatenate([np.concatenate([p.train, p.eval]) for p in points]))
    assert est.runs == len(points) + 1 == 5  # 4 points + the sweep parent
    assert est.images == len(used)
    assert est.flops == pytest.approx(est.images * est.flops_per_image)
    assert est.seconds is None and "no finished feature extraction run" in est.basis
    crops = estimate_cost(ExperimentSpec("fe", "digits:0-2", samples_per_class=(2, 5), splits=2, resolution=32,
                                         use_crops=True))
    assert crops.images == 10 * est.images


def test_ft_estimate_is_an_upper_bound_that_shrinks_with_freezing():
    base = dict(samples_per_class=(5,), splits=1, resolution=32)
    full = estimate_cost(ExperimentSpec("ft", "digits:0-2", **base).with_params(epochs=4))
    frozen = estimate_cost(ExperimentSpec("ft", "digits:0-2", **base).with_params(epochs=4, configuration=3))
    assert full.upper_bound and full.runs == 1
    assert full.images == frozen.images and frozen.flops < full.flops
    shorter = estimate_cost(ExperimentSpec("ft", "digits:0-2", **base).with_params(epochs=2))
    assert shorter.flops < full.flops


def test_an_impossible_grid_is_refused_before_any_run(tracker):
    with pytest.raises(DatasetError, match="500 samples per class is more than digits:0-2 can give"):
        estimate_cost(ExperimentSpec("fe", "digits:0-2", samples_per_class=(500,)), tracker)


def _finished_run(tracker, time_s: float, flops: float, backbone="efficientnet_lite0", host=None, method="fe",
                  acc=0.9, spc="5"):
    tags = {TAG_HOST: host or socket.gethostname()}
    with tracker.start_run(method, {"backbone": backbone, "device": "cpu", "dataset": "digits",
                                    "samples_per_class": spc}, tags=tags) as run:
        run.log_metrics({"time_total_s": time_s, "flops_total": flops, "test_accuracy": acc})
    return run.run_id


def test_the_median_pace_of_similar_finished_runs_reads_this_machine_only(tracker):
    _finished_run(tracker, 10.0, 1e10)  # 1e-9 s per FLOP
    _finished_run(tracker, 30.0, 1e10)  # 3e-9
    _finished_run(tracker, 20.0, 1e10)  # 2e-9 -> median 2e-9
    _finished_run(tracker, 999.0, 1e10, backbone="resnet18")  # another backbone
    _finished_run(tracker, 999.0, 1e10, host="elsewhere")  # another machine
    parent = _finished_run(tracker, 10.0, 1e10)  # a whole sweep (start-up included): counts
    with tracker.start_run("fe", {"backbone": "efficientnet_lite0", "device": "cpu"}, parent_run_id=parent) as run:
        run.log_metrics({"time_total_s": 999.0, "flops_total": 1e10})  # one of its points alone: does not
    speed = measured_speed(tracker, "fe", "efficientnet_lite0", "cpu")
    assert speed.runs == 4 and speed.seconds_per_flop == pytest.approx(1.5e-9)
    assert measured_speed(tracker, "fe", "efficientnet_lite0", "cuda") is None


def test_projected_time_comes_from_the_pace_model_fitted_on_this_machines_jobs(tracker, store_dir):
    for seconds in (10.0, 20.0):  # any samples per class, resolution or backbone counts
        with tracker.start_run("fe", {"backbone": "efficientnet_lite0", "device": "cpu", "resolution": 32}) as run:
            run.log_metrics({"job_time_s": seconds, "flops_total": seconds * 1e9, "images_processed": 100})
    _finished_run(tracker, 999.0, 1e10, host="elsewhere")  # another machine: not fitted
    est = estimate_cost(ExperimentSpec("fe", "digits:0-2", samples_per_class=(5,), splits=1, resolution=32), tracker)
    assert est.seconds is not None and est.seconds > 0
    assert est.basis.startswith("fitted on 2 finished jobs on cpu on this machine (2 of feature extraction)")
    assert "efficientnet_lite0|32|fe" in (store_dir / PACE_FILE).read_text()  # timed once, remembered
    ft = estimate_cost(ExperimentSpec("ft", "digits:0-2", samples_per_class=(5,), splits=1, resolution=32)
                       .with_params(epochs=1), tracker)
    assert ft.seconds is None and "no finished fine-tuning run" in ft.basis  # no job of that method yet


def test_recent_and_job_runs_come_back_newest_first_and_in_job_order(tracker):
    ids = [_finished_run(tracker, 1.0, 1e9, acc=a, spc=s) for a, s in ((0.5, "1"), (0.7, "5"), (0.9, "10"))]
    recent = recent_runs(tracker, limit=2)
    assert recent["run_id"].tolist() == ids[::-1][:2] and recent["accuracy"].tolist() == [0.9, 0.7]
    assert job_runs(tracker, [ids[2], ids[0]])["run_id"].tolist() == [ids[2], ids[0]]
    assert job_runs(tracker, []).empty


def test_live_figures_follow_what_each_method_reports():
    def pts(name, values, series="spc=5 split=0"):
        return [MetricPoint(name, v, i, series, float(i)) for i, v in enumerate(values)]

    ft = pts("train_loss", [1.0, 0.6, 0.4]) + pts("val_loss", [1.1, 0.8, 0.7]) + pts("val_accuracy", [0.5, 0.7, 0.8])
    titles = [f.layout.title.text for f in live_figures(ft)]
    assert titles == ["Loss per epoch", "Accuracy per epoch"]
    acc = live_figures(ft)[1]
    assert list(acc.data[0].y) == pytest.approx([50.0, 70.0, 80.0])
    quanta = pts("quanta_source/0", [0.9, 0.8]) + pts("quanta_source/1", [0.9, 0.95])
    lam = live_figures(quanta)
    assert len(lam) == 1 and [t.name for t in lam[0].data] == ["layer 0", "layer 1"]
    assert live_figures([MetricPoint("images", 10.0, None, "", 0.0)]) == []
    fe_point = [MetricPoint("test_accuracy", 0.9, 0, "curve", 0.0), MetricPoint("samples_per_class", 5, 0, "curve", 0)]
    assert live_figures(fe_point, "fe") == []  # FE's points make the curve, not per-epoch charts


def test_the_curve_shows_each_finished_draw_and_the_mean():
    runs = pd.DataFrame({"run_id": list("abcde"), "status": ["FINISHED"] * 4 + ["RUNNING"],
                         "accuracy": [0.5, 0.7, 0.8, 0.9, None], "accuracy_metric": ["test_accuracy"] * 5,
                         "samples_per_class": ["1", "1", "5", "sweep", "10"],
                         "sweep_parent": [False, False, False, True, False]})
    fig = curve_figure(runs)
    draws, mean = fig.data
    assert list(draws.x) == [1, 1, 5] and list(mean.y) == pytest.approx([60.0, 80.0])
    assert "3 finished" in fig.layout.title.text
    assert curve_figure(runs.iloc[3:]) is None


def test_the_pace_reads_past_many_sweep_points_to_the_jobs(tracker):
    parent = _finished_run(tracker, 10.0, 1e10)  # 1e-9 s per FLOP, then 30 points of its sweep after it
    for _ in range(30):
        with tracker.start_run("fe", {"backbone": "efficientnet_lite0", "device": "cpu"}, parent_run_id=parent,
                               tags={TAG_HOST: socket.gethostname()}) as run:
            run.log_metrics({"time_total_s": 999.0, "flops_total": 1e10})
    speed = measured_speed(tracker, "fe", "efficientnet_lite0", "cpu")
    assert speed is not None and speed.runs == 1 and speed.seconds_per_flop == pytest.approx(1e-9)


def test_the_apps_quanta_defaults_are_the_measured_ones_and_the_seeds_stay_on_the_cli():
    assert APP_DEFAULTS["quanta"] == {"nb_of_target_epochs": 6, "quanta_lr": 0.05, "nb_of_target_samples": 40}
    seed = PARAMS_BY_METHOD["quanta"]()
    assert (seed.nb_of_target_epochs, seed.learning_rate, seed.quanta_lr) == (1, 2e-4, None)
    layer = next(f for f in method_fields("quanta", "quanta_cnn") if f.name == "layer_to_transfer")
    assert layer.options == (-1, 0, 1, 2, 3, 4, 5, 6) and layer.default == -1  # picked from a list, not typed
    assert layer.label_of(-1) == "every layer at once (7)"


def test_fine_tuning_defaults_to_fewer_points_without_a_gpu():
    assert default_spc_grid("ft", gpu=False) == "2,10" and default_spc_grid("ft", gpu=True) == "1,2,5,10"
    assert default_spc_grid("fe", gpu=False) == "1,2,5,10"


def test_latest_results_are_one_row_per_job_with_its_curve(analysis_store):  # noqa: F811
    from tlcore.history import recent_results
    from tlcore.tracking import Tracker

    table = recent_results(Tracker(str(analysis_store[0])), limit=50)
    assert not table["what"].str.startswith("spc=").any()  # a sweep's points are summed up in its row
    sweeps = table[table["what"] == "digits sweep"]
    assert len(sweeps) == 3
    # the FE sweep: 1 per class .50 .54 .52, 5 per class .70 .72 (the third draw FAILED), 10 per class .80
    fe = sweeps[sweeps["method"] == "fe"].iloc[0]
    assert fe["result"] == "52.0 % at 1, 71.0 % at 5, 80.0 % at 10 per class"
    ft = sweeps[sweeps["method"] == "ft"]
    assert set(ft["verdict"]) == {"converged"}  # early stopping ended each of their points
    single = table[table["what"] == "counters run"].iloc[0]
    assert single["result"] == "80.0 % (test)" and single["energy"] == "100 mWh"
