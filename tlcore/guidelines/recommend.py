"""The recommendation: the rules evaluated for a situation, with the user's measured evidence of
deciding strength ahead of published findings, every reason carrying its source and strength."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlcore.guidelines.evidence import DECIDING, PRIOR, PROJECTION, STRONG, Comparison, Evidence, same_task_family
from tlcore.guidelines.projection import CONFIG_LABELS, OptionCost, Projection, fits_budget
from tlcore.guidelines.rules import Rule, RuleBook, Source, load_rules, rule_matches
from tlcore.guidelines.situation import Situation

#: An option projected to cost this many times the cheapest one needs measured evidence that it scores higher.
COSTLY_RATIO = 10.0


@dataclass(frozen=True)
class Reason:
    text: str
    rule_id: str
    source: Source
    strength: str = PRIOR

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "rule": self.rule_id, "source": self.source.citation, "strength": self.strength}


@dataclass
class Recommendation:
    method: str
    configuration: int | str | None
    layers: str | None
    reasons: list[Reason]
    alternatives: list[tuple[OptionCost, str]]
    chosen_cost: OptionCost | None
    projection: Projection | None
    evidence: Evidence | None
    fired: list[str] = field(default_factory=list)
    accuracy_note: str = ""
    pilot: bool = False
    caution: str = ""  # weak or conflicting evidence: what the user should know before acting
    expected_accuracy: tuple[float, float, float] | None = None  # mean, 95% low, high (NaN bounds: one draw)

    @property
    def title(self) -> str:
        if self.method == "fe":
            return "Feature extraction: full-network embedding (every layer) + a linear classifier"
        return CONFIG_LABELS.get(self.configuration, f"Fine-tuning, configuration {self.configuration}")


def situation_facts(s: Situation, projection: Projection | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "samples_per_class": s.samples_per_class, "num_classes": s.num_classes, "domain": s.domain,
        "shift": s.shift, "tuning_time": s.tuning_time, "deployment_shift": s.deployment_shift,
        "gpu": s.device != "this_machine", "ft_fits_budget": True, "fe_fits_budget": True,
    }
    if projection is not None and (s.budget_hours or s.budget_kwh):
        facts["fe_fits_budget"] = fits_budget(s, projection.option("fe"))
        facts["ft_fits_budget"] = any(fits_budget(s, o) for o in projection.options if o.method == "ft")
    return facts


def _rule_strength(rule: Rule) -> str:
    return PROJECTION if rule.source == "cost_projection" else PRIOR


def _measured_decision(ev: Evidence | None, s: Situation) -> tuple[str, int | str | None, str, str] | None:
    """(method, configuration, sentence, strength) when the user's runs decide this situation: a
    comparison of deciding strength at (about) their samples per class, or a resolved crossover."""
    if ev is None or ev.comparison is None:
        return None
    c = ev.comparison
    if c.strength not in DECIDING:
        return None
    if ev.crossover is not None:
        _spc, low, high, config = ev.crossover
        if s.samples_per_class >= high:
            return ("ft", config, f"In your runs {c.where}, fine-tuning (configuration {config}) overtook feature "
                                  f"extraction between {low:g} and {high:g} samples per class (95% intervals); you "
                                  f"have {s.samples_per_class}.", c.strength)
        if s.samples_per_class <= low:
            return ("fe", None, f"In your runs {c.where}, fine-tuning overtook feature extraction only between "
                                f"{low:g} and {high:g} samples per class; you have {s.samples_per_class}.", c.strength)
    if not c.near:
        return None
    if c.verdict == "fe_higher":
        return "fe", None, c.describe(), c.strength
    if c.verdict == "ft_higher":
        return "ft", c.ft_configuration, c.describe(), c.strength
    return None  # measured, but not resolved: the cost decides (see recommend)


@dataclass
class _Draft:
    """The recommendation while it is decided: each step of :func:`recommend` reads and amends it."""

    method: str
    configuration: int | str | None
    layers: str | None
    reasons: list[Reason] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    pilot: bool = False

    def add(self, reason: Reason) -> None:
        """A reason, and its rule among those that fired."""
        self.reasons.append(reason)
        self.fired.append(reason.rule_id)


def recommend(situation: Situation, book: RuleBook | None = None, projection: Projection | None = None,
              evidence: Evidence | None = None) -> Recommendation:
    """Evaluate the rules for a situation; measured evidence of deciding strength comes first.

    The order, strongest first: your runs on your dataset and backbone with converged runs (strong),
    your dataset with another backbone (medium), published findings (prior). Weak runs (capped,
    near chance, another dataset) are listed and never decide. Two rules always hold: QUANTA sets a
    freezing depth only from the chosen backbone on your dataset with a layer that separated from
    its control; an option projected at 10x or more the cost of the cheapest is not recommended
    when measured evidence says it scores no higher.
    """
    s = situation.validate()
    book = book or load_rules()
    facts = situation_facts(s, projection)
    measured_src = book.sources.get("your_runs")
    comp = evidence.comparison if evidence is not None else None

    draft, chosen, measured = _decide_method(s, book, facts, evidence, measured_src)
    facts["method"] = draft.method
    depth_reason = _apply_advice(draft, book, facts, chosen, measured)
    if draft.method == "ft" and draft.configuration is None:
        draft.configuration = 0
    if measured_src is not None:
        _apply_quanta_depth(draft, s, evidence, depth_reason, measured_src)
    chosen_cost = _option_for(projection, draft.method, draft.configuration)
    if measured_src is not None:
        chosen_cost = _unless_costly_without_gain(draft, s, projection, comp, chosen_cost, measured_src)
    alternatives = _alternatives(projection, chosen_cost)

    # weak or conflicting evidence: say so, point to the pilot
    if evidence is not None:
        weak = evidence.weak_items
        if weak and (comp is None or comp.strength not in DECIDING):
            draft.cautions.append("Your runs here are weak evidence (" + "; ".join(i.why_not or i.text
                                                                                  for i in weak[:2])
                                  + "): they are shown but do not decide.")
        conflicts = [i for i in evidence.items if i.kind == "conflict"]
        if conflicts:
            draft.cautions.append(conflicts[0].text)
    if draft.cautions:
        draft.pilot = True

    method = draft.method
    accuracy_note, expected = _expected_accuracy(s, method, comp)
    caution = " ".join(dict.fromkeys(draft.cautions))
    if caution:
        caution += " Run the pilot to measure it on your images."
    return Recommendation(method, draft.configuration if method == "ft" else None, draft.layers, draft.reasons,
                          alternatives, chosen_cost, projection, evidence, draft.fired, accuracy_note, draft.pilot,
                          caution, expected)


def _decide_method(s: Situation, book: RuleBook, facts: dict[str, Any], evidence: Evidence | None,
                   measured_src: Source | None) -> tuple[_Draft, Rule, tuple | None]:
    """FE or FT: the highest-priority method rule that holds, unless the user's runs decide (a
    measured difference or crossover), or measured the user's label count without separating the
    two (then the cheaper option). Returns the draft, the rule and the measured decision, if any."""
    method_rules = sorted((r for r in book.rules if r.kind == "method"), key=lambda r: -r.priority)
    chosen = next(r for r in method_rules if rule_matches(r, facts))
    method = chosen.recommend["method"]
    draft = _Draft(method, chosen.recommend.get("configuration", 0 if method == "ft" else None),
                   chosen.recommend.get("layers"))
    comp = evidence.comparison if evidence is not None else None
    measured = _measured_decision(evidence, s) if measured_src is not None else None
    generic = Reason(f"(The generic rule would have said {chosen.recommend['method'].upper()}: {chosen.because})",
                     chosen.id, book.sources[chosen.source], PRIOR)
    if measured is not None and not (chosen.id == "ft-over-budget" and measured[0] == "ft"):
        draft.method, measured_config, text, strength = measured
        draft.configuration = measured_config if draft.method == "ft" else None
        draft.layers = "all" if draft.method == "fe" else None
        draft.add(Reason(text, "measured-in-your-runs", measured_src, strength))
        if chosen.recommend["method"] != draft.method:
            draft.add(generic)
        else:
            draft.add(Reason(chosen.because, chosen.id, book.sources[chosen.source], _rule_strength(chosen)))
    elif (comp is not None and comp.strength in DECIDING and comp.near and comp.verdict == "not_resolved"
          and measured_src is not None and chosen.id != "ft-over-budget"):
        # measured at the user's label count but not separated: the cheaper option, said plainly
        draft.method, draft.configuration, draft.layers = "fe", None, "all"
        draft.add(Reason(comp.describe() + " With no measured difference, the cheaper option wins.",
                         "measured-tie", measured_src, comp.strength))
        if chosen.recommend["method"] != "fe":
            draft.reasons.append(generic)
        draft.fired.append(chosen.id)
        draft.cautions.append("Your runs do not separate the two methods at your number of labels; the pilot with "
                              "more draws, or more labels, would.")
    else:
        draft.add(Reason(chosen.because, chosen.id, book.sources[chosen.source], _rule_strength(chosen)))
    return draft, chosen, measured


def _apply_advice(draft: _Draft, book: RuleBook, facts: dict[str, Any], chosen: Rule,
                  measured: tuple | None) -> int | None:
    """The advice rules that hold, highest priority first; returns the index of the reason that chose
    the freezing depth, if advice did.

    The depth is fixed when the deciding rule or the user's runs named one; advice fills it in
    otherwise, and a lower-priority rule that disagrees is not shown."""
    config_fixed = draft.method == "ft" and ((measured is not None and draft.configuration is not None)
                                             or "configuration" in chosen.recommend)
    depth_reason: int | None = None
    for rule in sorted((r for r in book.rules if r.kind == "advice"), key=lambda r: -r.priority):
        if not rule_matches(rule, facts):
            continue
        rec = rule.recommend
        if "configuration" in rec:
            if config_fixed and rec["configuration"] != draft.configuration:
                continue
            draft.configuration, config_fixed = rec["configuration"], True
            depth_reason = len(draft.reasons)
        draft.pilot = draft.pilot or bool(rec.get("pilot"))
        draft.add(Reason(rule.because, rule.id, book.sources[rule.source], _rule_strength(rule)))
    return depth_reason


def _apply_quanta_depth(draft: _Draft, s: Situation, evidence: Evidence | None, depth_reason: int | None,
                        measured_src: Source) -> None:
    """QUANTA sets the depth only from the chosen backbone on this dataset, with a layer that showed a
    signal; the advice it overrides is kept, marked as what generic advice would have said."""
    if not (evidence is not None and draft.method == "ft" and evidence.quanta_depth is not None
            and draft.configuration != "lp-ft" and evidence.quanta_backbone == s.backbone
            and same_task_family(evidence.quanta_dataset, s.dataset)):
        return
    k, n = evidence.quanta_depth
    suggested = min(3, int(k / n * 4))
    if depth_reason is not None and suggested != draft.configuration:
        old = draft.reasons[depth_reason]
        draft.reasons[depth_reason] = Reason(f"(The generic advice would have said configuration "
                                             f"{draft.configuration}: {old.text})", old.rule_id, old.source,
                                             old.strength)
    draft.add(Reason(
        f"In your QUANTA runs ({evidence.quanta_backbone} on {evidence.quanta_dataset}), lambda_S stayed above "
        f"the random-source control for the first {k} of {n} layers (95% intervals): those transfer, which "
        f"supports freezing about {suggested}/4 of the network (configuration {suggested}).",
        "measured-quanta-depth", measured_src, STRONG))
    draft.configuration = suggested


def _cost_of(o: OptionCost) -> float:
    return o.seconds if o.seconds is not None else o.flops


def _option_for(projection: Projection | None, method: str, config: int | str | None) -> OptionCost | None:
    key = (method, config if method == "ft" else None)
    return next((o for o in projection.options if (o.method, o.configuration if o.method == "ft" else None)
                 == key), None) if projection is not None else None


def _unless_costly_without_gain(draft: _Draft, s: Situation, projection: Projection | None,
                                comp: Comparison | None, chosen_cost: OptionCost | None,
                                measured_src: Source) -> OptionCost | None:
    """An option 10x costlier than the cheapest needs measured evidence that it scores higher:
    without it, feature extraction (first reason). Returns the cost of what is now recommended."""
    if not (projection is not None and chosen_cost is not None and draft.method == "ft" and comp is not None
            and comp.strength in DECIDING and comp.says_ft_lower):
        return chosen_cost
    cheapest = min(projection.options, key=_cost_of)
    ratio = _cost_of(chosen_cost) / max(_cost_of(cheapest), 1e-12)
    if not (ratio >= COSTLY_RATIO and cheapest.method == "fe"):
        return chosen_cost
    beyond = "" if comp.near else (f" (measured up to {comp.measured_range[1]} samples per class; you have "
                                   f"{s.samples_per_class}: the pilot at more labels would tell)")
    draft.reasons.insert(0, Reason(
        f"{chosen_cost.label} is projected at {ratio:.0f}x the cost of feature extraction, and your runs "
        f"{comp.where} do not show it scoring higher: {comp.describe()}{beyond} Feature extraction is "
        "recommended until a run shows the gain is worth the cost.", "costly-without-measured-gain",
        measured_src, comp.strength))
    draft.fired.insert(0, "costly-without-measured-gain")
    draft.method, draft.configuration, draft.layers = "fe", None, "all"
    if not comp.near:
        draft.cautions.append("Your runs stop below your number of labels; fine-tuning may still gain there.")
        draft.pilot = True
    return _option_for(projection, "fe", None)


def _alternatives(projection: Projection | None, chosen_cost: OptionCost | None) -> list[tuple[OptionCost, str]]:
    """Every other projected option, with its time (or compute) against the recommended one."""
    alternatives: list[tuple[OptionCost, str]] = []
    if projection is None:
        return alternatives
    for o in projection.options:
        if o is chosen_cost:
            continue
        note = ""
        if chosen_cost is not None and chosen_cost.seconds and o.seconds is not None:
            ratio = o.seconds / chosen_cost.seconds
            note = f"{ratio:.1f}x the time" if ratio >= 1 else f"{1 / ratio:.1f}x less time"
        elif chosen_cost is not None and chosen_cost.flops > 0:
            ratio = o.flops / chosen_cost.flops
            note = f"{ratio:.1f}x the compute" if ratio >= 1 else f"{1 / ratio:.1f}x less compute"
        alternatives.append((o, note))
    return alternatives


def _expected_accuracy(s: Situation, method: str, comp: Comparison | None) -> tuple[str, tuple | None]:
    if comp is None:
        return ("Not known yet: no published source gives an accuracy for your data, and your store has no "
                "comparable runs. The pilot measures it.", None)
    fe, ft = comp.fe, comp.ft
    if comp.strength not in DECIDING:
        return (f"Not known yet: your closest runs ({comp.dataset}, {comp.backbone}) are weak evidence. The pilot "
                "measures it.", None)
    if not comp.near:
        return (f"Not measured near {s.samples_per_class} samples per class: your closest runs ({comp.dataset}, "
                f"{comp.backbone}) are at {comp.spc}, where feature extraction scored {fe[0]:.0%} and fine-tuning "
                f"{ft[0]:.0%}. The pilot measures it.", None)
    acc = fe if method == "fe" else ft
    where = f"balanced accuracy of your runs on {comp.dataset} at {comp.spc} samples per class"
    if np.isfinite(acc[1]):
        return (f"{max(0.0, acc[1]):.0%}-{min(1.0, acc[2]):.0%} ({where}: mean {acc[0]:.1%}, 95% interval over "
                "draws)", acc)
    return f"about {acc[0]:.0%} ({where}; one draw, so no interval yet)", acc
