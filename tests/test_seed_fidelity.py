"""Issue 16: the seeds' own command lines run unchanged on a dataset in the seed's layout.

Each test runs a command as tl-tradeoff's README or code (``src/feature_extraction.py``,
``src/fine_tuning.py``) or QUANTA's (``transfer.py``, ``train_source_model.py``) writes it, from the
working directory the seed's relative CSV paths start in; flags of ours that only make it small
and fast (``--resolution 32``, ``--quiet``, ...) come after the seed's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from seed_layout import LABELS, write_seed_layout

from tlcore.cli import main
from tlcore.tracking import Tracker

FAST = ["--resolution", "32", "--no-energy", "--quiet", "--num-workers", "0", "--no-cache"]


@pytest.fixture(scope="module")
def _seed_template(tmp_path_factory) -> Path:
    return write_seed_layout(tmp_path_factory.mktemp("seed") / "work")


@pytest.fixture
def work(tmp_path, _seed_template, monkeypatch) -> Path:
    """A fresh copy of the seed layout, and the working directory set to it (as the seed runs)."""
    dst = tmp_path / "work"
    shutil.copytree(_seed_template, dst)
    monkeypatch.chdir(dst)
    return dst


def runs_of(store, experiment: str):
    tracker = Tracker(str(store))
    eid = tracker.experiment_id(experiment, create=False)
    return tracker.client.search_runs([eid]) if eid else []


def children(runs):
    return [r for r in runs if r.data.tags.get("sweep_parent") != "true"]


# ---------------------------------------------------------------------------------------------
# 1. the seed's classifier names, XGBoost among them


def test_seed_classifier_names_resolve_and_xgboost_votes_over_labels_with_gaps():
    from tlcore.classifiers import classifiers, fit_predict

    names = {n: classifiers.canonical(n) for n in ("LinearSVC", "SVC", "SGDClassifier", "KNN", "XGBoost")}
    assert names == {"LinearSVC": "linearsvc", "SVC": "svc", "SGDClassifier": "sgd", "KNN": "knn",
                     "XGBoost": "xgboost"}
    rng = np.random.default_rng(0)
    y = np.repeat([2, 5, 9], 6)  # labels with gaps, as a class filter or a few-shot split leaves them
    x = rng.normal(size=(18, 4)) + y[:, None]
    fit = fit_predict("XGBoost", x, y, x[[0, 6, 12]])
    assert list(fit.predictions) == [2, 5, 9]


def test_fe_with_the_seeds_classifier_name_xgboost_on_a_named_dataset(work, store_dir):
    # the seed: feature_extraction.py --classifier XGBoost --dataset textures --split-path ... --splits 2
    assert main(["fe", "--classifier", "XGBoost", "--dataset", "textures", "--split-path", "splits/textures",
                 "--splits", "2", "--mlflow-path", str(store_dir), "--job", "7",
                 "--backbone", "efficientnet_lite0", *FAST]) == 0
    runs = children(runs_of(store_dir, "Feature extraction"))
    assert sorted((r.data.params["samples_per_class"], r.data.params["split"]) for r in runs) == [
        ("1", "0"), ("1", "1"), ("2", "0")]
    for r in runs:
        assert r.data.params["classifier"] == "xgboost" and r.data.params["dataset"] == "textures"
        assert r.data.params["job"] == "7" and r.info.status == "FINISHED"


def test_unknown_classifier_lists_the_seed_names_too(work, store_dir, capsys):
    assert main(["fe", "--classifier", "RandomForest", "-d", "textures", "--split-path", "splits/textures",
                 "--mlflow-path", str(store_dir), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unknown classifier 'RandomForest'" in err[0] and "xgboost" in err[0]
    assert "linearsvc" in err[0] and "sgdclassifier" in err[0]


# ---------------------------------------------------------------------------------------------
# 2. a dataset *name* with --split-path: images from the CSVs' paths


def test_a_dataset_name_reads_the_images_the_csvs_list_even_a_torchvision_name(work, tmp_path):
    from tlcore.data import load_dataset, resolve_splits

    # "flowers102" is also a torchvision dataset: with --split-path the seed means its own files
    shutil.copytree(work / "splits" / "textures", work / "splits" / "flowers102")
    ds = load_dataset("flowers102", split_path="splits/flowers102")
    assert ds.kind == "folder" and ds.classes == list(LABELS) and len(ds) == 18
    assert ds.root == (work / "textures").resolve()
    splits = resolve_splits(ds, "splits/flowers102")
    assert splits.origin.startswith("csv:") and len(splits.val) == 6 and len(splits.test) == 6
    assert {ds.source.paths[i].parent.parent.name for i in splits.val} == {"validation"}
    # run from elsewhere, the CSVs' relative paths are also found from the split folder's parents
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import os

    os.chdir(elsewhere)
    assert len(load_dataset("textures", split_path=work / "splits" / "textures")) == 18


def test_a_csv_path_that_exists_nowhere_is_one_sentence(work, store_dir, capsys):
    with open(work / "splits" / "textures" / "test.csv", "a") as f:
        f.write("textures/test/banded/missing.jpg,test,missing.jpg,banded\n")
    assert main(["fe", "-d", "textures", "--split-path", "splits/textures", "--mlflow-path", str(store_dir),
                 *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "textures/test/banded/missing.jpg" in err[0]
    assert runs_of(store_dir, "Feature extraction") == []


# ---------------------------------------------------------------------------------------------
# 3. the seed's model description JSON (TensorFlow tensor names)


def test_the_seeds_vgg16_descriptions_map_onto_vgg16s_taps():
    from seed_layout import VGG_TENSORS

    from tlcore.models import backbone_config
    from tlcore.models.descriptions import load_description
    from tlcore.models.keras_names import guess_backbone, map_tensors

    assert map_tensors(VGG_TENSORS, "vgg16") == backbone_config("vgg16").taps  # all 13 convs + fc1 + fc2
    assert map_tensors(["block4_conv2/Relu:0", "block5_pool/MaxPool:0"], "vgg16") == ("features.20", "features.30")
    assert map_tensors(["conv1_relu/Relu:0", "conv4_block6_out/Relu:0", "avg_pool/Mean:0"], "resnet50") == (
        "relu", "layer3.5", "avgpool")
    assert guess_backbone(["conv4_block36_out/Relu:0"]) == "resnet152"
    assert guess_backbone(VGG_TENSORS) == "vgg16"
    with pytest.raises(Exception, match=r"'conv2_block1_1_relu/Relu:0' .* no matching layer in resnet50; valid "
                                        r"tensor names are: conv1_relu/Relu:0, pool1_pool/MaxPool:0, convS_blockB_out"):
        map_tensors(["conv2_block1_1_relu/Relu:0"], "resnet50")
    assert load_description.__doc__


def test_fe_with_the_seeds_model_description_json(work, store_dir):
    # the seed: feature_extraction.py --model-description model_description/vgg16_imagenet/model_25.json ...
    assert main(["fe", "--model-description", "model_description/vgg16_imagenet/model_25.json", "--dataset",
                 "textures", "--split-path", "splits/textures", "--model-selection", "--mlflow-path", str(store_dir),
                 "--weights", "random", *FAST]) == 0
    [run] = runs_of(store_dir, "Feature extraction")
    assert run.data.params["backbone"] == "vgg16"
    assert run.data.params["taps"] == "features.29,classifier.1,classifier.4"  # block5_conv3, fc1, fc2
    assert run.data.params["layers"] == "model_25"


def test_an_unmappable_tensor_is_refused_with_the_valid_names(work, store_dir, capsys):
    bad = work / "model_description" / "bad.json"
    bad.write_text(json.dumps({"input_reshape": [224, 224], "input_tensor": "input_2:0",
                               "target_tensors": ["block1_conv1/Relu:0", "block6_conv1/Relu:0"]}))
    assert main(["fe", "--model-description", str(bad), "-d", "textures", "--split-path", "splits/textures",
                 "--mlflow-path", str(store_dir), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'block6_conv1/Relu:0'" in err[0] and "block5_conv3/Relu:0, fc1/Relu:0" in err[0]


# ---------------------------------------------------------------------------------------------
# 4, 5. short flags; fine-tuning's default configuration is the seed's 1


def test_short_flags_and_ft_default_configuration_1(work, store_dir):
    # feature_extraction.py -m MODEL -d DATASET; fine_tuning.py -a ARCH -d DATASET -b BS -e EPOCHS (no -c)
    assert main(["fe", "-m", "model_description/vgg16_imagenet/model_25.json", "-d", "textures", "--split-path",
                 "splits/textures", "--model-selection", "--mlflow-path", str(store_dir), "--weights", "random",
                 *FAST]) == 0
    assert runs_of(store_dir, "Feature extraction")[0].data.params["backbone"] == "vgg16"
    assert main(["ft", "-a", "efficientnet_lite0", "-d", "textures", "--split-path", "splits/textures",
                 "--model-selection", "-b", "3", "-e", "1", "--mlflow-path", str(store_dir),
                 *FAST[:-1]]) == 0
    [run] = runs_of(store_dir, "Fine-tuning")
    assert run.data.params["configuration"] == "1" and run.data.params["batch_size_requested"] == "3"


# ---------------------------------------------------------------------------------------------
# 12. validation/ folders


def test_validation_folders_are_the_val_partition(work):
    from tlcore.data import generate_splits, load_dataset

    ds = load_dataset("textures")  # the folder itself, no CSVs
    assert sorted(set(ds.partition)) == ["test", "train", "val"]
    splits = generate_splits(ds, seed=0)
    assert {ds.source.paths[i].parent.parent.name for i in splits.val} == {"validation"}
    assert all(ds.source.paths[i].parent.parent.name == "train" for d in splits.train.values() for x in d for i in x)


# ---------------------------------------------------------------------------------------------
# 13. precomputed crops: read with a dataset name; a missing one is one sentence and no run


def test_precomputed_crops_of_a_named_dataset_and_a_missing_crop(work, store_dir, capsys):
    cmd = ["fe", "-d", "textures", "--split-path", "splits/textures", "--use-crops", "--precomputed-crops",
           "textures_crops", "--model-selection", "--mlflow-path", str(store_dir), "--backbone",
           "efficientnet_lite0", *FAST]
    assert main(cmd) == 0
    [run] = runs_of(store_dir, "Feature extraction")
    assert run.data.params["use_crops"] == "true" and int(run.data.metrics["images_processed"]) == 10 * 12
    (work / "textures_crops" / "test" / "marbled" / "marbled_te01_crop_7.jpg").unlink()
    capsys.readouterr()
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "marbled_te01.jpg has 9" in err[0] and "marbled_te01_crop_0.jpg" in err[0], err
    assert len(runs_of(store_dir, "Feature extraction")) == 1  # no second run was opened


# ---------------------------------------------------------------------------------------------
# 11. ResNet-152 freezes as the seed counts: 38/76/114 of its 151 main convolutions


def test_resnet152_freezes_the_seeds_main_convolutions_only():
    from torch import nn

    from tlcore.models.catalog import meta_backbone

    bb = meta_backbone("resnet152")
    main_convs = [n for n, m in bb.net.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n]
    assert len(main_convs) == 151
    for config, n in ((1, 38), (2, 76), (3, 114)):
        frozen = {p.removeprefix("net.") for p in bb.apply_freezing(config, bn_trainable=True)}
        assert frozen == {f"{c}.weight" for c in main_convs[:n]}  # no shortcut conv, no BatchNorm
    assert main_convs[37] == "layer3.1.conv1"  # the seed's 38th: conv4_block2_1_conv
    frozen = {p.removeprefix("net.") for p in bb.apply_freezing(1)}  # our default also freezes their BatchNorm
    assert "layer3.1.bn1.weight" in frozen and "layer3.0.downsample.0.weight" not in frozen


def test_ft_resnet152_seed_command_line_trains_shortcuts_and_batchnorm(monkeypatch):
    import torch
    from torch import nn

    import tlcore.cli as cli
    from tlcore.methods import fine_tuning as ft
    from tlcore.models import create_backbone

    specs = []
    monkeypatch.setattr(cli.methods, "run_spec", lambda spec, args: specs.append(spec) or 0)
    # fine_tuning.py --architecture ResNet152 --source ImageNet --dataset flowers102 (the seed: no -c = 1)
    assert cli.main(["ft", "--architecture", "ResNet152", "--source", "random", "--dataset", "flowers102",
                     "--bn-trainable"]) == 0
    spec = specs[0]
    assert (spec.backbone, spec.params.configuration) == ("resnet152", 1)
    model = ft.build_model(create_backbone("resnet152", "random"), 3, spec.params.configuration,
                           ft.bn_statistics(spec.params), torch.device("cpu"))
    main_convs = [m for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert sum(p.numel() for p in frozen) == sum(m.weight.numel() for m in main_convs[:38])
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))  # batch statistics


# ---------------------------------------------------------------------------------------------
# 10. the seed's --mlflow-path ../mlruns, file: URIs, and the seeds' metric names in MLflow


def _seed_fe(store: str, *extra: str) -> list[str]:
    return ["fe", "--classifier", "LinearSVC", "--dataset", "textures", "--split-path", "../splits/textures",
            "--model-selection", "--mlflow-path", store, "--job", "3", *extra, "--backbone", "efficientnet_lite0",
            *FAST]


def test_mlflow_path_folder_is_what_mlflow_ui_in_that_folder_opens_with_the_seeds_names(work, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.utils import _get_default_tracking_uri

    (work / "src").mkdir()
    monkeypatch.chdir(work / "src")  # the seed runs src/feature_extraction.py with its default ../mlruns
    assert main(_seed_fe("../mlruns", "--seed-metric-names")) == 0
    from tlcore.tracking import mlflow_program  # `mlflow`, or the venv's own when the venv is not active

    assert f"Open the results in MLflow's UI: {mlflow_program()} ui --backend-store-uri sqlite:///" in \
        capsys.readouterr().out
    monkeypatch.chdir(work / "mlruns")  # the seed's README: `mlflow ui` in that folder
    client = MlflowClient(_get_default_tracking_uri())  # the store `mlflow ui` opens there
    [run] = client.search_runs([client.get_experiment_by_name("Feature extraction").experiment_id])
    m, p = run.data.metrics, run.data.params
    assert m["Val accuracy"] == pytest.approx(100 * m["val_accuracy"])  # the seed's name, in %
    assert {k: p[k] for k in ("Classifier", "Model selection", "Using crops", "Job number", "Dataset")} == {
        "Classifier": "<class 'sklearn.svm._classes.LinearSVC'>", "Model selection": "True",
        "Using crops": "False", "Job number": "3", "Dataset": "textures"}
    assert "Postprocessing time" in m and "Total execution time" in m


def test_file_uris_and_existing_file_stores_stay_file_stores(work, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = (work / "mlruns_fs").as_uri()
    (work / "src").mkdir()
    monkeypatch.chdir(work / "src")
    assert main(_seed_fe(uri)) == 0
    from tlcore.tracking import mlflow_program

    assert f"MLFLOW_ALLOW_FILE_STORE=true {mlflow_program()} ui --backend-store-uri {uri}" in capsys.readouterr().out
    assert main(_seed_fe("../mlruns_fs")) == 0  # a folder that already is a file store is used as one
    assert not (work / "mlruns_fs" / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("Feature extraction").experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
