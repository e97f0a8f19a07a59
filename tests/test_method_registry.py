"""A method is one record: a toy method in one new module (with its params class) shows up on the Run page,
in ``python -m tlcore methods``, as a CLI command and in the results labels, without touching any other file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tlcore.methods import base

ROOT = Path(__file__).resolve().parents[1]
RUN_PAGE = "pages/1_🧪_Run.py"

TOY_MODULE = '''
"""A toy method: logs one MLflow run with a made-up accuracy that follows its one parameter."""
from dataclasses import dataclass

from tlcore.methods.base import Method, RunResult, register


@dataclass
class ToyParams:
    strength: int = 3
    shout: bool = False

    def validate(self):
        if self.strength < 1:
            raise ValueError("strength must be >= 1")

    def to_dict(self):
        return {"strength": self.strength, "shout": self.shout}


def run_toy(spec, reporter, tracker):
    params = {"method": spec.method, "dataset": spec.dataset, "backbone": spec.backbone, "device": "cpu",
              "strength": spec.params.strength}
    with tracker.start_run(spec.method, params, run_name="toy") as run:
        accuracy = 1 - 1 / (1 + spec.params.strength)
        run.log_metrics({"test_accuracy": accuracy, "time_total_s": 0.01})
    return RunResult(spec.method, [run.run_id], metrics={"test_accuracy": accuracy}, summary="Toy done.")


register(Method(name="toy", label="Toy method", params=ToyParams, run=run_toy,
                blurb="A method that exists only in a test.", cli_help="a toy method (tests only)"))
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy module on the path and registered, the registry restored afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_method_plugin.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(base.methods, "_entries", dict(base.methods._entries))
    monkeypatch.delitem(sys.modules, "toy_method_plugin", raising=False)
    monkeypatch.setenv(base.PLUGINS_ENV, "toy_method_plugin")
    base.load_plugins()
    yield folder


def test_the_toy_method_is_registered_with_its_record(toy):
    assert "toy" in base.names()
    record = base.get("toy")
    assert record.experiment == "Toy method" and record.noun == "toy method"
    fields = {f.name: f for f in record.form_fields()}
    assert fields["strength"].kind == "int" and fields["strength"].default == 3
    assert fields["shout"].kind == "bool"


def test_python_m_tlcore_methods_lists_a_plugin(toy):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy), str(ROOT)]), base.PLUGINS_ENV: "toy_method_plugin"}
    out = subprocess.run([sys.executable, "-m", "tlcore", "methods"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:2] == ["toy", "toy"] and "Toy method" in line and "ToyParams" in line
               for line in out.stdout.splitlines())
    assert any(line.split()[:2] == ["fe", "fe"] for line in out.stdout.splitlines())


def test_a_missing_plugin_is_one_sentence_naming_the_variable():
    with pytest.raises(Exception, match=r"no_such_plugin.*TLCORE_PLUGINS.*cannot be imported"):
        base.load_plugins({base.PLUGINS_ENV: "no_such_plugin"})


def test_the_cli_runs_the_toy_method_and_the_results_label_it(toy, tmp_path, capsys):
    from tlcore import results
    from tlcore.cli import main

    store = tmp_path / "store"
    assert main(["toy", "--dataset", "digits", "--mlflow-path", str(store), "--strength", "9", "--quiet"]) == 0
    assert "Toy done." in capsys.readouterr().out
    uri = f"sqlite:///{store / 'mlflow.db'}"
    runs = results.load_runs(uri, results.RunColumns(metrics=("test_accuracy",), params=("strength",)))
    toy_runs = runs[runs["method"] == "toy"]
    assert len(toy_runs) == 1 and toy_runs["test_accuracy"].iloc[0] == pytest.approx(0.9)
    assert toy_runs["strength"].iloc[0] == "9"
    assert results.METHOD_LABELS["toy"] == "Toy method"


def test_the_run_page_draws_the_toy_methods_form_and_queues_it(toy, store_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from pages.shared import widgets
    from tlcore.jobs import JobState

    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page(RUN_PAGE).run()
    assert "Toy method" in at.radio(key="run_method").options
    at.radio(key="run_method").set_value("toy").run()
    assert not at.exception, at.exception
    assert "A method that exists only in a test." in [c.value for c in at.caption]
    assert "Strength" in [n.label for n in at.number_input] and "Shout" in [c.label for c in at.checkbox]
    assert "Samples per class" not in [t.label for t in at.text_input]  # not a sweep method: no protocol
    at.number_input(key="run_p_toy_strength_efficientnet_lite0").set_value(4).run()
    at.button(key="run_submit").click().run()
    assert any("Queued as job #1" in s.value for s in at.success), [e.value for e in at.error]
    runner = widgets.runner()
    job = runner.wait(runner.jobs()[0].id, timeout=60)
    assert job.state is JobState.FINISHED and job.spec.params.strength == 4
    assert job.label.startswith("Toy method · digits")
