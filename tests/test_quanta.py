"""QUANTA: the layer's math, the frozen source, where the layers sit, a run's MLflow record and
export files, determinism, resume, bad input, and the train-source -> quanta command line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_digits_folder
from torch import nn
from torch.nn import functional as F

from tlcore import experiments
from tlcore.cli import main
from tlcore.data import load_dataset
from tlcore.errors import BackboneError, Cancelled
from tlcore.methods.quanta import _random_source, export_dir, export_names, read_checkpoint, safe_name
from tlcore.methods.source_training import save_checkpoint
from tlcore.methods.supervised import (
    METRIC_NAMES,
    ClassificationMeter,
    batches_on_device,
    epoch_loader,
    seed_everything,
)
from tlcore.models import backbone_config, create_backbone
from tlcore.models.quanta_layer import QuantaLayer, QuantaNetwork, _Mix, select_points
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, QuantaParams
from tlcore.tracking import Tracker

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits4(tmp_path_factory):
    """Digits 0-3 as 32x32 PNGs: 10 train, 3 val, 4 test images per class."""
    return write_digits_folder(tmp_path_factory.mktemp("q") / "digits4", classes=(0, 1, 2, 3),
                               per_split={"train": 10, "val": 3, "test": 4})


@pytest.fixture(scope="module")
def cnn_pair():
    cfg = backbone_config("quanta_cnn")
    seed_everything(0)
    return cfg, create_backbone("quanta_cnn", "random", num_classes=4), create_backbone("quanta_cnn", "random",
                                                                                         num_classes=4)


def quanta_spec(dataset, store, outdir, seed=0, batch_size=4, **params):
    p = dict(source_weights="random", layer_to_transfer=-1, nb_of_target_epochs=1, nb_of_target_samples=4,
             outdir=str(outdir))
    p.update(params)
    backbone, resolution = p.pop("backbone", "quanta_cnn"), p.pop("resolution", None)
    return ExperimentSpec("quanta", dataset, backbone=backbone, params=QuantaParams(**p), mlflow_path=str(store),
                          num_workers=0, measure_energy=False, batch_size=batch_size, seed=seed, resolution=resolution)


def lambda_history(tracker, run_id, key):
    return [(m.step, m.value) for m in sorted(tracker.client.get_metric_history(run_id, f"quanta_source/{key}"),
                                              key=lambda m: m.step)]


# ---------------------------------------------------------------------------------------------
# The layer and the network


def test_quanta_layer_starts_at_0_9002_sums_to_one_and_has_opposite_gradients():
    q = QuantaLayer(nn.ELU())
    lam = q.lambdas()
    assert round(float(lam[0].detach()), 4) == 0.9002 and round(q.lambda_source, 4) == 0.9002
    assert torch.isclose(lam.sum(), torch.tensor(1.0))
    gen = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    out = q(z_s, z_t)
    # the fused mix (z_t + lambda_S (z_s - z_t)) rounds differently from the textbook sum in the last bits
    assert torch.allclose(out, F.elu(lam[0] * z_s + lam[1] * z_t), atol=1e-6)
    out.pow(2).sum().backward()
    g = q.weight.grad
    assert g[0].abs() > 0 and torch.isclose(g[0], -g[1])
    # the fused mix's backward is the true gradient, for lambda and for both inputs
    zs64 = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    zt64 = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w64 = torch.tensor([1.1, -1.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, a, b: _Mix.apply(torch.softmax(w, 0)[0], a, b), (w64, zs64, zt64))
    # w stays (a, -a), so lambda_S = sigmoid(2a)
    with torch.no_grad():
        q.weight.copy_(torch.tensor([0.3, -0.3]))
    assert math.isclose(q.lambda_source, 1 / (1 + math.exp(-0.6)), rel_tol=1e-6)


def test_source_is_frozen_and_in_eval_mode_while_the_target_trains(cnn_pair):
    cfg, source, target = cnn_pair
    net = QuantaNetwork(source, target, select_points(cfg, -1))
    net.train()
    assert net.target.training and not any(m.training for m in net.source.modules())
    assert not any(p.requires_grad for p in net.source.parameters())
    before = {k: v.clone() for k, v in net.source.state_dict().items()}  # BatchNorm running stats included
    target_before = net.target.net.layer0.weight.detach().clone()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    z1, z2 = net.source_activations(x), net.source_activations(x)
    assert all(torch.equal(a, b) for a, b in zip(z1, z2, strict=True))  # no dropout in the source
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in net.source.state_dict().items())
    assert not torch.equal(target_before, net.target.net.layer0.weight)


def test_source_and_target_see_the_same_augmented_batch(digits4, cnn_pair):
    cfg, source, target = cnn_pair
    ds = load_dataset(str(digits4))
    prep = cfg.preprocessing
    idx = np.arange(8)
    x, y = next(batches_on_device(epoch_loader(ds, idx, prep, 8, CPU, 0, seed=5, augment=True), prep, CPU))
    x_plain, y_plain = next(batches_on_device(epoch_loader(ds, idx, prep, 8, CPU, 0, seed=5), prep, CPU))
    assert torch.equal(y, y_plain) and not torch.equal(x, x_plain)  # same images, augmented
    net = QuantaNetwork(source, target, select_points(cfg, 2))
    seen = {}
    hooks = [net.source.net.layer0.register_forward_pre_hook(lambda m, a: seen.setdefault("source", a[0])),
             net.target.net.layer0.register_forward_pre_hook(lambda m, a: seen.setdefault("target", a[0]))]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(seen["source"], x) and torch.equal(seen["target"], x)


def _mixing_at(net: QuantaNetwork, i: int, other: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Z_S and Z_T at layer i, what act{i} received, and the same for a layer without QUANTA."""
    got: dict[str, torch.Tensor] = {}
    src, tgt = net.source.net, net.target.net
    hooks = [
        src.get_submodule(f"layer{i}").register_forward_hook(lambda m, a, o: got.setdefault("zs", o)),
        tgt.get_submodule(f"layer{i}").register_forward_hook(lambda m, a, o: got.setdefault("zt", o)),
        tgt.get_submodule(f"act{i}").register_forward_pre_hook(lambda m, a: got.setdefault("mix", a[0])),
        tgt.get_submodule(f"layer{other}").register_forward_hook(lambda m, a, o: got.setdefault("raw", o)),
        tgt.get_submodule(f"act{other}").register_forward_pre_hook(lambda m, a: got.setdefault("other", a[0])),
    ]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return got


def test_every_layer_index_builds_and_mixes_exactly_there(cnn_pair):
    cfg, source, target = cnn_pair
    x = torch.rand(2, 3, 32, 32)
    for i in range(7):
        [point] = select_points(cfg, i)
        assert (point.key, point.module, point.activation) == (str(i), f"layer{i}", f"act{i}")
        net = QuantaNetwork(source, target, [point]).eval()
        with torch.no_grad():
            net.quanta[0].weight.copy_(torch.tensor([0.3, -0.3]))
        lam_s = net.quanta[0].lambda_source
        got = _mixing_at(net, i, (i + 1) % 7, x)
        assert torch.allclose(got["mix"], lam_s * got["zs"] + (1 - lam_s) * got["zt"], atol=1e-6), i
        assert torch.equal(got["other"], got["raw"]), i  # no QUANTA layer anywhere else


def test_layer_choice_is_checked_and_minus_one_places_seven_layers_that_all_learn(cnn_pair):
    cfg, source, target = cnn_pair
    with pytest.raises(BackboneError, match=r"Layer 7 is out of range for quanta_cnn.*use 0\.\.6 .*-1"):
        select_points(cfg, 7)
    with pytest.raises(BackboneError, match="not a QUANTA point of quanta_cnn"):
        select_points(cfg, "conv9")
    assert select_points(cfg, "layer3") == select_points(cfg, "act3") == select_points(cfg, 3)
    points = select_points(cfg, -1)
    assert [p.key for p in points] == [str(i) for i in range(7)]
    net = QuantaNetwork(source, target, points)
    assert len(net.quanta) == 7
    F.cross_entropy(net(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(q.weight.grad is not None and q.weight.grad.abs().sum() > 0 for q in net.quanta)


def test_pretrained_backbone_mixes_at_its_taps(digits4):
    cfg = backbone_config("efficientnet_lite0")
    points = select_points(cfg, -1)
    assert len(points) == 17 and points[3].key == "_blocks.3" and points[3].activation is None
    assert select_points(cfg, "_blocks.3") == [points[3]]
    source = create_backbone("efficientnet_lite0", "imagenet")
    target = create_backbone("efficientnet_lite0", "random", num_classes=4)
    net = QuantaNetwork(source, target, points).train()
    bn_before = source.net._bn1.running_mean.clone()
    F.cross_entropy(net(torch.rand(2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    assert all(q.weight.grad.abs().sum() > 0 for q in net.quanta)
    assert torch.equal(bn_before, source.net._bn1.running_mean)


def test_random_source_is_reproducible_and_never_the_targets_initialisation():
    a = _random_source("quanta_cnn", 4, 5)
    b = _random_source("quanta_cnn", 4, 5)
    seed_everything(5)
    target = create_backbone("quanta_cnn", "random", num_classes=4)
    assert torch.equal(a.net.layer0.weight, b.net.layer0.weight)
    assert not torch.equal(a.net.layer0.weight, target.net.layer0.weight)


def test_metric_set_counts_each_image_class_pair_at_probability_0_5():
    meter = ClassificationMeter(3)
    logits = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]]))
    meter.update(logits, torch.tensor([0, 1, 0]))
    m = meter.compute()
    assert set(m) == set(METRIC_NAMES)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 2, 5)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 3)
    assert m["top3_accuracy"] == 1.0


def test_export_folder_names_are_filesystem_safe(tmp_path):
    assert export_dir(tmp_path, "digits:0-4", "digits:5-9").name == "digits_0-4_to_digits_5-9"
    assert export_dir(tmp_path, "/data/cifar10/", "../x:1,2").name == "cifar10_to_x_1_2"
    assert safe_name("..") == "task"
    assert export_names(0, "all")["quantas"] == "quantas_r_0_l_all.jsonl"
    assert export_names(2, "_blocks.3")["target_model"] == "target_r_2_l__blocks.3.pt"


# ---------------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def control_run(digits4, tmp_path_factory, _store_template):
    """One run with the random source (the control): 2 epochs x 2 steps, every layer, quanta lr 0.01."""
    root = tmp_path_factory.mktemp("control")
    (root / "ml").mkdir()
    shutil.copy(_store_template, root / "ml" / "mlflow.db")
    spec = quanta_spec(f"{digits4}:2-3", root / "ml", root / "expe", seed=3, source_task=f"{digits4}:0-1",
                       nb_of_target_epochs=2, quanta_lr=0.01, keep_weights=True)
    return spec, experiments.run(spec)


@pytest.mark.slow
def test_a_run_logs_lambda_per_step_and_epoch_and_the_seed_metric_set(control_run):
    spec, result = control_run
    tracker = Tracker(spec.mlflow_path)
    [run_id] = result.run_ids
    run = tracker.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert tracker.client.get_experiment(run.info.experiment_id).name == "QUANTA"
    p = run.data.params
    assert (p["source_kind"], p["layer_to_transfer"], p["quanta_layers"]) == ("random", "-1", "0,1,2,3,4,5,6")
    assert (p["samples_per_class"], p["n_train_images"], p["run_seed"]) == ("4", "8", "3")
    for i in range(7):
        history = lambda_history(tracker, run_id, i)
        assert [s for s, _ in history] == [0, 1, 2, 3, 4]  # 2 epochs x 2 optimizer steps, plus the start
        assert history[0][1] == pytest.approx(0.9002, abs=1e-4)
        # its own learning rate: Adam moves w by about quanta_lr per step (2e-4 could not move it this far)
        w_moved = abs(0.5 * math.log(history[-1][1] / (1 - history[-1][1])) - 1.1)
        assert w_moved > 0.002
        epochs = tracker.client.get_metric_history(run_id, f"quanta_source_epoch/{i}")
        assert sorted(m.step for m in epochs) == [1, 2]
    m = run.data.metrics
    for prefix in ("train", "test", "source_test"):
        assert {f"{prefix}_{k}" for k in METRIC_NAMES} <= set(m)
    assert m["source_test_tp"] + m["source_test_fn"] == 8  # the source task's test set: 2 classes x 4
    assert m["flops_total"] > 0 and m["images_processed"] > 0 and "val_accuracy" in m


@pytest.mark.slow
def test_export_files_hold_the_seed_contents(control_run):
    spec, result = control_run
    out = Path(result.artifacts["exports"])
    assert out.name == "random_digits4_0-1_to_digits4_2-3"
    names = export_names(0, "all")
    assert sorted(p.name for p in out.iterdir()) == sorted(names.values())
    # the seed's fields (issue 16): {"<layer>": {"quanta_weights": [[w_S, w_T] per epoch], "quantas": {...}}}
    [quantas] = [json.loads(line) for line in open(out / names["quantas"])]
    assert list(quantas) == [str(i) for i in range(7)]
    for q in quantas.values():
        assert q["epochs"] == [0, 1, 2] and len(q["quanta_weights"]) == 3 and len(q["quantas"]["source"]) == 3
        lam_s, lam_t = q["quantas"]["source"], q["quantas"]["target"]
        assert all(abs(s + t - 1) < 1e-6 for s, t in zip(lam_s, lam_t, strict=True))
        assert q["quanta_weights"][0] == pytest.approx([1.1, -1.1])
        a, b = q["quanta_weights"][-1]
        assert a == pytest.approx(-b) and lam_s[-1] == pytest.approx(1 / (1 + math.exp(-2 * a)), abs=1e-6)
    [training] = [json.loads(line) for line in open(out / names["training"])]
    keras = {"loss", "categorical_accuracy", "precision", "recall", "true_positives", "true_negatives",
             "false_positives", "false_negatives", "top_k_categorical_accuracy"}
    assert list(training) == ["0", "1"] and keras <= set(training["0"]) and "val_categorical_accuracy" in training["0"]
    assert len(METRIC_NAMES) == len(keras)
    [target_test] = [json.loads(line) for line in open(out / names["testing_target"])]
    run = Tracker(spec.mlflow_path).get_run(result.run_ids[0])
    assert target_test["categorical_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])
    [source_test] = [json.loads(line) for line in open(out / names["testing_source"])]
    assert source_test["evaluated"] and source_test["n_images"] == 8 and keras <= set(source_test)
    state, meta = read_checkpoint(out / names["source_model"])
    assert meta["num_classes"] == 2 and "layer0.weight" in state
    ckpt = torch.load(out / names["target_model"], weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["points"]) == (2, 4, [str(i) for i in range(7)])
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [2e-4, 0.01]  # target, QUANTA weights
    artifacts = {f.path for f in Tracker(spec.mlflow_path).client.list_artifacts(result.run_ids[0], "exports")}
    assert f"exports/{names['quantas']}" in artifacts


@pytest.mark.slow
def test_the_same_seed_gives_the_same_lambdas_and_files_are_rewritten_not_appended(control_run):
    spec, first = control_run
    second = experiments.run(spec)
    tracker = Tracker(spec.mlflow_path)
    for i in range(7):
        assert lambda_history(tracker, first.run_ids[0], i) == lambda_history(tracker, second.run_ids[0], i)
    out = Path(second.artifacts["exports"])
    names = export_names(0, "all")
    assert len(open(out / names["quantas"]).readlines()) == 1  # one line per run, as the seed's: not appended
    assert len(open(out / names["training"]).readlines()) == 1
    # the first run's artifact copy of its checkpoint is still its own
    folder = tracker.client.download_artifacts(first.run_ids[0], f"models/{names['target_model']}")
    assert torch.load(folder, weights_only=True)["mlflow_run_id"] == first.run_ids[0]


@pytest.mark.slow
def test_resume_continues_weights_lambdas_optimizer_and_rng_exactly(digits4, tmp_path, store_dir):
    dataset = f"{digits4}:0-2"
    common = dict(nb_of_target_samples=4, augment_data=True, layer_to_transfer=-1, seed=7)
    straight = experiments.run(quanta_spec(dataset, store_dir, tmp_path / "a", nb_of_target_epochs=2, **common))
    experiments.run(quanta_spec(dataset, store_dir, tmp_path / "b", nb_of_target_epochs=1, **common))
    names = export_names(0, "all")
    first_half = export_dir(tmp_path / "b", "random", dataset) / names["target_model"]
    resumed = experiments.run(quanta_spec(dataset, store_dir, tmp_path / "c", nb_of_target_epochs=1,
                                          train_from_previous_training=str(first_half), **common))
    a = torch.load(export_dir(tmp_path / "a", "random", dataset) / names["target_model"], weights_only=True)
    c = torch.load(export_dir(tmp_path / "c", "random", dataset) / names["target_model"], weights_only=True)
    assert (c["epoch"], c["global_step"]) == (a["epoch"], a["global_step"]) == (2, 6)
    assert torch.equal(a["quanta"]["0.weight"], c["quanta"]["0.weight"])
    assert all(torch.equal(a["target"][k], c["target"][k]) for k in a["target"])
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], c["optimizer"]["state"][i]["exp_avg"])
    assert a["history"]["lambda_s"] == c["history"]["lambda_s"]
    tracker = Tracker(str(store_dir))
    assert [s for s, _ in lambda_history(tracker, resumed.run_ids[0], 6)] == [3, 4, 5, 6]
    assert lambda_history(tracker, resumed.run_ids[0], 6) == lambda_history(tracker, straight.run_ids[0], 6)[3:]


class _CancelAfterFirstStep(Reporter):
    """Asks to stop once the first training step has reported progress."""

    def __init__(self) -> None:
        self.steps = 0

    def update(self, *, stage=None, fraction=None) -> None:
        if stage and "epoch" in stage:
            self.steps += 1

    @property
    def cancel_requested(self) -> bool:
        return self.steps >= 1


def test_a_cancelled_run_ends_killed_and_keeps_the_lambdas_it_logged(digits4, tmp_path, store_dir):
    spec = quanta_spec(f"{digits4}:2-3", store_dir, tmp_path / "expe", layer_to_transfer=0)
    with pytest.raises(Cancelled):
        experiments.run(spec, _CancelAfterFirstStep())
    tracker = Tracker(str(store_dir))
    [run] = tracker.client.search_runs([tracker.experiment_id("QUANTA")])
    assert run.info.status == "KILLED"
    assert [s for s, _ in lambda_history(tracker, run.info.run_id, 0)] == [0, 1]


@pytest.mark.slow
def test_pretrained_backbone_run_keys_lambda_by_tap_name(digits4, tmp_path, store_dir):
    spec = quanta_spec(f"{digits4}:0-1", store_dir, tmp_path / "expe", backbone="efficientnet_lite0",
                       source_weights="imagenet", layer_to_transfer="_blocks.3", nb_of_target_samples=2, resolution=32)
    result = experiments.run(spec)
    tracker = Tracker(spec.mlflow_path)
    assert [s for s, _ in lambda_history(tracker, result.run_ids[0], "_blocks.3")] == [0, 1]
    out = Path(result.artifacts["exports"])
    assert out.name == "imagenet_to_digits4_0-1"
    [source_test] = [json.loads(line) for line in open(out / "testing_metrics_of_source_r_0_l__blocks.3.jsonl")]
    assert not source_test["evaluated"] and "ImageNet" in source_test["note"]
    assert tracker.get_run(result.run_ids[0]).data.params["source_kind"] == "pretrained"


# ---------------------------------------------------------------------------------------------
# The command line


def _quanta_args(digits4, tmp_path, store, *extra):
    return ["quanta", "--architecture", "quanta_cnn", "-s", f"{digits4}:0-1", "-t", f"{digits4}:2-3",
            "--nb_of_target_samples", "3", "-o", str(tmp_path / "expe"), "--mlflow-path", str(store),
            "--no-energy", "--num-workers", "0", "--batch-size", "4", "--quiet", *extra]


def _all_runs(store):
    tracker = Tracker(str(store))
    exps = [e.experiment_id for e in tracker.client.search_experiments()]
    return tracker.client.search_runs(exps) if exps else []


def test_show_only_build_prints_both_models_and_opens_no_run(digits4, tmp_path, store_dir, capsys):
    assert main(_quanta_args(digits4, tmp_path, store_dir, "-sw", "random", "-l", "3", "--show_only_build")) == 0
    out = capsys.readouterr().out
    assert "Source (quanta_cnn" in out and "Target (quanta_cnn" in out
    assert "<- QUANTA 3: mixes the output of layer3 (f = act3)" in out and "<- Z_S of QUANTA 3" in out
    assert "total parameters" in out and "no MLflow run" in out
    assert _all_runs(store_dir) == [] and not (tmp_path / "expe").exists()


@pytest.mark.parametrize("case", ["layer", "weights", "input_size", "samples", "default", "unknown", "resume"])
def test_bad_input_is_one_sentence_exit_2_and_no_run(digits4, tmp_path, store_dir, capsys, case):
    bad = tmp_path / "bad.pt"
    if case == "weights":
        torch.save({"layer0.weight": torch.zeros(3, 3, 3, 3)}, bad)
    if case == "input_size":
        save_checkpoint({"layer0.weight": torch.zeros(64, 3, 3, 3)}, {"architecture": "quanta_cnn", "input_size": 64},
                        bad)
    extra = {
        "layer": (["-sw", "random", "-l", "7"], "out of range for quanta_cnn"),
        "weights": (["-sw", str(bad)], "do not fit quanta_cnn: layer0.weight has shape [3, 3, 3, 3]"),
        "input_size": (["-sw", str(bad)], "trained on 64x64 inputs but the target runs at 32x32"),
        "samples": (["-sw", "random", "--nb_of_target_samples", "50"], "--nb_of_target_samples 50: "),
        "default": (["-sw", "default"], "quanta_cnn has no pretrained weights"),
        "unknown": (["-sw", "nowhere.pt"], "not a file, not a run id"),
        "resume": (["-sw", "random", "--train_from_previous_training", str(bad)], "does not exist"),
    }[case]
    assert main(_quanta_args(digits4, tmp_path, store_dir, *extra[0])) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[tlcore] ")]  # progress
    assert len(err) == 1 and err[0].startswith("error: ") and extra[1] in err[0], err
    assert _all_runs(store_dir) == []


@pytest.mark.slow
def test_train_source_then_quanta_and_its_control_from_the_command_line(digits4, tmp_path, store_dir, capsys):
    src = tmp_path / "src.pt"
    assert main(["train-source", "--architecture", "quanta_cnn", "--dataset", f"{digits4}:0-1", "--epochs", "1",
                 "--seed", "1", "--out", str(src), "-o", str(tmp_path / "expe"), "--mlflow-path", str(store_dir),
                 "--no-energy",
                 "--num-workers", "0", "--batch-size", "16", "--quiet"]) == 0
    tracker = Tracker(str(store_dir))
    [source_run] = tracker.client.search_runs([tracker.experiment_id("Source training")])
    assert source_run.info.status == "FINISHED" and "test_accuracy" in source_run.data.metrics
    assert [f.path for f in tracker.client.list_artifacts(source_run.info.run_id)] == ["source.pt"]
    _, meta = read_checkpoint(src)
    assert (meta["dataset"], meta["num_classes"], meta["input_size"]) == (f"{digits4}:0-1", 2, 32)
    state, _ = read_checkpoint(src)
    assert torch.equal(create_backbone("quanta_cnn", str(src)).net.layer0.weight, state["layer0.weight"])

    assert main(_quanta_args(digits4, tmp_path, store_dir, "-sw", source_run.info.run_id, "-l", "-1")) == 0
    assert main(_quanta_args(digits4, tmp_path, store_dir, "-sw", "random", "-l", "-1")) == 0
    assert "lambda_S per layer" in capsys.readouterr().out
    runs = tracker.client.search_runs([tracker.experiment_id("QUANTA")])
    by_kind = {r.data.params["source_kind"]: r for r in runs}
    assert set(by_kind) == {"trained", "random"} and all(r.info.status == "FINISHED" for r in runs)
    assert by_kind["trained"].data.params["source_run_id"] == source_run.info.run_id
    for r in runs:
        assert {f"quanta_source/{i}" for i in range(7)} <= set(r.data.metrics)
    assert (tmp_path / "expe" / "digits4_0-1_to_digits4_2-3" / "quantas_r_0_l_all.jsonl").is_file()
    assert (tmp_path / "expe" / "random_digits4_0-1_to_digits4_2-3" / "quantas_r_0_l_all.jsonl").is_file()
