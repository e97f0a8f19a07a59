"""Issue 16, item 9: the seeds' Keras weight files, written here by Keras itself (keras 3, torch
backend: requirements.txt pins it for the tests), read with h5py into the PyTorch backbones, and
checked against Keras' own outputs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from tlcore.cli import main  # noqa: E402
from tlcore.data.loading import normalize_batch  # noqa: E402
from tlcore.errors import WeightsError  # noqa: E402
from tlcore.models import create_backbone  # noqa: E402
from tlcore.models.keras_weights import _dense, keras_state_dict  # noqa: E402


def _randomise(model, seed: int = 0) -> None:
    """Non-trivial biases and BatchNorm statistics (Keras initialises them to 0 and 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        w = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = w
            layer.set_weights([1 + 0.1 * rng.normal(size=g.shape), 0.1 * rng.normal(size=b.shape),
                               0.1 * rng.normal(size=m.shape), rng.uniform(0.5, 1.5, size=v.shape)])
        elif type(layer).__name__ in ("Conv2D", "Dense") and len(w) == 2:
            layer.set_weights([w[0], 0.05 * rng.normal(size=w[1].shape)])


def quanta_reference(n_classes: int = 10):
    """The QUANTA reference network as the seed's models.py builds it (2024: blocks 64, 128, 512)."""
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    for size in (64, 128, 512):
        for _ in range(2):
            x = layers.BatchNormalization()(layers.Activation("elu")(layers.Conv2D(size, 3, padding="same")(x)))
        x = layers.Dropout(0.3)(layers.MaxPool2D(2)(x))
    x = layers.Dropout(0.5)(layers.Activation("elu")(layers.Dense(2048)(layers.Flatten()(x))))
    return keras.Model(inputs, layers.Dense(n_classes, activation="softmax")(x))


@pytest.fixture(scope="module")
def source_weights(tmp_path_factory):
    """The seed's SourceModel.weights.h5 (Keras 3 layout) and a .keras archive of the same model."""
    keras.utils.set_random_seed(0)
    model = quanta_reference()
    _randomise(model)
    folder = tmp_path_factory.mktemp("keras")
    model.save_weights(folder / "SourceModel.weights.h5")
    model.save(folder / "source.keras")
    return model, folder


def test_the_quanta_reference_network_computes_what_keras_did(source_weights):
    model, folder = source_weights
    x = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(x, training=False).detach().cpu())
    for name in ("SourceModel.weights.h5", "source.keras"):
        bb = create_backbone("quanta_cnn", str(folder / name)).eval()
        xt = normalize_batch(torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.uint8), bb.preprocessing,
                             torch.device("cpu"))
        with torch.no_grad():
            got = torch.softmax(bb(xt), dim=1).numpy()
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_resnet50_from_keras_applications_computes_what_keras_did(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    _randomise(model)
    path = tmp_path / "resnet50.weights.h5"
    model.save_weights(path)
    # the seed's -m file: a legacy HDF5 (keras.applications' downloads have this layout)
    legacy = tmp_path / "resnet50.h5"
    model.save(legacy)
    tap = keras.Model(model.input, model.get_layer("conv3_block1_out").output)  # stride 2 inside
    img = np.random.default_rng(2).integers(0, 256, size=(1, 224, 224, 3)).astype("float32")
    expected = np.asarray(tap(keras.applications.resnet50.preprocess_input(img.copy())).detach().cpu())
    for p in (path, legacy):
        bb = create_backbone("resnet50", str(p)).eval()
        xt = normalize_batch(torch.from_numpy(img).permute(0, 3, 1, 2).to(torch.uint8), bb.preprocessing,
                             torch.device("cpu"))
        got = bb.extract_taps(xt, ["layer2.0"], pool=False)[0].permute(0, 2, 3, 1).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_a_dense_after_flatten_reads_keras_nhwc_rows():
    rng = np.random.default_rng(0)
    h, w, c, out = 2, 3, 4, 5
    fmap = rng.normal(size=(h, w, c)).astype("float32")  # what Keras' Flatten sees (NHWC)
    kernel = rng.normal(size=(h * w * c, out)).astype("float32")
    expected = fmap.reshape(-1) @ kernel
    got = _dense(kernel, (h, w, c)).numpy() @ fmap.transpose(2, 0, 1).reshape(-1)  # PyTorch flattens NCHW
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_vgg16_convolutions_from_keras_applications(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    _randomise(model)
    model.save_weights(tmp_path / "vgg16.weights.h5")
    tap = keras.Model(model.input, model.get_layer("block2_conv2").output)
    img = np.random.default_rng(3).integers(0, 256, size=(1, 32, 32, 3)).astype("float32")
    expected = np.asarray(tap(keras.applications.vgg16.preprocess_input(img.copy())).detach().cpu())
    bb = create_backbone("vgg16", str(tmp_path / "vgg16.weights.h5")).eval()
    xt = normalize_batch(torch.from_numpy(img).permute(0, 3, 1, 2).to(torch.uint8), bb.preprocessing,
                         torch.device("cpu"))
    got = bb.extract_taps(xt, ["features.8"], pool=False)[0].permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-2)


def test_an_unmappable_keras_file_is_one_sentence_saying_what_it_holds(source_weights, capsys, store_dir):
    _, folder = source_weights
    with pytest.raises(WeightsError, match=r"holds 14 layer\(s\) with weights \(batch_normalization, .*which do "
                                           r"not map onto vgg16: no layer 'block1_conv1'"):
        keras_state_dict(folder / "SourceModel.weights.h5", "vgg16")
    # fine_tuning.py -a ResNet50 --source ImageNet -m <a file of another network> -d ...
    assert main(["ft", "-a", "ResNet50", "--source", "ImageNet", "-m", str(folder / "SourceModel.weights.h5"),
                 "-d", "digits:0-1", "--model-selection", "-e", "1", "--resolution", "32", "--mlflow-path",
                 str(store_dir), "--quiet", "--no-energy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not map onto resnet50: no layer 'conv1_conv'" in err[0], err
    from tlcore.tracking import Tracker

    assert Tracker(str(store_dir)).experiment_id("Fine-tuning", create=False) is None  # no run was opened


def _write_mnist(root, name: str, per_class: int) -> None:
    """Tiny MNIST-format files where torchvision looks for them (nothing downloads)."""
    raw = root / name / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", per_class * 10), ("t10k", per_class * 10)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = (rng.integers(0, 60, size=(n, 28, 28)) + labels[:, None, None] * 19).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, n, 28, 28], ">i4").tobytes() + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], ">i4").tobytes() + labels.tobytes())


def test_seed_transfer_and_train_source_command_lines_with_keras_files(source_weights, tmp_path, store_dir,
                                                                       monkeypatch):
    _, folder = source_weights
    data = tmp_path / "data"
    _write_mnist(data, "mnist", 3)
    _write_mnist(data, "fashion_mnist", 3)
    monkeypatch.chdir(tmp_path)
    shutil.copy(folder / "SourceModel.weights.h5", tmp_path)
    fast = ["--data-dir", str(data), "--mlflow-path", str(store_dir), "--no-energy", "--quiet", "--num-workers", "0"]
    # transfer.py -o ./expe -s mnist -sw SourceModel.weights.h5 -t fashion_mnist -l 0 -r 1 --seed 42 --nb_of_samples 2
    assert main(["quanta", "-o", "./expe", "-s", "mnist", "-sw", "SourceModel.weights.h5", "-t", "fashion_mnist",
                 "-l", "0", "-r", "1", "--seed", "42", "--nb_of_samples", "2", "--nb_of_epochs", "1", *fast]) == 0
    out = tmp_path / "expe" / "mnist_to_fashion_mnist"
    assert (out / "quantas_r_0_l_0.jsonl").is_file()
    source_test = (out / "testing_metrics_of_source_r_0_l_0.jsonl").read_text()
    assert '"categorical_accuracy"' in source_test and '"task": "mnist"' in source_test
    # train_source_model.py -o ./expe -s mnist --seed 42 --nb_of_samples 2 --train_from_previous_training source.keras
    assert main(["train-source", "-o", "./expe", "-s", "mnist", "--seed", "42", "--nb_of_samples", "2",
                 "--train_from_previous_training", str(folder / "source.keras"), *fast]) == 0
    exported = tmp_path / "expe" / "mnist_training"
    assert sorted(p.name for p in exported.iterdir()) == ["source.pt", "testing_metrics_of_source.jsonl",
                                                          "training_metrics_of_source.jsonl"]
    import json

    training = json.loads((exported / "training_metrics_of_source.jsonl").read_text())
    assert list(training) == ["0"] and "categorical_accuracy" in training["0"]
