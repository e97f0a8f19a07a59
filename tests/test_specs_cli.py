"""Spec validation messages and the CLI's exit codes (one line on stderr, no traceback)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tlcore.cli import main
from tlcore.errors import SpecError
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams, QuantaParams


def test_spec_messages_name_parameter_owner_range_and_value():
    with pytest.raises(SpecError) as e:
        ExperimentSpec("ft", "digits", params=FineTuningParams(learning_rate=-1.0)).validate()
    assert str(e.value) == ("The 'learning_rate' parameter of FineTuningParams must be a float in the range "
                            "(0, inf). Got -1.0 instead.")
    with pytest.raises(SpecError, match=r"'epochs' parameter of FineTuningParams must be an int in the range \[1, inf"):
        ExperimentSpec("ft", "digits", params=FineTuningParams(epochs=0)).validate()
    with pytest.raises(SpecError, match="'configuration' parameter of FineTuningParams must be one of 0, 1, 2, 3, "
                                        "'lp-ft'. Got 7"):
        ExperimentSpec("ft", "digits", params=FineTuningParams(configuration=7)).validate()
    with pytest.raises(SpecError, match="'batch_size' parameter of ExperimentSpec"):
        ExperimentSpec("fe", "digits", batch_size=0).validate()
    with pytest.raises(SpecError, match="'samples_per_class' parameter of ExperimentSpec must be a non-empty tuple"):
        ExperimentSpec("fe", "digits", samples_per_class=(0, 5)).validate()
    with pytest.raises(SpecError, match="'method' parameter of ExperimentSpec must be one of 'fe', 'ft'"):
        ExperimentSpec("transfer", "digits").validate()
    with pytest.raises(SpecError, match="'standardize' parameter of FeatureExtractionParams"):
        ExperimentSpec("fe", "digits", params=FeatureExtractionParams(standardize="test")).validate()
    with pytest.raises(SpecError, match="'layer_to_transfer' parameter of QuantaParams"):
        ExperimentSpec("quanta", "digits", params=QuantaParams(layer_to_transfer=-3)).validate()
    with pytest.raises(SpecError, match="Did you mean 'resnet18'"):
        ExperimentSpec("fe", "digits", backbone="resnet19").validate()
    with pytest.raises(SpecError, match="'resolution' parameter of ExperimentSpec must be 224 for vit_b_16"):
        ExperimentSpec("fe", "digits", backbone="vit_b_16", resolution=128).validate()


def test_spec_roundtrips_through_a_dict():
    spec = ExperimentSpec("fe", "digits:0-4", samples_per_class=(1, 5), params=FeatureExtractionParams(
        classifier="svc", taps=("_blocks.0", "_bn1")))
    again = ExperimentSpec.from_dict(spec.to_dict())
    assert again == spec and again.validate() is again


def test_defaults_are_the_seeds():
    ft = FineTuningParams()
    assert (ft.optimizer, ft.learning_rate, ft.momentum, ft.weight_decay, ft.epochs, ft.patience) == (
        "sgd", 0.01, 0.9, 1e-4, 40, 3)
    fe = FeatureExtractionParams()
    assert (fe.classifier, fe.threshold_high, fe.threshold_low) == ("auto", 0.15, -0.25)
    assert ExperimentSpec("fe", "digits").batch_size == 64


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tlcore", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.slow
def test_cli_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    r = _cli("fe", "--dataset", "digits", "--backbone", "resnet81", "--mlflow-path", str(tmp_path / "res"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert "resnet18" in r.stderr
    r = _cli("predict", "--backbone", "resnet18", str(tmp_path / "cat.png"))
    assert r.returncode == 2 and "not on this machine" in r.stderr and "Traceback" not in r.stderr
    r = _cli("predict", "--debug", "--backbone", "resnet18", str(tmp_path / "cat.png"))
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_cli_bad_flag_value_is_argparse_exit_2():
    r = _cli("fe", "--dataset", "digits", "--samples-per-class", "1,x")
    assert r.returncode == 2 and "comma-separated integers" in r.stderr


def test_cli_unexpected_errors_exit_1_and_say_it_is_a_bug(monkeypatch, capsys):
    import tlcore.cli as cli

    def boom(args):
        raise RuntimeError("kaput")

    monkeypatch.setattr(cli.tools, "cmd_datasets", boom)
    assert cli.main(["datasets"]) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: kaput" in err and "--debug" in err


def test_cli_backbones_lists_every_backbone_with_resnet18_at_3_63_gflops():
    r = _cli("backbones")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line and not line.startswith(("-", "name"))}
    assert "resnet18" in lines and " 3.63 " in lines["resnet18"]
    assert "yes" in lines["efficientnet_lite0"] and "no" in lines["vit_b_16"]
    assert {"quanta_cnn", "vgg16", "convnext_tiny", "mobilenet_v3_large", "efficientnet_b0"} <= set(lines)


def test_cli_splits_writes_seed_csvs(digits_folder, tmp_path):
    out = tmp_path / "splits"
    assert main(["splits", "--dataset", str(digits_folder), "--out", str(out), "--samples-per-class", "1,2"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "train_samples_02_split_4.csv" in names and "val.csv" in names
    rows = list(csv.reader(open(out / "test.csv")))
    assert len(rows) == 24 and all(len(r) == 4 for r in rows)


def test_cli_splits_on_an_embedded_dataset_explains_why_not(capsys):
    assert main(["splits", "--dataset", "digits", "--out", "/tmp/never"]) == 2
    assert "not a folder dataset" in capsys.readouterr().err


def test_output_piped_into_head_is_not_reported_as_a_bug():
    import subprocess
    import sys

    # `true` closes the pipe before the command writes: every write meets a closed pipe
    out = subprocess.run(f"{sys.executable} -m tlcore methods | true", shell=True, capture_output=True, text=True,
                         timeout=120)
    assert out.stderr == ""
