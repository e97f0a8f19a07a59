"""Guideline rules: the file is well formed, every rule is reachable and cited, evaluation on hand-made
situations, projection arithmetic, and the user's runs overriding a generic rule."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import yaml

from tlcore.errors import SpecError
from tlcore.guidelines import (
    DOMAINS,
    MEDIUM,
    PRIOR,
    RULES_PATH,
    STRONG,
    WEAK,
    Comparison,
    Evidence,
    EvidenceItem,
    GuidelineError,
    Situation,
    Speed,
    _parse,
    gpu_speed,
    load_rules,
    project_costs,
    recommend,
)

SPEED = Speed(flops_per_s_fe=1e11, flops_per_s_ft=5e10, watts=50.0, how="test speed")
FE_FLOPS = 1e9
FT_FLOPS = {0: 3e9, 1: 2.5e9, 2: 2e9, 3: 1.5e9, "lp-ft": 3e9}


def _projection(s: Situation):
    return project_costs(s, SPEED, FE_FLOPS, FT_FLOPS)


def _grid():
    for spc, domain, shift, tuning, budget in itertools.product(
            (1, 10, 20, 21, 100), DOMAINS, (False, True), ("none", "hours", "days"), (None, 0.01, 1.0, 1e-9)):
        s = Situation(samples_per_class=spc, num_classes=10, domain=domain, deployment_shift=shift,
                      tuning_time=tuning, budget_hours=budget)
        yield s, recommend(s, projection=_projection(s))


def test_rules_file_is_well_formed_and_every_rule_cites_a_source():
    book = load_rules()
    assert len(book.rules) >= 10
    for rule in book.rules:
        assert rule.source in book.sources, rule.id
        src = book.sources[rule.source]
        assert src.citation and src.finding
        assert rule.because.endswith(".")
    raw = yaml.safe_load(RULES_PATH.read_text())
    published = {k for k, v in raw["sources"].items() if k not in ("cost_projection", "your_runs")}
    assert published == {"kornblith2019", "kumar2022", "evci2022", "lee2023", "you2021", "agostinelli2022"}


def test_every_rule_is_reachable():
    fired = set()
    for _, rec in _grid():
        fired.update(rec.fired)
    every = {r.id for r in load_rules().rules}
    assert every <= fired, f"never fired: {sorted(every - fired)}"


def test_every_recommendation_rests_on_a_cited_reason():
    for s, rec in _grid():
        assert rec.reasons, s
        assert all(r.source.citation for r in rec.reasons)
        assert rec.method in ("fe", "ft")
        if rec.method == "ft":
            assert rec.configuration in (0, 1, 2, 3, "lp-ft")


def test_few_labels_far_domain_gets_feature_extraction_from_head2toe():
    s = Situation(samples_per_class=20, num_classes=5, domain="medical")
    rec = recommend(s, projection=_projection(s))
    assert rec.method == "fe" and rec.layers == "all"
    assert rec.fired[0] == "far-domain-few-labels" and "Head2Toe" in rec.reasons[0].source.citation


def test_plenty_of_labels_and_shifted_deployment_gets_lp_ft():
    s = Situation(samples_per_class=200, num_classes=5, domain="imagenet_like", deployment_shift=True)
    rec = recommend(s, projection=_projection(s))
    assert rec.method == "ft" and rec.configuration == "lp-ft"
    assert any("ICLR 2022" in r.source.citation for r in rec.reasons)
    assert "output-shift-freeze-early" not in rec.fired  # a lower-priority depth that disagrees is not shown


def test_freezing_depth_follows_the_kind_of_shift():
    close = Situation(samples_per_class=100, num_classes=5, domain="scenes")
    far = Situation(samples_per_class=100, num_classes=5, domain="satellite")
    assert recommend(close, projection=_projection(close)).configuration == 2
    assert recommend(far, projection=_projection(far)).configuration == 0


def test_budget_too_small_for_fine_tuning_forces_feature_extraction():
    # FE: 1000 images x 1 GFLOP / 1e11 = 10 s; FT: 1000 x 40 epochs x >= 1.5 GFLOP / 5e10 >= 1200 s
    s = Situation(samples_per_class=100, num_classes=10, budget_hours=0.1)
    rec = recommend(s, projection=_projection(s))
    assert rec.method == "fe" and rec.fired[0] == "ft-over-budget"
    assert rec.reasons[0].source.citation == "Projected on this machine"


def test_projection_arithmetic():
    s = Situation(samples_per_class=10, num_classes=3, epochs=4)
    p = project_costs(s, SPEED, FE_FLOPS, FT_FLOPS, lp_epochs=2)
    fe = p.option("fe")
    assert fe.flops == 30 * 1e9 and fe.seconds == pytest.approx(0.3)
    assert fe.energy_kwh == pytest.approx(50 * 0.3 / 3.6e6)
    ft2 = p.option("ft", 2)
    assert ft2.flops == 30 * 4 * 2e9 and ft2.seconds == pytest.approx(30 * 4 * 2e9 / 5e10)
    lpft = p.option("ft", "lp-ft")
    assert lpft.flops == 30 * 2 * 1e9 + 30 * 2 * 3e9  # 2 probe epochs (a forward each), then 2 full epochs
    crops = project_costs(Situation(samples_per_class=10, num_classes=3, use_crops=True), SPEED, FE_FLOPS, FT_FLOPS)
    assert crops.option("fe").flops == 10 * fe.flops
    assert any("4 epochs" in a for a in p.assumptions) and any("test speed" in a for a in p.assumptions)


def test_named_gpu_speed_states_its_assumptions():
    sp = gpu_speed("h100")
    assert sp.flops_per_s_ft == pytest.approx(989e12 * 0.3)  # H100 SXM5: 989 dense bf16 TFLOP/s, 30 % of it
    assert sp.watts == 700 and "assumed" in sp.how


def test_alternatives_say_how_much_more_or_less_they_cost():
    s = Situation(samples_per_class=10, num_classes=10, domain="medical")
    rec = recommend(s, projection=_projection(s))
    assert rec.chosen_cost is not None and rec.chosen_cost.method == "fe"
    notes = {o.configuration: note for o, note in rec.alternatives}
    assert set(notes) == {0, 1, 2, 3, "lp-ft"} and all("x the time" in n for n in notes.values())


def _comparison(**changes) -> Comparison:
    base = dict(dataset="digits", backbone="efficientnet_lite0", strength=STRONG, spc=20, near=True,
                measured_range=(1, 50), fe_variant="FE linearsvc", ft_configuration=2, fe=(0.88, 0.86, 0.90),
                ft=(0.93, 0.92, 0.94), diff=0.05, diff_low=0.03, diff_high=0.07, n_pairs=3, verdict="ft_higher")
    return Comparison(**{**base, **changes})


def test_your_runs_override_the_generic_rule():
    s = Situation(samples_per_class=20, num_classes=10, domain="imagenet_like", dataset="digits")
    generic = recommend(s, projection=_projection(s))
    assert generic.method == "fe"
    ev = Evidence("digits", "efficientnet_lite0", comparison=_comparison())
    rec = recommend(s, projection=_projection(s), evidence=ev)
    assert rec.method == "ft" and rec.configuration == 2
    assert rec.fired[0] == "measured-in-your-runs" and rec.reasons[0].strength == STRONG
    assert "fine-tuning (configuration 2) scored higher than feature extraction" in rec.reasons[0].text
    assert "95% interval +3.0 to +7.0 over 3 draws" in rec.reasons[0].text
    assert rec.reasons[0].source.citation == "Measured in your runs"
    assert "generic rule would have said FE" in rec.reasons[1].text and rec.reasons[1].strength == PRIOR
    assert rec.accuracy_note.startswith("92%-94%") and rec.expected_accuracy == (0.93, 0.92, 0.94)


def test_a_crossover_range_decides_on_either_side():
    ev = Evidence("digits", "efficientnet_lite0", comparison=_comparison(near=False, spc=50),
                  crossover=(12.0, 10.0, 15.0, 2))
    above = recommend(Situation(samples_per_class=20, num_classes=10, dataset="digits"), evidence=ev)
    assert above.method == "ft" and "between 10 and 15 samples per class" in above.reasons[0].text
    below = recommend(Situation(samples_per_class=5, num_classes=10, dataset="digits"), evidence=ev)
    assert below.method == "fe" and "only between 10 and 15" in below.reasons[0].text


def test_a_measured_tie_picks_the_cheaper_option_and_says_so():
    s = Situation(samples_per_class=20, num_classes=10, dataset="digits", deployment_shift=True)
    tie = _comparison(diff=0.01, diff_low=-0.02, diff_high=0.04, verdict="not_resolved")
    rec = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0", comparison=tie))
    assert rec.method == "fe" and rec.fired[0] == "measured-tie" and rec.layers == "all"
    assert "not separated" in rec.reasons[0].text and "cheaper option wins" in rec.reasons[0].text
    assert (rec.reasons[0].source.citation, rec.reasons[0].strength) == ("Measured in your runs", STRONG)
    assert rec.pilot and "do not separate" in rec.caution
    assert not any(r.text.startswith("(The generic rule") for r in rec.reasons)  # the rule said FE too
    # a tie where the generic rule says fine-tune: FE still wins, and the rule is shown as what it would have said
    s = Situation(samples_per_class=100, num_classes=10, domain="imagenet_like", dataset="digits")
    generic = recommend(s, projection=_projection(s))
    assert generic.method == "ft"
    rec = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0",
                                                                    comparison=replace(tie, spc=100)))
    assert rec.method == "fe" and rec.fired[0] == "measured-tie"
    said = rec.reasons[1]
    assert said.text.startswith("(The generic rule would have said FT: ")
    assert (said.rule_id, said.strength) == (generic.fired[0], PRIOR) and said.source.citation
    assert generic.fired[0] in rec.fired


def test_medium_evidence_decides_but_weak_evidence_never_does():
    s = Situation(samples_per_class=20, num_classes=10, domain="imagenet_like", dataset="digits")
    medium = recommend(s, evidence=Evidence(comparison=_comparison(strength=MEDIUM, backbone="resnet18")))
    assert medium.method == "ft" and medium.reasons[0].strength == MEDIUM
    weak = Evidence(comparison=_comparison(strength=WEAK, dataset="lfw_faces"),
                    items=(EvidenceItem("comparison", WEAK, "FE and FT on lfw_faces.", used=False,
                                        why_not="measured on another dataset"),))
    rec = recommend(s, projection=_projection(s), evidence=weak)
    assert rec.method == "fe" and "measured-in-your-runs" not in rec.fired  # the generic rule decided
    assert all(r.strength != WEAK for r in rec.reasons)
    assert rec.pilot and "weak evidence (measured on another dataset)" in rec.caution
    assert rec.accuracy_note.startswith("Not known yet: your closest runs (lfw_faces")


def test_an_option_ten_times_costlier_is_not_recommended_against_measured_evidence():
    # 179 per class, same distribution: the published finding says fine-tune (Kumar 2022). Fine-tuning costs
    # 40 epochs x forward+backward (>= 60x FE here); the user's converged runs up to 20 per class have FE higher.
    s = Situation(samples_per_class=179, num_classes=10, dataset="digits")
    assert recommend(s, projection=_projection(s)).method == "ft"
    lower = _comparison(spc=20, near=False, measured_range=(1, 20), fe=(0.944, 0.93, 0.96), ft=(0.926, 0.91, 0.94),
                        diff=-0.018, diff_low=-0.03, diff_high=-0.006, verdict="fe_higher")
    rec = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0", comparison=lower))
    assert rec.method == "fe" and rec.fired[0] == "costly-without-measured-gain" and rec.layers == "all"
    assert "x the cost of feature extraction" in rec.reasons[0].text and "measured up to 20" in rec.reasons[0].text
    ratio = rec.reasons[0].text.split(" is projected at ")[1].split("x")[0]
    generic = recommend(s, projection=_projection(s))
    cheapest = min(o.seconds for o in _projection(s).options)
    assert float(ratio) >= 10 and ratio == f"{generic.chosen_cost.seconds / cheapest:.0f}"  # the ratio, by hand
    first = rec.reasons[0]
    assert (first.rule_id, first.source.citation, first.strength) == (
        "costly-without-measured-gain", "Measured in your runs", STRONG)
    assert first.text.endswith("Feature extraction is recommended until a run shows the gain is worth the cost.")
    assert rec.pilot and "fine-tuning may still gain" in rec.caution
    # measured at the user's own label count: no "measured up to", no caution about more labels
    near = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0", comparison=replace(
        lower, spc=179, near=True, measured_range=(1, 179))))
    assert near.method == "fe" and "measured up to" not in near.reasons[0].text
    assert "fine-tuning may still gain" not in (near.caution or "")
    # measured evidence that fine-tuning scores higher keeps it, whatever it costs
    higher = replace(lower, ft=(0.97, 0.96, 0.98), diff=0.026, diff_low=0.01, diff_high=0.04, verdict="ft_higher")
    kept = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0",
                                                                     comparison=higher))
    assert kept.method == "ft" and "costly-without-measured-gain" not in kept.fired
    # weak evidence never vetoes either
    weak = recommend(s, projection=_projection(s), evidence=Evidence(comparison=replace(lower, strength=WEAK)))
    assert weak.method == "ft"


def test_quanta_evidence_informs_the_freezing_depth_only_from_the_chosen_backbone():
    s = Situation(samples_per_class=100, num_classes=10, domain="medical", dataset="digits", backbone="quanta_cnn")
    assert recommend(s, projection=_projection(s)).configuration == 0  # input shift: train the early layers
    ev = Evidence(quanta_depth=(4, 7), quanta_backbone="quanta_cnn", quanta_dataset="digits:5-9")
    rec = recommend(s, projection=_projection(s), evidence=ev)
    assert rec.method == "ft" and rec.configuration == 2 and "measured-quanta-depth" in rec.fired
    texts = [r.text for r in rec.reasons]
    assert any(t.startswith("(The generic advice would have said configuration 0:") for t in texts)
    assert "first 4 of 7 layers" in texts[-1] and "quanta_cnn on digits:5-9" in texts[-1]
    # the measured reason, and the advice it overrode kept whole under its own rule, source and strength
    generic = recommend(s, projection=_projection(s))
    overridden = [r for r in rec.reasons if r.text.startswith("(The generic advice would have said configuration 0:")]
    original = next(r for r in generic.reasons if r.rule_id == overridden[0].rule_id)
    assert overridden[0].text == f"(The generic advice would have said configuration 0: {original.text})"
    assert (overridden[0].source, overridden[0].strength) == (original.source, original.strength)
    assert rec.reasons[-1].to_dict()["rule"] == "measured-quanta-depth"
    assert (rec.reasons[-1].source.citation, rec.reasons[-1].strength) == ("Measured in your runs", STRONG)
    # depth = min(3, int(k / n * 4)): 4 of 7 layers -> int(2.29) = 2; 7 of 7 -> 3 (never above); 1 of 7 -> 0
    for k, expected in ((7, 3), (6, 3), (1, 0)):
        deeper = recommend(s, projection=_projection(s), evidence=replace(ev, quanta_depth=(k, 7)))
        assert deeper.configuration == expected, k
    # QUANTA on another dataset says nothing about this one
    other = recommend(s, projection=_projection(s), evidence=replace(ev, quanta_dataset="lfw_faces"))
    assert other.configuration == 0 and "measured-quanta-depth" not in other.fired
    # nor QUANTA of another backbone (the 93.6 h recommendation came from quanta_cnn runs)
    lite = replace(s, backbone="efficientnet_lite0")
    assert "measured-quanta-depth" not in recommend(lite, projection=_projection(lite), evidence=ev).fired


def test_runs_far_from_the_users_labels_give_no_accuracy_range():
    comp = _comparison(spc=5, near=False, measured_range=(1, 5), fe=(0.87, 0.85, 0.89), ft=(0.28, 0.2, 0.36),
                       verdict="fe_higher")
    rec = recommend(Situation(samples_per_class=179, num_classes=10, dataset="digits"),
                    evidence=Evidence("digits", "efficientnet_lite0", comparison=comp))
    assert rec.accuracy_note.startswith("Not measured near 179 samples per class")
    assert "at 5, where feature extraction scored 87% and fine-tuning 28%" in rec.accuracy_note


def test_without_runs_the_accuracy_is_honestly_unknown():
    rec = recommend(Situation(samples_per_class=5, num_classes=10))
    assert rec.accuracy_note.startswith("Not known yet")


@pytest.mark.parametrize("changes, fragment", [
    ({"samples_per_class": 0}, "'samples per class' answer must be an integer >= 1"),
    ({"num_classes": 1}, "'number of classes'"),
    ({"domain": "space"}, "'domain' answer must be one of"),
    ({"budget_hours": -1}, "'budget hours'"),
    ({"device": "tpu"}, "'device'"),
])
def test_bad_answers_are_one_sentence(changes, fragment):
    base = {"samples_per_class": 10, "num_classes": 10}
    with pytest.raises(SpecError, match=fragment):
        Situation(**{**base, **changes}).validate()


def test_a_malformed_rules_file_is_refused_with_the_rule_named(tmp_path):
    good = yaml.safe_load(RULES_PATH.read_text())
    bad = dict(good, rules=[*good["rules"], {"id": "x", "kind": "method", "when": {}, "recommend": {"method": "fe"},
                                              "because": "Because.", "source": "nature2030"}])
    with pytest.raises(GuidelineError, match="rule 'x'.*nature2030"):
        _parse(bad, tmp_path / "g.yaml")
    bad = dict(good, rules=[*good["rules"], {"id": "y", "kind": "advice", "when": {"moon": 1},
                                              "recommend": {}, "because": "B.", "source": "you2021"}])
    with pytest.raises(GuidelineError, match="unknown condition"):
        _parse(bad, tmp_path / "g.yaml")


def test_runs_that_agree_with_the_rule_keep_its_published_reason_beside_theirs():
    s = Situation(samples_per_class=20, num_classes=10, domain="imagenet_like", dataset="digits")
    rule = next(r for r in load_rules().rules if r.id == recommend(s, projection=_projection(s)).fired[0])
    fe_higher = _comparison(fe=(0.95, 0.94, 0.96), ft=(0.90, 0.89, 0.91), diff=-0.05, diff_low=-0.07,
                            diff_high=-0.03, verdict="fe_higher")
    rec = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0",
                                                                    comparison=fe_higher))
    assert rec.method == "fe" and rec.fired[:2] == ["measured-in-your-runs", rule.id]
    measured, published = rec.reasons[0], rec.reasons[1]
    assert measured.strength == STRONG and measured.source.citation == "Measured in your runs"
    assert published.to_dict() == {"text": rule.because, "rule": rule.id, "strength": PRIOR,
                                   "source": load_rules().sources[rule.source].citation}


def test_a_measured_tie_never_overrides_a_budget_fine_tuning_cannot_meet():
    s = Situation(samples_per_class=100, num_classes=10, dataset="digits", budget_hours=0.1)
    tie = _comparison(spc=100, diff=0.01, diff_low=-0.02, diff_high=0.04, verdict="not_resolved")
    rec = recommend(s, projection=_projection(s), evidence=Evidence("digits", "efficientnet_lite0", comparison=tie))
    assert rec.method == "fe" and rec.fired[0] == "ft-over-budget" and "measured-tie" not in rec.fired
    assert rec.reasons[0].source.citation == "Projected on this machine" and rec.reasons[0].strength == "projection"
