"""TEST DATA: a small MLflow store of schema-shaped runs, written through ``tlcore.tracking.Tracker``.

The values are made up for the analysis tests (chosen so the expected means, crossings and
fronts can be worked out by hand); no model was trained to produce them.

What it holds (digits / efficientnet_lite0 unless said):
- FE linearsvc sweep (a parent and its children): spc 1 splits 0-2 = .50 .54 .52; spc 5 splits 0,1
  = .70 .72 and split 2 FAILED (no accuracy); spc 10 split 0 = .80.
- FT config 0: spc 1 = .30 .34; spc 5 = .68 .70 .72; spc 10 = .90 -> crosses FE between 5 and 10.
- FT config 3: spc 1 = .20; spc 5 = .40; spc 10 = .50 -> never crosses FE.
- QUANTA on quanta_cnn, source digits:0-4: target digits:5-9 with a trained source (2 runs,
  layers 0-2) and a random source (1 run); target lfw_faces with a trained source (1 run).
- FT on quanta_cnn / digits:5-9, configurations 0-3 (freezing depth beside lambda_S).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ESTIMATE = "estimate: cpu_load_tdp+ram_estimate"
COUNTERS = "counters: nvml"

FE_ACC = {(1, 0): 0.50, (1, 1): 0.54, (1, 2): 0.52, (5, 0): 0.70, (5, 1): 0.72, (10, 0): 0.80}
FT0_ACC = {(1, 0): 0.30, (1, 1): 0.34, (5, 0): 0.68, (5, 1): 0.70, (5, 2): 0.72, (10, 0): 0.90}
FT3_ACC = {(1, 0): 0.20, (5, 0): 0.40, (10, 0): 0.50}
LAMBDA_TRAINED = [{"0": 0.95, "1": 0.90, "2": 0.60}, {"0": 0.93, "1": 0.88, "2": 0.62}]
LAMBDA_RANDOM = {"0": 0.70, "1": 0.85, "2": 0.90}
LAMBDA_LFW = {"0": 0.91, "1": 0.80, "2": 0.50}
FT_DEPTH_ACC = {0: 0.60, 1: 0.66, 2: 0.64, 3: 0.55}


def _common(method: str, dataset: str, backbone: str, spc, split, energy_method: str = ESTIMATE) -> dict:
    return {"method": method, "dataset": dataset, "backbone": backbone, "weights": "default",
            "samples_per_class": spc, "split": split, "seed": 0, "device": "cpu", "model_selection": False,
            "use_crops": False, "energy_method": energy_method}


def _costs(time_s: float, flops: float, energy: float) -> dict:
    return {"time_total_s": time_s, "device_hours": time_s / 3600, "flops_total": flops,
            "energy_kwh": energy, "co2_kg": energy * 0.05, "images_processed": 100.0}


def _sweep(tracker, method: str, acc: dict, extra: dict, costs, sweep_id: str, fail: tuple | None = None) -> None:
    parent = tracker.start_run(method, {**_common(method, "digits", "efficientnet_lite0", "sweep", "sweep"), **extra},
                               tags={"sweep_id": sweep_id, "sweep_parent": "true"}, run_name="digits sweep")
    points = sorted(set(acc) | ({fail} if fail else set()))
    for spc, split in points:
        run = tracker.start_run(method, {**_common(method, "digits", "efficientnet_lite0", spc, split), **extra},
                                tags={"sweep_id": sweep_id}, parent_run_id=parent.run_id,
                                run_name=f"spc={spc} split={split}")
        if (spc, split) == fail:
            run.fail(RuntimeError("CUDA out of memory (test data)"))
            continue
        with run:
            run.log_metrics({"test_accuracy": acc[(spc, split)], "test_plain_accuracy": acc[(spc, split)],
                             **costs(spc)})
            if method == "ft":
                for epoch in range(3):  # val accuracy peaks at epoch 1, as the method's best-val restore sees it
                    run.log_metrics({"train_loss": 1.0 / (epoch + 1), "val_accuracy": (0.5, 0.75, 0.7)[epoch],
                                     "val_loss": (0.9, 0.6, 0.7)[epoch], "epoch_time_s": 1.0}, step=epoch)
                # early stopping ended it (so its verdict is "converged")
                run.log_metrics({"best_val_accuracy": 0.75, "best_epoch": 1, "stopped_early": 1.0, "epochs_run": 3})
    parent.finish()


def _quanta(tracker, dataset: str, source_weights: str, lambdas: dict, target_acc: float, source_acc: float,
            steps: int = 5) -> str:
    params = {**_common("quanta", dataset, "quanta_cnn", 20, 0), "source_task": "digits:0-4",
              "source_weights": source_weights, "layer_to_transfer": -1, "quanta_layers": "0,1,2"}
    with tracker.start_run("quanta", params, run_name=f"{dataset} from {source_weights}") as run:
        for step in range(steps):
            t = step / (steps - 1)
            run.log_metrics({f"quanta_source/{layer}": 0.9 + (final - 0.9) * t for layer, final in lambdas.items()},
                            step=step)
        run.log_metrics({"test_accuracy": target_acc, "source_test_accuracy": source_acc, **_costs(30, 1e12, 2e-4)})
    return run.run_id


def populate(folder: str | Path) -> dict:
    """Write the test runs into the store at ``folder``; returns ids of interest."""
    from tlcore.tracking import Tracker

    tracker = Tracker(str(folder))
    _sweep(tracker, "fe", FE_ACC, {"classifier": "linearsvc"},
           lambda spc: _costs(2.0 + spc * 0.1, 1e9 * spc, 1e-5 * spc), "sweep-fe", fail=(5, 2))
    _sweep(tracker, "ft", FT0_ACC, {"configuration": 0, "optimizer": "sgd", "learning_rate": 0.01},
           lambda spc: _costs(20.0 * spc, 3e10 * spc, 1e-4 * spc), "sweep-ft0")
    _sweep(tracker, "ft", FT3_ACC, {"configuration": 3, "optimizer": "sgd", "learning_rate": 0.01},
           lambda spc: _costs(8.0 * spc, 1e10 * spc, 4e-5 * spc), "sweep-ft3")
    # One FE run whose energy was read from counters (drawn solid on the energy axis).
    with tracker.start_run("fe", {**_common("fe", "digits", "efficientnet_lite0", 10, 0, COUNTERS),
                                  "classifier": "linearsvc"}, run_name="counters run") as run:
        run.log_metrics({"test_accuracy": 0.80, **_costs(2.5, 1e10, 1e-4)})
    ids = {"trained": [_quanta(tracker, "digits:5-9", "default", lam, 0.91 + 0.01 * i, 0.97)
                       for i, lam in enumerate(LAMBDA_TRAINED)],
           "random": [_quanta(tracker, "digits:5-9", "random", LAMBDA_RANDOM, 0.88, 0.10)],
           "lfw": [_quanta(tracker, "lfw_faces", "default", LAMBDA_LFW, 0.75, 0.97)]}
    for conf, acc in FT_DEPTH_ACC.items():
        params = {**_common("ft", "digits:5-9", "quanta_cnn", 20, 0), "configuration": conf, "optimizer": "adam",
                  "learning_rate": 2e-4}
        with tracker.start_run("ft", params, run_name=f"depth config {conf}") as run:
            run.log_metrics({"test_accuracy": acc, **_costs(10.0, 1e11, 1e-4)})
    return ids


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory) -> tuple[Path, dict]:
    """The folder of a store holding these runs (read-only: copy it to modify), and the ids
    :func:`populate` returned. Written once per session: a fixture imported into several test
    modules is one fixture per module, so the store itself is kept under the session's base folder."""
    import json

    folder = tmp_path_factory.getbasetemp() / "analysis-store"
    done = folder / "ids.json"
    if not done.exists():
        ids = populate(folder)
        done.write_text(json.dumps(ids))
    return folder, json.loads(done.read_text())
