"""The embedded examples end to end: ``python -m tlcore examples --quick`` fills a store that the
analysis views read back (FE and FT curves, a source, QUANTA with its random-source control)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest

from tlcore import results
from tlcore.cli import main
from tlcore.examples import QUANTA_LR, QUICK, example_specs
from tlcore.specs import ExperimentSpec
from tlcore.tracking import resolve_tracking_uri


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick grid through the CLI, in process: (store folder, exit status, stdout)."""
    store = tmp_path_factory.mktemp("examples") / "results"
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        rc = main(["examples", "--quick", "--quiet", "--mlflow-path", str(store)])
    return store, rc, out.getvalue()


def test_every_example_spec_of_both_grids_is_valid(tmp_path):
    for quick_grid in (False, True):
        for _, spec in example_specs(str(tmp_path), quick=quick_grid):
            spec = spec if isinstance(spec, ExperimentSpec) else spec("0" * 32)
            assert spec.validate() is spec
            if spec.method == "quanta":
                assert spec.params.quanta_lr == QUANTA_LR and spec.params.layer_to_transfer == -1
            if spec.method == "ft":  # the default recipe: early stopping, not a fixed epoch count
                assert spec.params.epochs == 40 and spec.params.early_stop_from_epoch == 11


@pytest.mark.slow
def test_the_command_prints_one_line_per_example_and_where_to_look(quick):
    store, rc, out = quick
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("6 examples, 14 MLflow runs")
    summary = lines[1:7]
    assert summary[0].startswith("  feature extraction curve: test accuracy ")
    assert "at 2, " in summary[0] and "at 5 samples per class" in summary[0]
    assert "(4 run(s): 4 converged;" in summary[0]  # every line says what its runs earned
    assert summary[1].startswith("  fine-tuning curve, configuration 0: test accuracy ")
    assert summary[2].startswith("  fine-tuning curve, configuration 2: test accuracy ")
    assert summary[3].startswith(f"  source training on digits {QUICK.source_classes}: test accuracy ")
    assert "trained source: target test accuracy" in summary[4] and "final lambda_S, layers 0..6: " in summary[4]
    assert "random source (control): target test accuracy" in summary[5]
    assert "against the control: layer 0 " in summary[5]  # each layer's verdict against the control
    assert f"TLCORE_MLFLOW_PATH={store} streamlit run app.py" in out
    assert "Trade-offs" in out and "Quanta" in out and "Runs" in out


@pytest.mark.slow
def test_the_runs_read_back_as_the_analysis_pages_read_them(quick):
    store, rc, _ = quick
    assert rc == 0
    uri = resolve_tracking_uri(str(store))

    runs = results.load_view(uri, "runs")
    assert len(runs) == 14 and set(runs["status"]) == {"FINISHED"}
    assert runs["is_sweep_parent"].sum() == 3  # the FE curve and the two FT curves
    assert runs["quality"].notna().all()  # every finished run carries its verdict

    curves = results.learning_curves(results.load_view(uri, "tradeoffs"))
    assert set(curves["variant"]) == {"FE auto", "FT config 0", "FT config 2"}
    for variant, curve in curves.groupby("variant"):
        assert curve["spc"].tolist() == list(QUICK.fe_spc if variant.startswith("FE") else QUICK.ft_spc)
        assert curve["mean"].between(0, 1).all()
    fe_at_5 = curves[(curves["variant"] == "FE auto") & (curves["spc"] == 5)]["mean"].item()
    assert fe_at_5 > 0.5  # ImageNet features on digits, 5 per class: far above chance (0.1)

    quanta_view = results.load_view(uri, "quanta")
    source = quanta_view[quanta_view["method"] == "source"]
    assert len(source) == 1 and source["status"].item() == "FINISHED" and source["test_accuracy"].item() > 0.5
    quanta_runs = quanta_view[quanta_view["method"] == "quanta"]
    trained = quanta_runs[quanta_runs["source_kind"] == results.TRAINED_SOURCE]
    assert trained["source_weights"].tolist() == source["run_id"].tolist()  # QUANTA read the source trained before
    assert quanta_runs["quanta_lr"].astype(float).tolist() == [QUANTA_LR, QUANTA_LR]

    summary = results.quanta_summary(results.quanta_values(quanta_view), results.layer_hint(quanta_view))
    assert set(summary["source_kind"]) == {results.TRAINED_SOURCE, results.RANDOM_SOURCE}
    for _, kind in summary.groupby("source_kind"):
        assert kind["layer"].tolist() == [str(i) for i in range(7)]  # quanta_cnn: 6 convolutions + the dense layer
        assert kind["mean"].between(0, 1).all() and kind["n"].eq(QUICK.quanta_runs).all()
    # trained with its own learning rate, lambda_S has left its initial value 0.9002 on some layer
    assert (summary["mean"] - 0.9002).abs().max() > 1e-3
    assert results.quanta_caveat(summary) is None  # the control is there: no warning on the Quanta page

