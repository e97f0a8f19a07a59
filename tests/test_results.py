"""tlcore.results: reading the MLflow history into frames, and the analyses the pages draw."""

from __future__ import annotations

import http.server
import math
import shutil
import threading
from datetime import date

import numpy as np
import pandas as pd
import pytest

from tests import analysis_store as data
from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tlcore import results
from tlcore.tracking import resolve_tracking_uri


@pytest.fixture(scope="module")
def populated(analysis_store):  # noqa: F811
    """The URI of the store of tests/analysis_store.py (read-only: copy it to modify), and its ids."""
    folder, ids = analysis_store
    return resolve_tracking_uri(str(folder)), ids


@pytest.fixture
def populated_copy(populated, tmp_path):
    uri, ids = populated
    src = results.sqlite_path(uri).parent
    dst = tmp_path / "store"
    shutil.copytree(src, dst)
    return resolve_tracking_uri(str(dst)), ids


@pytest.fixture(scope="module")
def tradeoffs(populated):
    return results.load_view(populated[0], "tradeoffs")


# -- Pareto front ----------------------------------------------------------------------------------


def test_pareto_front_keeps_ties_and_drops_dominated_points():
    #            A    B    C    D    E(=D) F    G(nan) H     I
    cost = [1.0, 1.0, 2.0, 3.0, 3.0, 0.5, np.nan, 4.0, 5.0]
    acc = [0.5, 0.6, 0.6, 0.9, 0.9, 0.4, 0.99, 0.95, 0.95]
    mask = results.pareto_mask(cost, acc)
    # A: same cost as B, less accurate. C: as accurate as B, dearer. I: as accurate as H, dearer.
    # D and E are the same point: neither dominates the other. G has no cost: never on the front.
    assert mask.tolist() == [False, True, False, True, True, True, False, True, False]


def test_pareto_front_of_a_single_point_and_of_nothing():
    assert results.pareto_mask([2.0], [0.3]).tolist() == [True]
    assert results.pareto_mask([], []).tolist() == []


def test_pareto_front_is_computed_per_dataset():
    df = pd.DataFrame({"dataset": ["a", "a", "b", "b"], "cost": [1.0, 2.0, 5.0, 6.0], "acc": [0.9, 0.5, 0.2, 0.3]})
    front = results.pareto_front(df, "cost", "acc")
    # Dataset b's points would all be dominated by a's if the datasets were pooled.
    assert sorted(zip(front["dataset"], front["cost"], strict=True)) == [("a", 1.0), ("b", 5.0), ("b", 6.0)]


def test_pareto_front_of_the_store_on_energy_is_per_samples_per_class(tradeoffs):
    pts = results.tradeoff_points(tradeoffs, "energy_kwh")
    front = results.pareto_front(pts, "energy_kwh")
    digits = front[front["dataset"] == "digits"]
    # Accuracies at 1, 5 and 10 samples per class are not comparable: one front each. At 1: FE split 1 (.54,
    # 1e-5 kWh) dominates every FT run (dearer, less accurate). At 5: FE split 1 (.72). At 10: FE at 1e-4 and the
    # counters run at 1e-4 tie at .80 (both stay), then FT config 0 (.90) at 1e-3.
    assert digits[digits["spc"] == 1]["test_accuracy"].tolist() == [0.54]
    assert digits[digits["spc"] == 5]["test_accuracy"].tolist() == [0.72]
    assert digits[digits["spc"] == 10]["test_accuracy"].tolist() == [0.80, 0.80, 0.90]
    assert not digits["is_sweep_parent"].any() and (digits["status"] == "FINISHED").all()


def test_weak_runs_never_sit_on_a_pareto_front():
    df = pd.DataFrame({"dataset": "d", "spc": 5.0, "cost": [1.0, 2.0], "acc": [0.9, 0.5], "weak": [True, False]})
    front = results.pareto_front(df, "cost", "acc")
    assert front["acc"].tolist() == [0.5]  # the cheaper, more accurate run is capped: not on the front


# -- learning curves -------------------------------------------------------------------------------


def test_learning_curves_mean_and_spread_over_splits_with_a_missing_split(tradeoffs):
    curves = results.learning_curves(tradeoffs)
    fe = curves[(curves["variant"] == "FE linearsvc") & (curves["dataset"] == "digits")].set_index("spc")
    assert fe.loc[1, "mean"] == pytest.approx(0.52) and fe.loc[1, "std"] == pytest.approx(0.02)
    assert fe.loc[1, "n_splits"] == 3
    # spc 5: split 2 FAILED, so two splits are averaged, and the failed run does not count as zero.
    assert fe.loc[5, "mean"] == pytest.approx(0.71) and fe.loc[5, "n_splits"] == 2
    # spc 10: the sweep's run and another run of the same split: one split, two runs, no spread.
    assert fe.loc[10, "n_splits"] == 1 and fe.loc[10, "n_runs"] == 2 and math.isnan(fe.loc[10, "std"])
    # Sweep parents (samples_per_class = "sweep") are never points.
    assert set(curves["spc"]) == {1, 5, 10, 20}


def test_learning_curves_average_repeated_runs_of_a_split_before_the_spread():
    df = pd.DataFrame({"dataset": "d", "backbone": "b", "variant": "FE x", "status": "FINISHED",
                       "is_sweep_parent": False, "spc": 2.0, "split_index": [0, 0, 0, 1],
                       "test_accuracy": [0.2, 0.2, 0.2, 0.6]})
    row = results.learning_curves(df).iloc[0]
    # Three runs of split 0 weigh as one split: mean (0.2 + 0.6) / 2, not 0.3.
    assert row["mean"] == pytest.approx(0.4) and row["n_splits"] == 2 and row["n_runs"] == 4


# -- crossovers ------------------------------------------------------------------------------------


def test_find_crossings_interpolates_in_log_samples_per_class():
    # FT - FE = -0.01 at 5 and +0.10 at 10: the sign changes 1/11 of the way, in log space.
    got = results.find_crossings([1, 5, 10], [0.52, 0.71, 0.80], [0.32, 0.70, 0.90])
    assert len(got) == 1
    x, y, direction = got[0]
    assert x == pytest.approx(5 * 2 ** (1 / 11)) and direction == 1
    assert y == pytest.approx(0.71 + (0.80 - 0.71) / 11)


def test_find_crossings_ignores_touching_and_crosses_mid_equality():
    x = [1, 2, 3, 4, 5]
    # Touches at x=2 and goes back below: no crossing.
    assert results.find_crossings(x, [1, 1, 1, 1, 1], [0, 1, 0, 0, 0], log_x=False) == []
    # Below, equal at 2..4, above: one crossing at the middle of the equal stretch.
    (cx, _, d), = results.find_crossings(x, [1, 1, 1, 1, 1], [0, 1, 1, 1, 2], log_x=False)
    assert cx == pytest.approx(3.0) and d == 1
    # Falls below: direction -1.
    (cx, _, d), = results.find_crossings([1, 3], [0.5, 0.5], [0.7, 0.3], log_x=False)
    assert cx == pytest.approx(2.0) and d == -1


def test_crossovers_between_fe_and_each_ft_configuration(tradeoffs):
    cross = results.crossovers(results.learning_curves(tradeoffs))
    assert cross["variant"].tolist() == ["FT config 0"]  # config 3 stays below FE everywhere
    row = cross.iloc[0]
    assert row["reference"] == "FE linearsvc" and row["dataset"] == "digits"
    assert row["spc"] == pytest.approx(5 * 2 ** (1 / 11)) and "FT config 0 overtakes" in row["direction"]


def test_crossovers_only_over_the_range_both_curves_cover():
    curves = pd.DataFrame({"dataset": "d", "backbone": "b",
                           "variant": ["FE a"] * 3 + ["FT config 0"] * 2,
                           "spc": [1.0, 10.0, 100.0, 1.0, 10.0], "mean": [0.5, 0.6, 0.9, 0.4, 0.7]})
    # FT crosses FE between 1 and 10; beyond 10 FT has no data, so nothing is extrapolated.
    cross = results.crossovers(curves)
    assert len(cross) == 1 and 1 < cross.iloc[0]["spc"] < 10


# -- cost ratio ------------------------------------------------------------------------------------


def test_cost_ratio_ft_over_fe_per_samples_per_class(tradeoffs):
    ratio = results.cost_ratio(tradeoffs, "time_total_s")
    r = ratio[ratio["variant"] == "FT config 0"].set_index("spc")
    # FE spc 5: the two finished runs (the failed one logged no time): 2.5 s; FT config 0: 100 s.
    assert r.loc[5, "ratio"] == pytest.approx(40.0) and r.loc[5, "n_fe"] == 2
    assert r.loc[1, "ratio"] == pytest.approx(20.0 / 2.1)
    assert set(ratio["variant"]) == {"FT config 0", "FT config 3"}  # quanta_cnn has no FE runs: no ratio


# -- QUANTA ----------------------------------------------------------------------------------------


def test_quanta_summary_trained_vs_random_source_per_layer(populated):
    df = results.load_view(populated[0], "quanta")
    summary = results.quanta_summary(results.quanta_values(df), results.layer_hint(df))
    digits = summary[summary["dataset"] == "digits:5-9"]
    trained = digits[digits["source_kind"] == results.TRAINED_SOURCE].set_index("layer")
    control = digits[digits["source_kind"] == results.RANDOM_SOURCE].set_index("layer")
    assert trained["mean"].to_dict() == pytest.approx({"0": 0.94, "1": 0.89, "2": 0.61})
    assert trained.loc["2", "std"] == pytest.approx(np.std([0.60, 0.62], ddof=1)) and trained.loc["2", "n"] == 2
    assert control["mean"].to_dict() == pytest.approx(data.LAMBDA_RANDOM)
    assert trained["layer_pos"].tolist() == [0, 1, 2] and trained.loc["2", "depth"] == pytest.approx(1.0)
    assert results.quanta_caveat(digits) is None
    lfw = summary[summary["dataset"] == "lfw_faces"]
    assert "random-source control" in results.quanta_caveat(lfw)


def test_quanta_matrix_layers_by_target(populated):
    df = results.load_view(populated[0], "quanta")
    summary = results.quanta_summary(results.quanta_values(df))
    matrix = results.quanta_matrix(summary)
    assert list(matrix.index) == ["0", "1", "2"] and list(matrix.columns) == ["digits:5-9", "lfw_faces"]
    assert matrix.loc["2", "lfw_faces"] == pytest.approx(0.50)


def test_quanta_accuracy_and_freezing_depth(populated):
    df = results.load_view(populated[0], "quanta")
    acc = results.quanta_accuracy(df)
    control = acc[acc["source_kind"] == results.RANDOM_SOURCE].iloc[0]
    assert control["target_accuracy"] == pytest.approx(0.88) and control["source_accuracy"] == pytest.approx(0.10)
    assert set(acc["layer_to_transfer"]) == {"all"}
    depth = results.freezing_depth_accuracy(df, "quanta_cnn", "digits:5-9")
    assert depth["configuration"].tolist() == ["0", "1", "2", "3"]
    assert depth["frozen_fraction"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert depth["mean"].tolist() == pytest.approx(list(data.FT_DEPTH_ACC.values()))
    assert results.freezing_depth_accuracy(df, "quanta_cnn", "lfw_faces").empty


def test_lambda_over_steps_from_the_histories_of_a_few_runs(populated):
    uri, ids = populated
    df = results.load_view(uri, "quanta")
    hist = results.metric_histories(uri, ids["trained"] + ids["random"], prefixes=(results.QUANTA_PREFIX,))
    assert set(hist["key"]) == {"quanta_source/0", "quanta_source/1", "quanta_source/2"}
    steps = results.lambda_steps(hist, df)
    trained0 = steps[(steps["source_kind"] == results.TRAINED_SOURCE) & (steps["layer"] == "0")]
    assert trained0["step"].tolist() == [0, 1, 2, 3, 4]
    assert trained0["mean"].iloc[0] == pytest.approx(0.9) and trained0["mean"].iloc[-1] == pytest.approx(0.94)
    assert trained0["n"].iloc[0] == 2


def test_layer_order_follows_the_network_not_the_alphabet():
    assert results.layer_order(["blocks.10", "blocks.2", "stem", "blocks.1"]) == \
        ["blocks.1", "blocks.2", "blocks.10", "stem"]
    assert results.layer_order(["6", "10", "-1", "0"]) == ["-1", "0", "6", "10"]
    assert results.layer_order(["b", "a", "c"], hint=["c", "a"]) == ["c", "a", "b"]


# -- reading the store -----------------------------------------------------------------------------


def test_sqlite_reader_and_mlflow_client_agree(populated):
    uri, _ = populated
    names = list(results.EXPERIMENTS.values())
    for view, columns in results.VIEWS.items():
        fast = results._tidy(results._read_sqlite(results.sqlite_path(uri), columns, names, False), columns)
        slow = results._tidy(results._read_client(uri, columns, names, False), columns)
        fast = fast.sort_values("run_id").reset_index(drop=True)
        slow = slow.sort_values("run_id").reset_index(drop=True)[list(fast.columns)]
        pd.testing.assert_frame_equal(fast, slow, check_dtype=False, obj=view)


def test_loaded_frame_is_typed_and_has_every_requested_column(tradeoffs):
    assert len(tradeoffs) == 24  # 3 sweeps of FE/FT (parents + children) and 5 more runs; no QUANTA
    assert set(tradeoffs["method"]) == {"fe", "ft"}
    for col in (*results.TRADEOFF_COLUMNS.params, *results.TRADEOFF_COLUMNS.metrics, "error", "parent_run_id"):
        assert col in tradeoffs
    # FE runs never logged val_accuracy: the column exists, empty. FT runs logged it per epoch (last: 0.7), but
    # the model they kept is the best epoch's: its score is best_val_accuracy.
    assert tradeoffs.loc[tradeoffs["method"] == "fe", "val_accuracy"].isna().all()
    ft = tradeoffs["method"] == "ft"
    ft_children = tradeoffs[ft & tradeoffs["sweep_id"].notna() & ~tradeoffs["is_sweep_parent"]]
    assert ft_children["val_accuracy"].tolist() == pytest.approx([0.75] * len(ft_children))
    assert tradeoffs["start_time"].dt.tz is not None
    failed = tradeoffs[tradeoffs["status"] == "FAILED"].iloc[0]
    assert "CUDA out of memory" in failed["error"] and math.isnan(failed["test_accuracy"])
    parents = tradeoffs[tradeoffs["is_sweep_parent"]]
    assert len(parents) == 3 and parents["parent_run_id"].isna().all()
    children = tradeoffs[tradeoffs["sweep_id"] == "sweep-fe"]
    assert children["parent_run_id"].dropna().nunique() == 1
    estimated = tradeoffs.set_index("run_name").loc["counters run", "energy_estimated"]
    assert not estimated and tradeoffs["energy_estimated"].sum() == len(tradeoffs) - 1


def test_a_missing_or_empty_store_gives_an_empty_frame_and_creates_nothing(tmp_path, store_dir):
    missing = resolve_tracking_uri(str(tmp_path / "nothing" / "mlflow.db"))
    (tmp_path / "nothing").rmdir() if (tmp_path / "nothing").exists() else None
    df = results.load_view(missing, "tradeoffs")
    assert df.empty and "test_accuracy" in df and "variant" in df
    assert not results.sqlite_path(missing).exists()
    empty = results.load_view(resolve_tracking_uri(str(store_dir)), "runs")
    assert empty.empty and "error" in empty
    assert results.learning_curves(empty).empty and results.crossovers(results.learning_curves(empty)).empty
    assert results.cost_ratio(empty).empty and results.quanta_values(empty).empty


def test_archive_is_a_soft_delete_and_restores(populated_copy):
    uri, ids = populated_copy
    target = ids["random"][0]
    assert results.archive_runs(uri, [target]) == 1
    assert target not in set(results.load_view(uri, "quanta")["run_id"])
    assert set(results.load_view(uri, "quanta", archived=True)["run_id"]) == {target}
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(target).info.lifecycle_stage == "deleted"  # still there
    results.restore_runs(uri, [target])
    assert target in set(results.load_view(uri, "quanta")["run_id"])


def test_filters(tradeoffs):
    f = results.RunFilter(classifiers=["svc"])  # applies to FE runs only: FT runs stay
    kept = results.filter_runs(tradeoffs, f)
    assert set(kept["method"]) == {"ft"}
    kept = results.filter_runs(tradeoffs, results.RunFilter(configurations=["3"], methods=["ft"]))
    assert set(kept["variant"]) == {"FT config 3"} and not kept["is_sweep_parent"].any()
    assert len(results.filter_runs(tradeoffs, results.RunFilter(include_sweep_parents=True))) == len(tradeoffs)
    assert results.filter_runs(tradeoffs, results.RunFilter(end=date(2000, 1, 1))).empty
    assert results.options(tradeoffs, "configuration") == ["0", "1", "2", "3"]


def test_run_details_params_diff_and_error_traceback(populated, tradeoffs):
    uri, _ = populated
    failed_id = tradeoffs.loc[tradeoffs["status"] == "FAILED", "run_id"].iloc[0]
    ok_id = tradeoffs.loc[(tradeoffs["run_name"] == "spc=5 split=1") & (tradeoffs["method"] == "fe"), "run_id"].iloc[0]
    details = results.run_details(uri, [failed_id, ok_id, "no-such-run"])
    assert [d.run_id for d in details] == [failed_id, ok_id]
    assert "CUDA out of memory" in details[0].error_traceback()
    diff = results.params_diff(details)
    assert list(diff.index) == ["split"] and diff.iloc[0].tolist() == ["2", "1"]
    assert "dataset" in results.params_diff(details, only_different=False).index
    metrics = results.metrics_side_by_side(details)
    assert metrics.loc["test_accuracy"].tolist()[1] == pytest.approx(0.72)
    assert math.isnan(metrics.loc["test_accuracy"].tolist()[0])


def test_metric_histories_in_step_order(populated, tradeoffs):
    uri, _ = populated
    ft_id = tradeoffs.loc[(tradeoffs["variant"] == "FT config 0") & (tradeoffs["spc"] == 10), "run_id"].iloc[0]
    hist = results.metric_histories(uri, [ft_id], keys=["train_loss", "val_accuracy"])
    loss = hist[hist["key"] == "train_loss"]
    assert loss["step"].tolist() == [0, 1, 2] and loss["value"].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert results.metric_histories(uri, [], keys=["x"]).empty


def test_long_histories_are_thinned_to_aligned_steps_with_the_last_kept(tracker):
    from mlflow.entities import Metric

    ids = []
    for n_steps in (5000, 3001):
        run = tracker.start_run("quanta", {"dataset": "digits", "backbone": "quanta_cnn"})
        metrics = [Metric("quanta_source/0", 0.9 - i * 1e-5, 0, i) for i in range(n_steps)]
        for i in range(0, len(metrics), 1000):
            tracker.client.log_batch(run.run_id, metrics=metrics[i:i + 1000])
        run.finish()
        ids.append(run.run_id)
    full = results.metric_histories(tracker.uri, ids, prefixes=(results.QUANTA_PREFIX,), max_points=None)
    assert len(full) == 8001
    thin = results.metric_histories(tracker.uri, ids, prefixes=(results.QUANTA_PREFIX,), max_points=100)
    stride = 50  # ceil(5000 / 100), the same for both runs so their steps line up
    for rid, n_steps in zip(ids, (5000, 3001), strict=True):
        steps = thin.loc[thin["run_id"] == rid, "step"].tolist()
        assert steps == [*range(0, n_steps, stride), n_steps - 1] or steps == list(range(0, n_steps, stride))
        assert steps[-1] == n_steps - 1  # the final value is always there
    # The MlflowClient path (tracking servers) thins the same way.
    assert results._thin(full, 100).sort_values(["run_id", "step"])["step"].tolist() == \
        thin.sort_values(["run_id", "step"])["step"].tolist()


def test_an_unreachable_tracking_server_is_one_clear_error(monkeypatch):
    from tlcore.errors import TLError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow retries for minutes by default
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(TLError, match="Could not read runs from http://127.0.0.1:9"):
        results.load_view("http://127.0.0.1:9", "tradeoffs")


def test_display_table_shows_percent_and_the_energy_method(tradeoffs):
    table = results.display_table(tradeoffs.head(3), ["test_accuracy"], ["energy_kwh"])
    assert table["Test accuracy (%)"].tolist() == pytest.approx((tradeoffs.head(3)["test_accuracy"] * 100).tolist())
    assert "energy method" in table and table.columns[-1] == "run_id"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_mlflow_ui_probe_and_run_links():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert results.mlflow_ui_running(url)
    finally:
        server.shutdown()
        server.server_close()
    assert not results.mlflow_ui_running(url)  # nothing listens any more
    assert results.mlflow_run_url(url + "/", "3", "abc") == f"{url}/#/experiments/3/runs/abc"


# -- uncertainty: intervals, paired differences, crossovers -----------------------------------------


def _points(rows):
    """FE/FT points: (method, variant, spc, split, accuracy[, weak])."""
    recs = []
    for r in rows:
        method, variant, spc, split, acc = r[:5]
        recs.append({"dataset": "d", "backbone": "b", "method": method, "variant": variant, "status": "FINISHED",
                     "is_sweep_parent": False, "spc": float(spc), "split_index": float(split), "test_accuracy": acc,
                     "weak": r[5] if len(r) > 5 else False, "quality": "capped" if len(r) > 5 and r[5] else
                     "converged"})
    return pd.DataFrame(recs)


def test_learning_curves_carry_a_95_percent_interval_and_weak_points():
    df = _points([("fe", "FE x", 5, 0, 0.80), ("fe", "FE x", 5, 1, 0.85), ("fe", "FE x", 5, 2, 0.90),
                  ("ft", "FT config 0", 5, 0, 0.30, True), ("ft", "FT config 0", 5, 1, 0.32)])
    curves = results.learning_curves(df).set_index("variant")
    # mean .85, sd .05, n 3: half-width t(.975, 2) * .05 / sqrt(3) = 0.124207
    assert curves.loc["FE x", "ci_low"] == pytest.approx(0.85 - 0.124207, abs=1e-5)
    assert curves.loc["FE x", "ci_high"] == pytest.approx(0.85 + 0.124207, abs=1e-5)
    assert not curves.loc["FE x", "weak"]
    assert curves.loc["FT config 0", "weak"] and curves.loc["FT config 0", "n_weak"] == 1
    assert curves.loc["FT config 0", "weak_reason"] == "1 capped (still improving)"


def test_paired_difference_of_ft_and_fe_on_the_same_draws():
    df = _points([("fe", "FE x", 5, k, a) for k, a in enumerate((0.70, 0.72, 0.74))]
                 + [("ft", "FT config 0", 5, k, a) for k, a in enumerate((0.60, 0.63, 0.66))])
    row = results.paired_differences(df).iloc[0]
    # differences -.10 -.09 -.08: mean -.09, sd .01, half-width 4.302653 * .01 / sqrt(3) = .024841
    assert row["diff"] == pytest.approx(-0.09) and row["n_pairs"] == 3
    assert row["ci_high"] == pytest.approx(-0.09 + 0.024841, abs=1e-5)
    assert row["verdict"] == "fe_higher"
    # unpaired, the same numbers would overlap: FE .72 +- .05, FT .63 +- .075; pairing removes the draw effect


def test_pairs_with_a_weak_run_are_left_out_and_counted():
    df = _points([("fe", "FE x", 5, 0, 0.70), ("fe", "FE x", 5, 1, 0.72), ("fe", "FE x", 5, 2, 0.74),
                  ("ft", "FT config 0", 5, 0, 0.10, True), ("ft", "FT config 0", 5, 1, 0.80),
                  ("ft", "FT config 0", 5, 2, 0.82)])
    row = results.paired_differences(df).iloc[0]
    assert row["n_weak"] == 1 and row["n_pairs"] == 2 and row["diff"] == pytest.approx(0.08)  # .80-.72, .82-.74


def test_crossover_is_resolved_only_between_significant_points():
    fe = {2: (0.60, 0.61, 0.62), 5: (0.70, 0.71, 0.72), 10: (0.80, 0.81, 0.82)}
    ft = {2: (0.40, 0.42, 0.41), 5: (0.60, 0.80, 0.75), 10: (0.90, 0.92, 0.91)}
    rows = [("fe", "FE x", spc, k, a) for spc, accs in fe.items() for k, a in enumerate(accs)]
    rows += [("ft", "FT config 0", spc, k, a) for spc, accs in ft.items() for k, a in enumerate(accs)]
    paired = results.paired_differences(_points(rows)).set_index("spc")
    assert paired["verdict"].to_dict() == {2.0: "fe_higher", 5.0: "not_resolved", 10.0: "ft_higher"}
    cross = results.crossover_intervals(paired.reset_index()).iloc[0]
    assert cross["resolved"] and (cross["spc_low"], cross["spc_high"]) == (2.0, 10.0)
    assert 2.0 < cross["spc"] < 10.0 and "between 2 and 10" in cross["note"]
    # without the FT-better point the crossover is not resolved by these runs
    unresolved = results.crossover_intervals(paired[paired.index < 10].reset_index()).iloc[0]
    assert not unresolved["resolved"] and "never clearly higher" in unresolved["note"]


def test_runs_logged_without_a_verdict_are_judged_when_read(populated_copy):
    from tlcore.tracking import Tracker

    uri, _ = populated_copy
    tracker = Tracker(uri)
    params = {"method": "ft", "dataset": "digits", "backbone": "efficientnet_lite0", "samples_per_class": 5,
              "split": 0, "num_classes": 10, "epochs": 4, "patience": 3, "configuration": 0}
    with tracker.start_run("ft", params, run_name="old capped run") as run:
        for epoch, loss in enumerate((2.0, 1.5, 1.2, 1.0), start=1):  # still falling at the cap of 4 epochs
            run.log_metrics({"val_loss": loss}, step=epoch)
        run.log_metrics({"test_accuracy": 0.6, "n_eval_images": 300, "epochs_run": 4, "stopped_early": 0.0})
    assert tracker.get_run(run.run_id).data.tags["quality"] == "capped"  # tagged when it finished
    for tag in ("quality", "quality_reason"):  # as a store written before verdicts existed
        tracker.client.delete_tag(run.run_id, tag)
    df = results.load_view(uri, "tradeoffs").set_index("run_id")
    assert df.loc[run.run_id, "quality"] == "capped" and df.loc[run.run_id, "weak"]
    assert "still falling" in df.loc[run.run_id, "quality_reason"]


def test_the_store_marker_changes_with_every_write_and_only_then(tracker):
    """Pages cache a local store's runs under this marker: any committed write must change it (a tag
    rewritten in place, same file size included), and reading must not."""
    with tracker.start_run("fe", {"dataset": "x"}) as run:
        run.log_metrics({"test_accuracy": 0.5})
    first = results.store_marker(tracker.uri)
    results.load_view(tracker.uri, "tradeoffs")
    assert results.store_marker(tracker.uri) == first
    run.set_tags({"note": "a"})
    second = results.store_marker(tracker.uri)
    assert second != first
    run.set_tags({"note": "b"})  # same length: only sqlite's change counter may move
    assert results.store_marker(tracker.uri) != second
    assert results.store_marker("http://127.0.0.1:5000") is None
