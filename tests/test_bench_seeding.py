"""The 50,000-run benchmark seeds its store in bulk SQL (``bench/tradeoffs_load.py``): what the pages read
from that store must be what the slow, honest path (``Tracker``, one MLflow call at a time) writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from tlcore import results
from tlcore.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("tradeoffs_load", ROOT / "bench" / "tradeoffs_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _comparable(df: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """The page's frame without ids and times; the parent link kept as the parent's run name."""
    names = dict(zip(df["run_id"], df["run_name"], strict=True))
    out = df.assign(parent=df["parent_run_id"].map(names))
    out = out.drop(columns=["run_id", "parent_run_id", "experiment_id", "start_time", "end_time", "duration_s"])
    return out.sort_values(["sweep_id", "run_name"]).reset_index(drop=True)


def test_fast_seeder_writes_what_the_tracker_writes(tmp_path):
    bench = _bench()
    n = 30  # one sweep (a parent and 26 runs) and the start of a second
    bench.seed_store_slow(tmp_path / "slow", n)
    bench.seed_store_fast(tmp_path / "fast", n)
    frames = {}
    for kind in ("slow", "fast"):
        uri = Tracker(str(tmp_path / kind)).uri
        df = results.load_view(uri, "tradeoffs")
        via_client = results._tidy(results._read_client(uri, results.TRADEOFF_COLUMNS,
                                                         ["Feature extraction", "Fine-tuning"], False),
                                   results.TRADEOFF_COLUMNS)
        assert len(df) == len(via_client) == n
        frames[kind] = _comparable(df, df["run_id"])
        # everything MLflow holds about a run, read back through MLflow itself
        client = Tracker(str(tmp_path / kind)).client
        child = df[df["run_name"] == "spc=2 split=3 (synthetic)"].iloc[0]
        run = client.get_run(child["run_id"])
        frames[kind + "_run"] = (run.info.status, run.info.run_name, run.info.lifecycle_stage,
                                 dict(run.data.params), dict(run.data.metrics),
                                 {k: v for k, v in run.data.tags.items()
                                  if k not in ("tlcore.pid", "tlcore.process_start", "tlcore.heartbeat",
                                               "mlflow.parentRunId")},
                                 client.get_run(run.data.tags["mlflow.parentRunId"]).info.run_name,
                                 [(m.key, m.value, m.step) for m in client.get_metric_history(run.info.run_id,
                                                                                               "test_accuracy")])
        assert run.info.artifact_uri.endswith(f"/{run.info.run_id}/artifacts")
    pd.testing.assert_frame_equal(frames["slow"], frames["fast"])
    assert frames["slow_run"] == frames["fast_run"]
    assert set(frames["fast"]["quality"]) == {"converged"} and frames["fast"]["is_sweep_parent"].sum() == 2
