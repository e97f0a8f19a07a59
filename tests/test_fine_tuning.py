"""Fine-tuning: the seed's optimiser, clipping and early stop; freezing through real runs; best-weights
restore; resumable runs; crop voting; bad inputs; the CLI read back from MLflow.

Runs use digits:0-2 at 32 px with 2 images per class, energy off: a few seconds each.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tlcore import experiments
from tlcore.errors import BackboneError, Cancelled, SpecError, TLError
from tlcore.methods import fine_tuning as ft
from tlcore.models import Backbone, create_backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FineTuningParams
from tlcore.tracking import Tracker


def tiny_spec(store, backbone: str = "efficientnet_lite0", weights: str = "default", spc=(2,), splits=1,
              **params) -> ExperimentSpec:
    return ExperimentSpec("ft", "digits:0-2", backbone=backbone, weights=weights, samples_per_class=spc, splits=splits,
                          resolution=32, mlflow_path=str(store), measure_energy=False, num_workers=0,
                          params=FineTuningParams(**{"epochs": 2, **params}))


class RecordingReporter(Reporter):
    """Keeps what a watcher (the app) would see; cancels once epoch ``cancel_after`` of run ``cancel_run`` is logged."""

    def __init__(self, cancel_after: int | None = None, cancel_run: int = 1) -> None:
        self.cancel_after, self.cancel_run = cancel_after, cancel_run
        self.epochs: list[tuple[str, int, dict]] = []
        self.fractions: list[float] = []
        self.messages: list[tuple[str, str]] = []
        self.runs: list[str] = []
        self._cancel = False

    def update(self, *, stage=None, fraction=None):
        if fraction is not None:
            self.fractions.append(fraction)

    def log_metrics(self, metrics, step=None, series=""):
        self.epochs.append((series, step, dict(metrics)))
        runs_seen = len({s for s, _, _ in self.epochs})
        if self.cancel_after is not None and step == self.cancel_after and runs_seen == self.cancel_run:
            self._cancel = True

    def run_started(self, run_id, experiment, name=None):
        self.runs.append(run_id)

    def message(self, text, level="info"):
        self.messages.append((level, text))

    @property
    def cancel_requested(self) -> bool:
        return self._cancel


def history(tracker: Tracker, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, key))


def runs_in(tracker: Tracker):
    exp = tracker.client.get_experiment_by_name("Fine-tuning")
    return [] if exp is None else tracker.client.search_runs([exp.experiment_id])


# ---------------------------------------------------------------------------------------------
# Optimisation pieces


def test_sgdw_decays_weights_outside_the_gradient_and_the_momentum():
    w0, g, lr, wd, mom = torch.tensor([2.0, -4.0]), torch.tensor([0.5, 0.5]), 0.1, 0.01, 0.9
    p = nn.Parameter(w0.clone())
    opt = ft.SGDW([p], lr=lr, momentum=mom, weight_decay=wd)
    p.grad = g.clone()
    opt.step()
    assert torch.allclose(p.data, w0 * (1 - wd) - lr * g)  # decay of wd * w, not scaled by lr (tf-addons' SGDW)
    # the momentum buffer holds the gradient alone; torch's SGD(weight_decay) would have folded wd * w into it
    assert torch.allclose(opt.state[p]["momentum_buffer"], g)
    w1 = p.data.clone()
    p.grad = torch.zeros(2)
    opt.step()
    assert torch.allclose(p.data, w1 * (1 - wd) - lr * mom * g)
    coupled = nn.Parameter(w0.clone())
    l2 = torch.optim.SGD([coupled], lr=lr, momentum=mom, weight_decay=wd)
    coupled.grad = g.clone()
    l2.step()
    assert not torch.allclose(coupled.data, w0 * (1 - wd) - lr * g)
    # the decay survives a checkpoint round trip
    again = ft.SGDW([nn.Parameter(w0.clone())], lr=lr, momentum=mom, weight_decay=0.5)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["decoupled_weight_decay"] == wd


def test_clipping_is_per_tensor_like_keras_clipnorm_or_global():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.5])
    ft.clip_gradients_([a, b], 1.0, "per_tensor")
    assert torch.allclose(a.grad.norm(), torch.tensor(1.0), atol=1e-5) and torch.allclose(b.grad, torch.tensor([0.5]))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.5])
    ft.clip_gradients_([a, b], 1.0, "global")
    assert torch.allclose(torch.cat([a.grad, b.grad]).norm(), torch.tensor(1.0), atol=1e-5)


def test_early_stop_is_the_seeds_rule():
    flat_from_5 = [5.0, 4.0, 3.0, 2.0] + [1.0] * 20
    stops = [e for e in range(1, len(flat_from_5) + 1) if ft.should_stop_early(flat_from_5[:e])]
    assert stops[0] == 11  # never before the 11th epoch, equal losses count as "not decreased"
    assert not any(ft.should_stop_early(list(np.linspace(10, 1, e))) for e in range(1, 41))  # always improving
    bumpy = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0.9, 1.0, 1.1, 0.8]  # two bad epochs, then a decrease: go on
    assert not ft.should_stop_early(bumpy[:12]) and not ft.should_stop_early(bumpy)
    rising = [*bumpy, 0.9, 1.0, 1.2]
    assert ft.should_stop_early(rising)
    assert not ft.should_stop_early(rising, patience=4)
    assert ft.should_stop_early([1.0] * 4, patience=3, start_epoch=1)
    assert not ft.should_stop_early([1.0] * 3, patience=3, start_epoch=1)  # needs patience + 1 epochs


def test_batches_never_leave_a_single_image_for_batchnorm():
    assert [s.stop - s.start for s in ft.batch_slices(9, 4)] == [4, 5]
    assert [s.stop - s.start for s in ft.batch_slices(8, 4)] == [4, 4]
    assert [s.stop - s.start for s in ft.batch_slices(1, 4)] == [1]


def test_lp_ft_probes_the_head_then_trains_everything():
    p = FineTuningParams(configuration="lp-ft", lp_epochs=2, epochs=4)
    assert [ft.stage_for_epoch(p, e) for e in (1, 2, 3, 4)] == ["head", "head", 0, 0]
    assert ft.stage_for_epoch(FineTuningParams(configuration=3), 1) == 3
    bb = create_backbone("resnet18", "random", num_classes=3)
    frozen = ft.set_trainable(bb, "head")
    assert {n for n, p in bb.named_parameters() if p.requires_grad} == bb.head_parameter_names()
    assert len(frozen) == len(list(bb.parameters())) - 2
    bb.train()
    assert not bb.net.layer4[1].bn2.training and bb.net.fc.training


def test_frozen_layers_build_no_autograd_graph():
    bb = ft.build_model(create_backbone("efficientnet_lite0", "random"), 3, 3, "running", torch.device("cpu"))
    frozen_units = bb.freeze_unit_names()[:bb.frozen_unit_count(3)]
    outputs = {}
    for name in (frozen_units[-1], "_conv_head"):
        bb.net.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: outputs.setdefault(name, out))
    bb.train()
    bb(torch.randn(2, 3, 32, 32)).sum().backward()
    assert outputs[frozen_units[-1]].grad_fn is None and not outputs[frozen_units[-1]].requires_grad
    assert outputs["_conv_head"].grad_fn is not None
    assert all(p.grad is None for n, p in bb.named_parameters() if n in set(bb.frozen_params))


def test_ten_crops_are_voted_per_image():
    class CropValue(nn.Module):  # logits: one-hot of each crop's first pixel value (its class)
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float() * 5

    votes = torch.tensor([[2] * 6 + [1] * 4, [0] * 3 + [1] * 7])  # per image: 6 crops say 2 / 7 crops say 1
    x = votes.view(2, 10, 1, 1, 1).expand(2, 10, 3, 4, 4).to(torch.uint8)
    y = torch.tensor([2, 0])
    ev = ft.evaluate(CropValue(), [(x, y)], lambda t: t.flatten(0, 1).float(), torch.device("cpu"))
    assert ev.y_pred.tolist() == [2, 1] and ev.n_inputs == 20
    assert ev.metrics("test")["test_plain_accuracy"] == 0.5


@pytest.mark.slow
def test_a_crops_run_trains_on_every_crop_and_votes_at_test(store_dir):
    spec = replace(tiny_spec(store_dir, epochs=1), use_crops=True)
    result = experiments.run(spec)
    m = Tracker(str(store_dir)).get_run(result.run_ids[0]).data.metrics
    test_inputs = m["images_processed"] - 6 * 10 - 30 * 10  # 6 training and 30 val images, 10 crops each
    assert test_inputs > 0 and test_inputs % 10 == 0
    assert m["test_accuracy"] > 0.45  # measured 58.8 % after one epoch on 6 images; chance is 33.3 %


# ---------------------------------------------------------------------------------------------
# Freezing and BatchNorm, checked on the weights a real run ends with


def _trained_weights(tracker: Tracker, run_id: str) -> dict[str, torch.Tensor]:
    folder = tracker.get_run(run_id).info.artifact_uri.removeprefix("file://")
    return torch.load(f"{folder}/model/best.pt", map_location="cpu", weights_only=True)


def _changed(before: Backbone, after: dict[str, torch.Tensor]) -> dict[str, bool]:
    own = before.state_dict()
    return {k: not torch.equal(own[k], after[k]) for k in own if not k.startswith(f"net.{before.cfg.head_path}.")
            and own[k].dtype.is_floating_point}


@pytest.mark.parametrize(("backbone", "configuration", "bn_mode"), [
    ("efficientnet_lite0", 0, "running"), ("efficientnet_lite0", 2, "running"), ("resnet18", 1, "frozen_layers"),
    ("resnet18", 3, "frozen_layers"), ("resnet18", 3, "batch")])
@pytest.mark.slow
def test_configurations_train_exactly_the_unfrozen_layers(store_dir, tmp_path, backbone, configuration, bn_mode):
    weights = "default"
    if backbone == "resnet18":  # random weights saved to a file: the run must start from exactly these
        torch.save(create_backbone("resnet18", "random").net.state_dict(), tmp_path / "r18.pt")
        weights = str(tmp_path / "r18.pt")
    spec = tiny_spec(store_dir, backbone, weights, configuration=configuration, bn_statistics=bn_mode,
                     keep_weights=True, epochs=1)
    result = experiments.run(spec)
    tracker = Tracker(str(store_dir))
    start = create_backbone(backbone, weights)
    frozen = set(start.apply_freezing(configuration, bn_trainable=bn_mode == "batch"))  # the seed's: BN trains
    changed = _changed(start, _trained_weights(tracker, result.run_ids[0]))
    for name, did_change in changed.items():
        if "running_" in name:  # BatchNorm statistics: which ones move depends on the mode
            in_frozen_layer = name.rsplit(".", 1)[0] + ".weight" in frozen
            expected = {"running": False, "frozen_layers": not in_frozen_layer, "batch": True}[bn_mode]
            assert did_change == expected, f"{name}: BatchNorm statistics with bn_statistics={bn_mode}"
        elif name in frozen:
            assert not did_change, f"{name} is frozen in configuration {configuration} but changed"
        else:
            assert did_change, f"{name} is trainable in configuration {configuration} but did not change"
    if backbone == "resnet18" and configuration == 1:  # a quarter of 20 convs: conv1 and layer1 are frozen
        assert "net.layer1.1.conv2.weight" in frozen and "net.layer2.0.conv1.weight" not in frozen
    params = tracker.get_run(result.run_ids[0]).data.params
    assert params["configuration"] == str(configuration)
    assert (int(params["trainable_params"]) < int(params["total_params"])) == (configuration != 0)


@pytest.mark.slow
def test_lp_ft_run_probes_then_fine_tunes_everything(store_dir):
    reporter = RecordingReporter()
    result = experiments.run(tiny_spec(store_dir, configuration="lp-ft", lp_epochs=1, epochs=2, keep_weights=True),
                             reporter)
    assert any("linear probe done after epoch 1" in m for _, m in reporter.messages)
    tracker = Tracker(str(store_dir))
    changed = _changed(create_backbone("efficientnet_lite0"), _trained_weights(tracker, result.run_ids[0]))
    assert changed["net._conv_stem.weight"]  # epoch 2 trained the whole network
    assert tracker.get_run(result.run_ids[0]).data.params["lp_epochs"] == "1"
    # the kept weights start a further run (--model FILE): the body loads, the 3-class head is replaced
    folder = tracker.get_run(result.run_ids[0]).info.artifact_uri.removeprefix("file://")
    again = create_backbone("efficientnet_lite0", f"{folder}/model/best.pt")
    kept = _trained_weights(tracker, result.run_ids[0])
    assert torch.equal(again.net._conv_stem.weight, kept["net._conv_stem.weight"])


# ---------------------------------------------------------------------------------------------
# Best weights, resume


@pytest.mark.slow
def test_the_test_pass_uses_the_best_val_epochs_weights(store_dir, monkeypatch):
    real = ft.evaluate
    seen: list[tuple[str, int]] = []  # (which set, a fingerprint of the weights evaluated)
    val_correct = iter([5, 9, 6])  # val accuracy per epoch: 0.5, 0.9, 0.6

    def scripted(model, batches, to_input, device, autocast=None, between_batches=None):
        ev = real(model, batches, to_input, device)
        fingerprint = hash(tuple(float(p.double().sum()) for p in model.parameters()))
        if len(seen) < 3:
            k = next(val_correct)
            seen.append(("val", fingerprint))
            return ft.Evaluation(ev.loss, np.zeros(10, int), np.r_[np.zeros(k, int), np.ones(10 - k, int)],
                                 ev.n_inputs)
        seen.append(("test", fingerprint))
        return ev

    monkeypatch.setattr(ft.loop, "evaluate", scripted)
    result = experiments.run(tiny_spec(store_dir, epochs=3))
    assert [s for s, _ in seen] == ["val", "val", "val", "test"]
    assert seen[3][1] == seen[1][1] != seen[2][1]
    m = Tracker(str(store_dir)).get_run(result.run_ids[0]).data.metrics
    assert (m["best_epoch"], m["best_val_accuracy"]) == (2, 0.9)


@pytest.mark.slow
@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_a_killed_run_resumes_in_the_same_mlflow_run_and_matches_an_uninterrupted_one(store_dir):
    spec = tiny_spec(store_dir, epochs=3)
    with pytest.raises(Cancelled):
        experiments.run(spec, RecordingReporter(cancel_after=2))
    tracker = Tracker(str(store_dir))
    (killed,) = runs_in(tracker)
    assert killed.info.status == "KILLED" and [s for s, _ in history(tracker, killed.info.run_id, "val_loss")] == [1, 2]
    assert "time_total_s" in killed.data.metrics  # the cost of the killed session stays visible

    reporter = RecordingReporter()
    result = experiments.run(spec.with_params(resume=killed.info.run_id), reporter)
    assert result.run_ids == [killed.info.run_id] and len(runs_in(tracker)) == 1
    run = tracker.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert run.data.tags["sessions"] == "2" and run.data.tags["resumed"] == "true"
    resumed_losses = history(tracker, killed.info.run_id, "val_loss")
    assert [s for s, _ in resumed_losses] == [1, 2, 3]
    assert [step for _, step, _ in reporter.epochs] == [1, 2, 3]  # the live chart gets the whole curve back
    assert not (Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoint").exists()  # cleaned up

    reference = experiments.run(tiny_spec(store_dir, epochs=3))  # the same training, never interrupted
    straight = history(tracker, reference.run_ids[0], "val_loss")
    assert np.allclose([v for _, v in resumed_losses], [v for _, v in straight], rtol=1e-5, atol=1e-6)
    # the cost of both sessions: 3 epochs of 6 training + 30 val images, then the 161 test images, as if uninterrupted
    ref, both = tracker.get_run(reference.run_ids[0]).data.metrics, run.data.metrics
    assert both["images_processed"] == ref["images_processed"] == 3 * (6 + 30) + 161
    assert both["flops_total"] == pytest.approx(ref["flops_total"])
    assert both["time_total_s"] > killed.data.metrics["time_total_s"]


def test_checkpoints_are_written_at_most_once_per_interval_and_a_run_killed_before_one_restarts(store_dir,
                                                                                                 monkeypatch):
    saved = []
    real_save = ft.loop.save_checkpoint
    monkeypatch.setattr(ft.loop, "save_checkpoint", lambda folder, *a: saved.append(folder) or real_save(folder, *a))
    experiments.run(tiny_spec(store_dir, epochs=3))  # the default interval (60 s): a tiny training writes none
    assert saved == []
    monkeypatch.setenv("TLCORE_CHECKPOINT_EVERY_S", "0")
    experiments.run(tiny_spec(store_dir, epochs=3))
    assert len(saved) == 3

    monkeypatch.setenv("TLCORE_CHECKPOINT_EVERY_S", "3600")
    with pytest.raises(Cancelled):
        experiments.run(tiny_spec(store_dir, epochs=3), RecordingReporter(cancel_after=2))
    killed = next(r for r in runs_in(Tracker(str(store_dir))) if r.info.status == "KILLED")
    reporter = RecordingReporter()
    experiments.run(tiny_spec(store_dir, epochs=3, resume=killed.info.run_id), reporter)
    assert any("had not written a checkpoint yet" in text and "TLCORE_CHECKPOINT_EVERY_S" in text
               for _, text in reporter.messages)
    run = Tracker(str(store_dir)).get_run(killed.info.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["epochs_run"] == 3
    assert [s for s, _ in history(Tracker(str(store_dir)), run.info.run_id, "val_loss")] == [1, 1, 2, 2, 3]

    monkeypatch.setenv("TLCORE_CHECKPOINT_EVERY_S", "soon")
    with pytest.raises(TLError, match="TLCORE_CHECKPOINT_EVERY_S='soon' is not a number of seconds"):
        experiments.run(tiny_spec(store_dir, epochs=1))


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_unfinished_runs_under_the_same_parent(store_dir):
    spec = tiny_spec(store_dir, splits=2, epochs=2)
    with pytest.raises(Cancelled):
        experiments.run(spec, RecordingReporter(cancel_after=1, cancel_run=2))
    tracker = Tracker(str(store_dir))
    status = {r.data.tags.get("sweep_parent", r.data.params.get("split")): r for r in runs_in(tracker)}
    assert {k: r.info.status for k, r in status.items()} == {"true": "KILLED", "0": "FINISHED", "1": "KILLED"}

    result = experiments.run(spec.with_params(resume=status["true"].info.run_id))
    after = {r.info.run_id: r.info.status for r in runs_in(tracker)}
    assert len(after) == 3 and set(after.values()) == {"FINISHED"}
    assert result.parent_run_id == status["true"].info.run_id
    assert sorted(result.run_ids) == sorted([status["0"].info.run_id, status["1"].info.run_id])
    assert "Mean test accuracy" in result.summary


def test_resume_refuses_finished_unknown_and_foreign_runs(store_dir):
    done = experiments.run(tiny_spec(store_dir, epochs=1))
    with pytest.raises(TLError, match="already FINISHED"):
        experiments.run(tiny_spec(store_dir, resume=done.run_ids[0]))
    with pytest.raises(TLError, match="No run with id 'nope'"):
        experiments.run(tiny_spec(store_dir, resume="nope"))
    tracker = Tracker(str(store_dir))
    with tracker.start_run("fe", {}) as other:
        pass
    with pytest.raises(TLError, match="belongs to the 'Feature extraction' experiment"):
        experiments.run(tiny_spec(store_dir, resume=other.run_id))


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_configuration_and_lp_ft_epochs_are_refused_before_any_run(store_dir, monkeypatch):
    monkeypatch.setattr(Backbone, "configurations", lambda self: [0, 1])
    with pytest.raises(BackboneError, match=r"Configuration 2 is not defined for efficientnet_lite0; valid "
                                            r"configurations are 0, 1, lp-ft"):
        experiments.run(tiny_spec(store_dir, configuration=2))
    with pytest.raises(SpecError, match="'lp_epochs' parameter of FineTuningParams must be smaller than 'epochs'"):
        experiments.run(tiny_spec(store_dir, configuration="lp-ft", lp_epochs=2, epochs=2))
    assert runs_in(Tracker(str(store_dir))) == []


def test_a_batch_larger_than_the_training_set_shrinks_with_a_warning(store_dir):
    reporter = RecordingReporter()
    result = experiments.run(tiny_spec(store_dir, epochs=1), reporter)
    assert any(level == "warning" and "--batch-size 64 is larger than the 6 training images" in text
               for level, text in reporter.messages)
    params = Tracker(str(store_dir)).get_run(result.run_ids[0]).data.params
    assert (params["batch_size"], params["batch_size_requested"]) == ("6", "64")
    assert 0 < min(reporter.fractions) and max(reporter.fractions) <= 1.0


def test_out_of_memory_fails_the_run_with_one_sentence_and_keeps_its_epochs(store_dir, monkeypatch):
    real, steps = ft.clip_gradients_, []

    def oom_in_epoch_2(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:  # 6 images, one step per epoch: the second step is epoch 2
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(ft.loop, "clip_gradients_", oom_in_epoch_2)
    with pytest.raises(TLError, match=r"ran out of memory .* at batch size 6 .*try a smaller --batch-size such as 3"):
        experiments.run(tiny_spec(store_dir, epochs=3))
    tracker = Tracker(str(store_dir))
    (run,) = runs_in(tracker)
    assert run.info.status == "FAILED" and "smaller --batch-size" in run.data.tags["error"]
    assert [s for s, _ in history(tracker, run.info.run_id, "val_loss")] == [1]


def _cli(capsys, *args) -> tuple[int, str, str]:
    """``python -m tlcore ft ARGS`` in this process: (exit code, stdout, stderr)."""
    from tlcore.cli import main

    capsys.readouterr()
    code = main(["ft", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_refuses_bad_values_in_one_line_without_opening_a_run(store_dir, capsys):
    for flags, message in [(["--learning-rate", "0"], "'learning_rate' parameter of FineTuningParams must be a "
                                                      "float in the range (0, inf). Got 0.0 instead."),
                           (["--epochs", "0"], "'epochs' parameter of FineTuningParams must be an int in the range "
                                               "[1, inf). Got 0 instead."),
                           (["--configuration", "5"], "must be one of 0, 1, 2, 3, 'lp-ft'. Got 5 instead.")]:
        code, _, err = _cli(capsys, "--dataset", "digits:0-2", "--mlflow-path", str(store_dir), *flags)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    code, _, err = _cli(capsys, "--mlflow-path", str(store_dir))
    assert code == 2 and "--dataset is required" in err
    assert runs_in(Tracker(str(store_dir))) == []


# ---------------------------------------------------------------------------------------------
# The command line, end to end


def test_cli_maps_the_seeds_flags_onto_the_spec(monkeypatch, tmp_path):
    import tlcore.cli as cli

    specs = []
    monkeypatch.setattr(cli.methods, "run_spec", lambda spec, args: specs.append(spec) or 0)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    assert cli.main(["ft", "--architecture", "ResNet50", "--source", "file", "--model", str(weights), "--dataset",
                     "digits", "--use-crops", "--epochs", "7", "--model-selection", "--batch-size", "16",
                     "--split-path", str(tmp_path), "--splits", "2", "--configuration", "3", "--optimizer", "adam",
                     "--learning-rate", "0.001", "--weight-decay", "0", "--momentum", "0.5", "--mlflow-path",
                     str(tmp_path / "m"), "--job", "42", "--patience", "4", "--seed", "3", "--device", "cpu",
                     "--samples-per-class", "1,5", "--resume", "abc"]) == 0
    s = specs[0]
    assert (s.backbone, s.weights, s.dataset, s.use_crops, s.model_selection, s.batch_size, s.split_path, s.splits,
            s.job, s.seed, s.device, s.samples_per_class) == ("resnet50", str(weights), "digits", True, True, 16,
                                                              str(tmp_path), 2, "42", 3, "cpu", (1, 5))
    p = s.params
    assert (p.configuration, p.optimizer, p.learning_rate, p.weight_decay, p.momentum, p.epochs, p.patience,
            p.resume) == (3, "adam", 0.001, 0.0, 0.5, 7, 4, "abc")
    assert cli.main(["ft", "--resume", "abc", "--precomputed-crops", str(tmp_path), "-c", "lp-ft"]) == 0
    assert specs[1].params.configuration == "lp-ft" and specs[1].use_crops and specs[1].params.resume == "abc"


@pytest.mark.slow
def test_cli_run_is_read_back_from_mlflow(store_dir, capsys):
    code, out, err = _cli(capsys, "--dataset", "digits:0-2", "--samples-per-class", "2", "--splits", "1",
                          "--resolution", "32", "--epochs", "2", "--configuration", "2", "--mlflow-path",
                          str(store_dir), "--quiet", "--num-workers", "0")
    assert code == 0, err
    assert "spc split epochs" in out and "test acc" in out
    tracker = Tracker(str(store_dir))
    (run,) = runs_in(tracker)
    p, m = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert {k: p[k] for k in ("method", "dataset", "backbone", "configuration", "optimizer", "learning_rate",
                              "weight_decay", "momentum", "batch_size", "epochs", "samples_per_class", "split",
                              "device")} == {
        "method": "ft", "dataset": "digits:0-2", "backbone": "efficientnet_lite0", "configuration": "2",
        "optimizer": "sgd", "learning_rate": "0.01", "weight_decay": "0.0001", "momentum": "0.9", "batch_size": "6",
        "epochs": "2", "samples_per_class": "2", "split": "0", "device": "cpu"}
    assert p["energy_method"].startswith(("estimate", "counters"))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time_s"):
        assert [s for s, _ in history(tracker, run.info.run_id, key)] == [1, 2], key
    for key in ("test_accuracy", "test_plain_accuracy", "time_total_s", "flops_total", "energy_kwh", "co2_kg",
                "images_processed", "best_epoch"):
        assert key in m, key
    assert m["flops_total"] > 0 and m["energy_kwh"] > 0
    # it learns: measured 82.9 % after 2 epochs on 2 images per class (chance 33.3 %); wrong labels score near 0
    assert m["test_accuracy"] > 0.65
    # 6 training images x 2 epochs + 30 val x 2 + the test set, each one network input
    test_images = int(m["images_processed"]) - 2 * 6 - 2 * 30
    assert test_images > 100


@pytest.mark.slow
def test_a_sweep_parent_records_what_the_whole_job_cost(store_dir):
    result = experiments.run(tiny_spec(store_dir, splits=2, epochs=1))
    tracker = Tracker(str(store_dir))
    parent = tracker.get_run(result.parent_run_id).data.metrics
    children = [tracker.get_run(r).data.metrics for r in result.run_ids]
    assert parent["flops_total"] == pytest.approx(sum(c["flops_total"] for c in children))
    assert parent["images_processed"] == sum(c["images_processed"] for c in children)
    # the job's wall time includes loading data and the model, which no child run counts
    assert parent["time_total_s"] > parent["children_time_total_s"] == pytest.approx(
        sum(c["time_total_s"] for c in children))
