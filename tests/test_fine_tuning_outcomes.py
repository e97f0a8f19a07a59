"""Fine-tuning outcomes a user reads off a run: its score is the balanced accuracy, a resumed run's cost
adds up every session (counted by hand), a crashed run resumes, and a diverging loss fails the run with
a hint. (That it learns, far above chance: test_fine_tuning.py's CLI and crops runs.)

Runs use digits:0-2 at 32 px with 2 images per class (6 training images: one step per epoch), 30 val
and 161 test images, energy off: a few seconds each.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_fine_tuning import RecordingReporter, history, runs_in, tiny_spec
from tlcore import experiments
from tlcore.errors import TLError
from tlcore.measure import meter as meter_module
from tlcore.methods import common
from tlcore.methods import fine_tuning as ft
from tlcore.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
TRAIN, VAL, TEST = 6, 30, 161  # digits:0-2: 2 per class; 10 per class; round(30 %) of 178, 182, 177


def _flops_per_image(configuration: int = 0):
    from tlcore.models import create_backbone

    model = ft.build_model(create_backbone("efficientnet_lite0"), 3, configuration, "running", torch.device("cpu"))
    return ft.flops_per_image(model, 32, train=True)


# ---------------------------------------------------------------------------------------------
# Scores


def test_scores_are_the_mean_per_class_recall_beside_plain_accuracy():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 0, 0, 1, 0, 2])
    m = common.score_metrics("test", y_true, y_pred)
    assert m == {"test_accuracy": pytest.approx((1 + 0.5 + 0.5) / 3), "test_plain_accuracy": 0.75}


def test_votes_without_scores_go_to_the_smallest_tied_label_and_scores_never_outvote_a_majority():
    assert common.vote(np.array([[2, 2, 0], [1, 3, 3], [4, 1, 1], [3, 0, 0]])).tolist() == [2, 3, 1, 0]
    assert common.vote(np.array([[3, 1], [2, 4]])).tolist() == [1, 2]  # one vote each: the smaller label
    # class 0 has two votes, class 1 one; class 1's scores are far higher (and all scores far from 0)
    scores = np.array([[[1000.0, 1001.0], [1000.0, 1001.0], [1000.0, 1001.0]]])
    assert common.vote(np.array([[0, 0, 1]]), scores).tolist() == [0]
    # a tie is settled by the summed scores
    assert common.vote(np.array([[0, 1]]), np.array([[[0.1, 0.9], [0.4, 0.6]]])).tolist() == [1]
    # scores name every class, also those no crop voted for
    assert common.vote(np.array([[0, 1]]), np.array([[[0.1, 0.9, 0.0], [0.4, 0.6, 0.0]]])).tolist() == [1]


def test_a_fine_tuning_evaluation_is_scored_balanced_on_an_imbalanced_set():
    class FirstPixel(torch.nn.Module):  # logits: one-hot of each image's first pixel value
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()

    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 2, 0])  # class 0: 6/6, class 1: 1/2, class 2: 1/2
    x = pred.view(10, 1, 1, 1).expand(10, 3, 2, 2).to(torch.uint8)
    ev = ft.evaluate(FirstPixel(), [(x, y)], lambda t: t.float(), torch.device("cpu"))
    m = ev.metrics("val")
    assert m["val_accuracy"] == pytest.approx(2 / 3) and m["val_plain_accuracy"] == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------
# Failures and resumes


class Clock:
    """``time.perf_counter`` as the cost meter sees it, plus a jump the test controls."""

    def __init__(self) -> None:
        self.offset = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.mark.slow
@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_a_run_that_failed_resumes_and_its_cost_adds_up_every_session(store_dir, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(meter_module, "time", clock)
    real, steps = ft.clip_gradients_, []

    def crash_in_epoch_2(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:  # one step per epoch: the second step is epoch 2
            clock.offset += 1000.0  # the failed session took 1000 s more than it really did
            raise RuntimeError("a bug in epoch 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(ft.loop, "clip_gradients_", crash_in_epoch_2)
    spec = tiny_spec(store_dir, epochs=3)
    with pytest.raises(RuntimeError, match="a bug in epoch 2"):
        experiments.run(spec)
    tracker = Tracker(str(store_dir))
    (failed,) = runs_in(tracker)
    assert failed.info.status == "FAILED"
    first = failed.data.metrics
    assert first["images_processed"] == TRAIN + VAL and first["time_total_s"] > 1000  # epoch 1 only

    monkeypatch.setattr(ft.loop, "clip_gradients_", real)
    result = experiments.run(spec.with_params(resume=failed.info.run_id), RecordingReporter())
    run = tracker.get_run(failed.info.run_id)
    m = run.data.metrics
    assert result.run_ids == [failed.info.run_id] and run.info.status == "FINISHED"
    assert [s for s, _ in history(tracker, run.info.run_id, "val_loss")] == [1, 2, 3]
    assert run.data.tags["sessions"] == "2" and run.data.tags["energy_complete"] == "true"  # it closed its session
    # every session's cost: epoch 1 before the crash, epochs 2-3 and the test pass after it
    assert m["images_processed"] == 3 * (TRAIN + VAL) + TEST
    f = _flops_per_image()
    assert m["flops_total"] == pytest.approx(3 * TRAIN * f.train_step + (3 * VAL + TEST) * f.forward)
    assert m["time_total_s"] > first["time_total_s"] > 1000
    assert m["time_total_s"] >= first["time_total_s"] + m["time_test_s"]


DIES_AFTER_EPOCH_2 = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tlcore import experiments
from tlcore.reporting import Reporter
from tests.test_fine_tuning import tiny_spec

class DieAfterEpoch2(Reporter):
    def log_metrics(self, metrics, step=None, series=""):
        if step == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no handler, no clean-up, nothing closes

experiments.run(tiny_spec({store!r}, epochs=3), DieAfterEpoch2())
"""


@pytest.mark.slow
@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_a_crashed_run_marked_failed_resumes_and_says_its_energy_is_incomplete(store_dir):
    proc = subprocess.run([sys.executable, "-c", DIES_AFTER_EPOCH_2.format(root=str(ROOT), store=str(store_dir))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    tracker = Tracker(str(store_dir))
    (left,) = runs_in(tracker)
    assert left.info.status == "RUNNING"  # what the dead process left
    assert tracker.fail_orphaned_runs() == [left.info.run_id]  # what a restarted server does
    assert tracker.get_run(left.info.run_id).info.status == "FAILED"

    reporter = RecordingReporter()
    experiments.run(tiny_spec(store_dir, epochs=3, resume=left.info.run_id), reporter)
    run = tracker.get_run(left.info.run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert any("Resuming spc=2 split=0 after epoch 1" in text for _, text in reporter.messages)
    # the dead session's epoch 1 (its last checkpoint) still counts; its energy never could
    assert run.data.tags["sessions"] == "2" and run.data.tags["energy_complete"] == "false"
    assert run.data.metrics["images_processed"] == 3 * (TRAIN + VAL) + TEST


@pytest.mark.slow
def test_a_diverging_loss_fails_the_run_with_a_lower_learning_rate_hint(store_dir):
    with pytest.raises(TLError, match=r"Training diverged at epoch 2 of spc=2 split=0 \(the loss is (nan|inf)\); "
                                      r"lower --learning-rate \(now 1e\+30\)"):
        experiments.run(tiny_spec(store_dir, epochs=3, learning_rate=1e30))
    tracker = Tracker(str(store_dir))
    (run,) = runs_in(tracker)
    assert run.info.status == "FAILED" and "lower --learning-rate" in run.data.tags["error"]
    assert [s for s, _ in history(tracker, run.info.run_id, "val_loss")] == [1]  # the diverged epoch is not logged
    assert "test_accuracy" not in run.data.metrics
