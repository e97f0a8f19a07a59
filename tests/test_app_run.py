"""AppTest of the Run page: defaults, validation messages, submit, live state, cancel.

``run_every`` timers never fire under AppTest, so the tests wait on the runner and rerun.
The job's method is the test-only fake (tests/fake_method.py): the page, the runner and MLflow
are real.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.fake_method import DEFAULT, GATE, fake_fe  # noqa: F401  (fixture)
from tlcore.jobs import JobState

PAGE = "pages/1_🧪_Run.py"


@pytest.fixture
def page(store_dir, monkeypatch, fake_fe):  # noqa: F811
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def runner_of(store_dir):
    from pages.shared import widgets

    return widgets.runner()


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def run_button(at):
    return at.button(key="run_submit")


def confirm_if_asked(at) -> None:
    """Jobs projected over 10 minutes need a tick first (a loaded test machine may project one)."""
    boxes = [c for c in at.checkbox if c.key == "run_confirm_long"]
    if boxes:
        assert run_button(at).disabled and "projected to take" in " ".join(w.value for w in at.warning)
        boxes[0].check().run()


def test_defaults_are_runnable_and_the_cost_is_shown_before_starting(page):
    assert errors(page) == []
    confirm_if_asked(page)
    assert not run_button(page).disabled
    summary = " ".join(m.value for m in page.markdown)
    assert "**MLflow runs:** 13" in summary  # 4 samples-per-class values x 3 draws + the sweep parent
    # no job has run here yet: the projection comes from timing a forward pass on this machine
    assert "**Projected time:** about " in summary
    assert any("no finished feature extraction job of efficientnet_lite0 on cpu here yet, so from a pace measured "
               "just now on cpu" in c.value for c in page.caption)
    assert any("10 classes, 1,797 images" in c.value for c in page.caption)
    assert page.number_input(key="run_resolution_efficientnet_lite0_digits").value == 64  # 8x8 images: not 224


@pytest.mark.parametrize("method", ["ft", "quanta", "source"])
def test_every_method_has_a_form_whose_defaults_are_runnable(page, method):
    page.radio(key="run_method").set_value(method).run()
    assert not page.exception, page.exception
    confirm_if_asked(page)
    assert errors(page) == [] and not run_button(page).disabled
    summary = " ".join(m.value for m in page.markdown)
    assert "**Compute:**" in summary and "**Projected time:** " in summary and "unknown yet" not in summary
    expected = {"ft": "Freezing configuration", "quanta": "Layer to transfer", "source": "Epochs"}[method]
    labels = [w.label for w in page.selectbox] + [w.label for w in page.number_input] + \
        [w.label for w in page.text_input]
    assert expected in labels


def test_fine_tuning_on_a_cpu_defaults_to_two_points(page):
    page.radio(key="run_method").set_value("ft").run()
    assert page.text_input(key="run_spc_ft").value == "2,10"
    assert any("No GPU here: fine-tuning defaults to 2,10" in c.value for c in page.caption)


def test_a_job_projected_over_ten_minutes_asks_for_a_confirmation(page):
    page.radio(key="run_method").set_value("ft").run()
    page.text_input(key="run_spc_ft").set_value("1,2,5,10,20,50").run()
    page.number_input(key="run_splits_ft").set_value(10).run()
    page.number_input(key="run_resolution_efficientnet_lite0_digits").set_value(224).run()
    warning = " ".join(w.value for w in page.warning)
    assert "This job is projected to take at most" in warning
    assert run_button(page).disabled
    page.checkbox(key="run_confirm_long").check().run()
    assert not run_button(page).disabled


def test_bad_inputs_get_one_sentence_and_disable_run(page):
    page.text_input(key="run_dataset_classes").set_value("cat").run()
    assert errors(page) == ["Class 'cat' is not in dataset 'digits'; use class indices 0-9 or names "
                            "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)."]
    assert run_button(page).disabled
    page.text_input(key="run_dataset_classes").set_value("0-4").run()
    assert errors(page) == [] and not run_button(page).disabled
    page.text_input(key="run_spc_fe").set_value("1,two").run()
    assert errors(page) == ["The 'samples per class' field must be comma-separated integers >= 1 such as 1,2,5,10. "
                            "Got '1,two' instead."]
    assert run_button(page).disabled
    page.text_input(key="run_spc_fe").set_value("500").run()  # more than a class of digits:0-4 can give
    assert len(errors(page)) == 1 and errors(page)[0].startswith("500 samples per class is more than digits:0-4 "
                                                                 "can give")
    assert run_button(page).disabled


def test_a_folder_path_is_checked_as_it_is_typed(page, digits_folder, tmp_path):
    page.selectbox(key="run_dataset_choice").select("📁 A folder on this machine...").run()
    page.text_input(key="run_dataset_folder").set_value(str(tmp_path / "missing")).run()
    assert errors(page)[0].startswith(f"Folder {tmp_path / 'missing'} does not exist")
    assert run_button(page).disabled
    page.text_input(key="run_dataset_folder").set_value(str(digits_folder)).run()
    assert errors(page) == []
    assert any("3 classes, 99 images" in c.value and "split folders train 60, val 15, test 24" in c.value
               for c in page.caption)


def test_run_queues_one_job_and_the_page_shows_its_result(page, store_dir):
    page.text_input(key="run_spc_fe").set_value("5").run()
    run_button(page).click().run()
    assert any("Queued as job #1" in s.value for s in page.success)
    runner = runner_of(store_dir)
    job = runner.wait(runner.jobs()[0].id, timeout=60)
    assert job.state is JobState.FINISHED
    assert job.spec.samples_per_class == (5,) and job.spec.dataset == "digits"
    page.run()  # the poll that run_every would have done
    assert not page.exception
    # the result card in the main column: the headline in % with one decimal, the cost, links onward
    assert any(m.value.startswith("#### ✅ Result of job #1") for m in page.markdown)
    card = next(df.value for df in page.dataframe if "balanced accuracy" in df.value.columns)
    assert card["samples per class"].tolist() == [5] and card["balanced accuracy"].tolist() == ["87.5 %"]
    assert card["95% interval"].tolist() == ["one draw: none"]
    assert any("**compute** 3 GFLOPs" in m.value for m in page.markdown)
    assert any("The result is at the top of the page" in s.value for s in page.success)
    assert len(runner.jobs()) == 1


def test_a_second_click_on_the_same_experiment_does_not_start_a_second_job(page, store_dir):
    DEFAULT["behaviour"] = "gate"
    run_button(page).click().run()
    run_button(page).click().run()
    assert any("already queued or running as job #1" in s.value for s in page.info)
    runner = runner_of(store_dir)
    assert len(runner.jobs()) == 1
    GATE.set()
    runner.wait(runner.jobs()[0].id, timeout=60)


def test_cancel_from_the_page_ends_the_job_and_its_run_killed(page, store_dir):
    DEFAULT["behaviour"] = "gate"
    run_button(page).click().run()
    runner = runner_of(store_dir)
    job_id = runner.jobs()[0].id
    runner.wait_until(lambda jobs: jobs[0].stage.startswith("Step 1"), timeout=60)
    page.run()
    assert page.get("progress")  # the progress bar of the running job
    page.button(key=f"run_cancel_{job_id}").click().run()
    job = runner.wait(job_id, timeout=60)
    assert job.state is JobState.CANCELLED
    assert runner.tracker.get_run(job.run_ids[0]).info.status == "KILLED"
    page.run()
    assert any(i.value.startswith("Cancelled. Its MLflow runs ended KILLED") for i in page.info)


def test_a_failing_job_shows_its_message_on_the_page(page, store_dir):
    DEFAULT["behaviour"] = "user_error"
    run_button(page).click().run()
    runner = runner_of(store_dir)
    runner.wait(runner.jobs()[0].id, timeout=60)
    page.run()
    assert "Class 'cat' is not in dataset 'digits'; use class indices 0-9." in errors(page)
