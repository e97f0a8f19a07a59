"""What the Guidelines page says, word for word, for hand-made situations: the projection's assumptions and
option labels, the sentences built from the user's runs, the accuracy note, the alternatives' notes,
the answer checks, and the rules file's loading (a missing file, an edited one)."""

from __future__ import annotations

import os
import shutil

import pytest

from tlcore.errors import SpecError
from tlcore.guidelines import (
    RULES_PATH,
    Comparison,
    Evidence,
    GuidelineError,
    Situation,
    Speed,
    gpu_speed,
    load_rules,
    project_costs,
    recommend,
    same_task_family,
    situation_facts,
)

SPEED = Speed(flops_per_s_fe=1e11, flops_per_s_ft=5e10, watts=50.0, how="measured here")
FT_FLOPS = {0: 3e9, 2: 2e9, "lp-ft": 3e9, 7: 1e9}


def test_the_projection_lists_its_assumptions_and_labels_each_option():
    s = Situation(samples_per_class=10, num_classes=3, epochs=4, use_crops=True, backbone="resnet18")
    p = project_costs(s, SPEED, 1e9, FT_FLOPS)
    assert p.assumptions == (
        "30 labelled images (10 per class x 3 classes), 10 crops each.",
        "Fine-tuning runs 4 epochs (an upper bound: early stopping usually ends sooner); LP-FT spends the first 4 of "
        "them on a linear probe.",
        "FLOPs counted for resnet18 at its input size (forward for FE; forward + backward of the trained layers for "
        "FT).",
        "Speed: measured here.",
        "Energy: 50 W x time; an estimate, like every energy figure on a machine without power counters.",
    )
    assert [o.label for o in p.options] == [
        "Feature extraction (every layer, linear classifier)", "FT, configuration 0 (train everything)",
        "FT, configuration 2 (freeze ~1/2)", "LP-FT (linear probe, then fine-tune everything)", "FT, configuration 7"]
    lpft = p.option("ft", "lp-ft")  # the 5-epoch probe is capped by the run's 4 epochs: all 4 are probe epochs
    assert lpft.flops == 300 * 4 * 1e9
    assert p.option("ft", 2).energy_kwh == pytest.approx(50 * (300 * 4 * 2e9 / 5e10) / 3.6e6, rel=1e-12)
    with pytest.raises(KeyError):
        p.option("ft", 3)
    unknown = project_costs(Situation(samples_per_class=10, num_classes=3), None, 1e9, FT_FLOPS)
    assert unknown.assumptions[0] == "30 labelled images (10 per class x 3 classes)."
    assert unknown.assumptions[3] == ("Speed: not known yet (no finished job of this backbone on this machine); "
                                      "only the compute is projected.")
    assert unknown.assumptions[4] == "Energy: not projected (no power figure for this device)."
    assert all(o.seconds is None and o.energy_kwh is None for o in unknown.options)
    no_power = project_costs(s, Speed(1e11, 5e10, None, "x"), 1e9, FT_FLOPS)
    assert no_power.assumptions[4] == "Energy: not projected (no power figure for this device)."
    assert no_power.option("fe").seconds == pytest.approx(300 * 1e9 / 1e11) and no_power.option("fe").energy_kwh is None


def test_gpu_speed_is_exact():
    assert gpu_speed("a100").flops_per_s_ft == pytest.approx(312e12 * 0.3, rel=1e-12)
    assert gpu_speed("t4").how == ("NVIDIA T4: rated 65 TFLOP/s (dense bf16/fp16) x an assumed 30% utilisation, at its "
                                   "70 W board power")


def test_without_a_projection_the_budget_is_not_judged():
    s = Situation(samples_per_class=100, num_classes=10, budget_hours=1e-9)
    facts = situation_facts(s, None)
    assert facts["ft_fits_budget"] is True and facts["fe_fits_budget"] is True


@pytest.mark.parametrize(("a", "b", "same"), [
    ("digits:5-9", "digits", True), ("digits:0-4", "digits:5-9", True), ("/data/pets/", "/data/pets", True),
    ("cifar10", "cifar100", False), (None, "digits", False),
    ("digits", None, False), ("", "", False), ("lfw_faces", "digits", False)])
def test_quanta_runs_speak_about_the_same_dataset_only(a, b, same):
    assert same_task_family(a, b) is same


EV = dict(dataset="digits", backbone="efficientnet_lite0")


def comparison(**changes) -> Comparison:
    base = dict(dataset="digits", backbone="efficientnet_lite0", strength="strong", spc=20, near=True,
                measured_range=(1, 50), fe_variant="FE linearsvc", ft_configuration=3, fe=(0.88, 0.86, 0.90),
                ft=(0.93, 0.92, 0.94), diff=0.05, diff_low=0.03, diff_high=0.07, n_pairs=3, verdict="ft_higher")
    return Comparison(**{**base, **changes})


def test_the_users_runs_give_the_reason_word_for_word():
    cross = Evidence(**EV, comparison=comparison(near=False, spc=50), crossover=(12.0, 10.0, 15.0, 2))
    at = recommend(Situation(samples_per_class=15, num_classes=10, dataset="digits"), evidence=cross)
    assert (at.method, at.configuration, at.layers) == ("ft", 2, None)  # at the top of the crossover: fine-tune
    assert at.reasons[0].text == ("In your runs on digits with efficientnet_lite0, fine-tuning (configuration 2) "
                                  "overtook feature extraction between 10 and 15 samples per class (95% intervals); "
                                  "you have 15.")
    below = recommend(Situation(samples_per_class=10, num_classes=10), evidence=cross)
    assert (below.method, below.configuration, below.layers) == ("fe", None, "all")
    assert below.reasons[0].text == ("In your runs on digits with efficientnet_lite0, fine-tuning overtook feature "
                                     "extraction only between 10 and 15 samples per class; you have 10.")
    measured = Evidence(**EV, comparison=comparison())
    ft = recommend(Situation(samples_per_class=20, num_classes=10, domain="medical"), evidence=measured)
    assert (ft.method, ft.configuration) == ("ft", 3)  # the measured configuration, not the domain's advice
    assert ft.reasons[0].text == ("In your runs on digits with efficientnet_lite0 at 20 samples per class, "
                                  "fine-tuning (configuration 3) scored higher than feature extraction: feature "
                                  "extraction 88.0%, fine-tuning (configuration 3) 93.0% (FT - FE +5.0 points, 95% "
                                  "interval +3.0 to +7.0 over 3 draws).")
    one = Evidence(**EV, comparison=comparison(diff_low=float("nan"), diff_high=float("nan"), n_pairs=1,
                                               verdict="not_resolved"))
    tie = recommend(Situation(samples_per_class=20, num_classes=10), evidence=one)
    assert tie.method == "fe" and tie.reasons[0].text == (
        "In your runs on digits with efficientnet_lite0 at 20 samples per class, feature extraction and fine-tuning "
        "(configuration 3) were not separated (the interval includes 0): feature extraction 88.0%, fine-tuning "
        "(configuration 3) 93.0% (FT - FE +5.0 points from 1 draw, too few for an interval). With no measured "
        "difference, the cheaper option wins.")
    beyond = recommend(Situation(samples_per_class=51, num_classes=10, domain="medical"),
                       evidence=Evidence(**EV, comparison=comparison(near=False)))
    assert beyond.fired[0] == "enough-labels-same-distribution" and beyond.configuration == 0  # past what was measured


def test_a_generic_rule_that_agrees_with_the_users_runs_is_kept_as_the_second_reason():
    ev = Evidence(**EV, comparison=comparison(spc=5, fe=(0.9, 0.88, 0.92), ft=(0.5, 0.45, 0.55), diff=-0.4,
                                              diff_low=-0.45, diff_high=-0.35, verdict="fe_higher"))
    rec = recommend(Situation(samples_per_class=5, num_classes=10, domain="medical", tuning_time="days"),
                    evidence=ev)
    assert [r.rule_id for r in rec.reasons] == ["measured-in-your-runs", "far-domain-few-labels",
                                                "pick-the-better-imagenet-backbone"]
    assert rec.reasons[1].text == load_rules().rule("far-domain-few-labels").because  # not "(The generic rule..."
    assert rec.reasons[0].source.citation == "Measured in your runs" and not rec.pilot


def test_budget_forced_fe_is_not_overruled_by_runs_that_favour_fine_tuning():
    s = Situation(samples_per_class=100, num_classes=10, budget_hours=0.1)
    ev = Evidence(**EV, comparison=comparison(spc=100))
    rec = recommend(s, projection=project_costs(s, SPEED, 1e9, FT_FLOPS), evidence=ev)
    assert rec.method == "fe" and rec.fired[0] == "ft-over-budget" and "measured-in-your-runs" not in rec.fired


def test_pilot_and_advice_follow_the_tuning_time():
    quick = recommend(Situation(samples_per_class=100, num_classes=10, tuning_time="none"))
    assert quick.pilot and {"little-tuning-time-score-then-pilot", "scores-are-not-verdicts"} <= set(quick.fired)
    slow = recommend(Situation(samples_per_class=100, num_classes=10, tuning_time="days"))
    assert not slow.pilot and "scores-are-not-verdicts" not in slow.fired
    assert slow.fired == ["enough-labels-same-distribution", "output-shift-freeze-early",
                          "pick-the-better-imagenet-backbone"]


def test_alternatives_compare_compute_when_the_pace_is_unknown():
    s = Situation(samples_per_class=10, num_classes=10, domain="medical", epochs=2)
    rec = recommend(s, projection=project_costs(s, None, 1e9, {0: 3e9, 2: 0.25e9}))
    assert rec.chosen_cost.method == "fe" and rec.chosen_cost.flops == 100 * 1e9
    notes = {o.configuration: note for o, note in rec.alternatives}
    assert notes == {0: "6.0x the compute", 2: "2.0x less compute"}  # 100 x 2 x 3e9 / 1e11; 100 x 2 x .25e9 / 1e11
    timed = recommend(s, projection=project_costs(s, SPEED, 1e9, {0: 3e9, 2: 0.25e9}))
    # FE 1 s; FT 0: 600 GFLOP / 50 TFLOP/s = 12 s; FT 2: 1 s: as fast as FE
    assert {o.configuration: n for o, n in timed.alternatives} == {0: "12.0x the time", 2: "1.0x the time"}
    ft = Situation(samples_per_class=100, num_classes=10, epochs=2)
    ft_rec = recommend(ft, projection=project_costs(ft, SPEED, 1e9, {0: 3e9, 2: 2e9}))
    assert (ft_rec.chosen_cost.method, ft_rec.chosen_cost.configuration) == ("ft", 2)
    assert [(o.method, n) for o, n in ft_rec.alternatives] == [("fe", "8.0x less time"), ("ft", "1.5x the time")]


def test_the_accuracy_note_from_runs_near_the_users_labels():
    ev = Evidence(**EV, comparison=comparison(spc=10, fe=(0.8, 0.75, 0.85), ft=(0.6, 0.5, 0.7), verdict="fe_higher",
                                              diff=-0.2, diff_low=-0.3, diff_high=-0.1))
    fe = recommend(Situation(samples_per_class=5, num_classes=10), evidence=ev)  # 10 is within x2 of 5
    assert fe.accuracy_note == ("75%-85% (balanced accuracy of your runs on digits at 10 samples per class: mean "
                                "80.0%, 95% interval over draws)")
    one_split = Evidence(**EV, comparison=comparison(spc=10, fe=(0.8, float("nan"), float("nan")), verdict="fe_higher",
                                                     ft=(0.6, float("nan"), float("nan"))))
    assert recommend(Situation(samples_per_class=10, num_classes=10), evidence=one_split).accuracy_note == (
        "about 80% (balanced accuracy of your runs on digits at 10 samples per class; one draw, so no interval yet)")
    wide = Evidence(**EV, comparison=comparison(spc=10, fe=(0.98, 0.93, 1.03), verdict="fe_higher"))
    assert recommend(Situation(samples_per_class=10, num_classes=10), evidence=wide).accuracy_note.startswith(
        "93%-100%")  # never above 100 %
    far = recommend(Situation(samples_per_class=21, num_classes=10),
                    evidence=Evidence(**EV, comparison=comparison(spc=10, near=False)))
    assert far.accuracy_note.startswith("Not measured near 21 samples per class")
    none = recommend(Situation(samples_per_class=10, num_classes=10), evidence=Evidence(**EV))
    assert none.accuracy_note == ("Not known yet: no published source gives an accuracy for your data, and your "
                                  "store has no comparable runs. The pilot measures it.")


@pytest.mark.parametrize(("changes", "message"), [
    ({"samples_per_class": 0}, "The 'samples per class' answer must be an integer >= 1. Got 0 instead."),
    ({"samples_per_class": 2.5}, "The 'samples per class' answer must be an integer >= 1. Got 2.5 instead."),
    ({"num_classes": 1}, "The 'number of classes' answer must be an integer >= 2. Got 1 instead."),
    ({"num_classes": "3"}, "The 'number of classes' answer must be an integer >= 2. Got '3' instead."),
    ({"domain": "space"}, "The 'domain' answer must be one of imagenet_like, fine_grained, scenes, textures, medical, "
                          "satellite, art, documents. Got 'space' instead."),
    ({"device": "tpu"}, "The 'device' answer must be this_machine or one of t4, l4, v100, a100, h100. Got 'tpu' "
                        "instead."),
    ({"tuning_time": "weeks"}, "The 'time for tuning' answer must be one of none, hours, days. Got 'weeks' instead."),
    ({"budget_hours": 0}, "The 'budget hours' answer must be a positive number (or empty for no limit). Got 0 "
                          "instead."),
    ({"budget_kwh": "a lot"}, "The 'budget kWh' answer must be a positive number (or empty for no limit). Got 'a lot' "
                              "instead."),
    ({"epochs": 0}, "The 'epochs' answer must be an integer >= 1. Got 0 instead."),
    ({"epochs": 1.5}, "The 'epochs' answer must be an integer >= 1. Got 1.5 instead."),
])
def test_each_bad_answer_gets_its_own_sentence(changes, message):
    with pytest.raises(SpecError) as err:
        Situation(**{"samples_per_class": 10, "num_classes": 10, **changes}).validate()
    assert str(err.value) == message


def test_good_edge_answers_pass():
    s = Situation(samples_per_class=1, num_classes=2, device="h100", budget_hours=0.5, budget_kwh=2, epochs=1)
    assert s.validate() is s


def test_a_missing_rules_file_and_an_edited_one(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(GuidelineError) as err:
        load_rules(missing)
    assert str(err.value) == f"Guideline rules file {missing} does not exist."
    copy = tmp_path / "rules.yaml"
    shutil.copy(RULES_PATH, copy)
    assert load_rules(copy).rule("far-domain-few-labels").when["samples_per_class"] == {"max": 20}
    copy.write_text(copy.read_text().replace("when: {shift: input, samples_per_class: {max: 20}}",
                                             "when: {shift: input, samples_per_class: {max: 7}}"))
    later = os.stat(copy).st_mtime + 10
    os.utime(copy, (later, later))
    assert load_rules(copy).rule("far-domain-few-labels").when["samples_per_class"] == {"max": 7}  # not the cached one
