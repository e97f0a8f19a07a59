"""The guideline walkthrough's brain: a practitioner's situation in, a recommendation with reasons out.

The rules are data (``data/guidelines.yaml``): conditions, a recommendation, the sentences shown
and a source (a published finding, the cost projection, or the user's own runs). This module
evaluates them, projects what each option would cost on the user's full dataset, and lets the
user's own runs override a generic rule where they measured the answer (e.g. the samples per
class where fine-tuning overtook feature extraction on their data).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tlcore.errors import SpecError, TLError

RULES_PATH = Path(__file__).resolve().parents[1] / "data" / "guidelines.yaml"


# ---------------------------------------------------------------------------------------------
# The situation


@dataclass(frozen=True)
class Domain:
    label: str
    shift: str  # "output": same kind of images, new labels; "input": images look unlike everyday photos
    example: str


DOMAINS: dict[str, Domain] = {
    "imagenet_like": Domain("Everyday photos (objects, animals, ImageNet-like)", "output", "pets, products"),
    "fine_grained": Domain("Fine-grained photos (species, car models)", "output", "birds, flowers"),
    "scenes": Domain("Scenes and places", "output", "indoor rooms, landscapes"),
    "textures": Domain("Textures and materials", "input", "fabrics, surfaces"),
    "medical": Domain("Medical images", "input", "X-rays, histology, dermoscopy"),
    "satellite": Domain("Satellite and aerial images", "input", "land use, crops"),
    "art": Domain("Art, sketches, drawings", "input", "paintings, doodles"),
    "documents": Domain("Documents, digits and symbols", "input", "handwriting, scans"),
}
TUNING_TIMES = {"none": "None: one configuration", "hours": "A few hours", "days": "Days"}


@dataclass(frozen=True)
class GPU:
    """A named accelerator's rated dense bf16/fp16 tensor throughput and board power (spec sheets)."""

    label: str
    peak_tflops: float
    board_power_w: float


GPUS: dict[str, GPU] = {
    "t4": GPU("NVIDIA T4", 65.0, 70.0),
    "l4": GPU("NVIDIA L4", 121.0, 72.0),
    "v100": GPU("NVIDIA V100 SXM2", 125.0, 300.0),
    "a100": GPU("NVIDIA A100 SXM4", 312.0, 400.0),
    "h100": GPU("NVIDIA H100 SXM5", 989.0, 700.0),
}
#: Share of a GPU's rated peak a training step reaches in practice (an assumption, shown to the user).
GPU_UTILISATION = 0.3


@dataclass(frozen=True)
class Situation:
    """What the user told the walkthrough."""

    samples_per_class: int
    num_classes: int
    domain: str = "imagenet_like"
    device: str = "this_machine"  # or a key of GPUS
    budget_hours: float | None = None
    budget_kwh: float | None = None
    tuning_time: str = "hours"
    deployment_shift: bool = False
    backbone: str = "efficientnet_lite0"
    dataset: str | None = None
    epochs: int = 40
    use_crops: bool = False
    resolution: int | None = None  # input size; None = the backbone's (tiny images: see tlcore.data.resolution)

    def validate(self) -> Situation:
        def bad(name: str, allowed: str, value: Any) -> SpecError:
            return SpecError(f"The '{name}' answer must be {allowed}. Got {value!r} instead.")

        if not isinstance(self.samples_per_class, int) or self.samples_per_class < 1:
            raise bad("samples per class", "an integer >= 1", self.samples_per_class)
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise bad("number of classes", "an integer >= 2", self.num_classes)
        if self.domain not in DOMAINS:
            raise bad("domain", "one of " + ", ".join(DOMAINS), self.domain)
        if self.device != "this_machine" and self.device not in GPUS:
            raise bad("device", "this_machine or one of " + ", ".join(GPUS), self.device)
        if self.tuning_time not in TUNING_TIMES:
            raise bad("time for tuning", "one of " + ", ".join(TUNING_TIMES), self.tuning_time)
        for name, v in (("budget hours", self.budget_hours), ("budget kWh", self.budget_kwh)):
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise bad(name, "a positive number (or empty for no limit)", v)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "an integer >= 1", self.epochs)
        return self

    @property
    def shift(self) -> str:
        return DOMAINS[self.domain].shift

    @property
    def train_images(self) -> int:
        return self.samples_per_class * self.num_classes


# ---------------------------------------------------------------------------------------------
# Rules as data


CONDITION_KEYS = {"samples_per_class", "num_classes", "domain", "shift", "tuning_time", "deployment_shift",
                  "ft_fits_budget", "fe_fits_budget", "gpu", "method"}
KINDS = ("method", "advice")


class GuidelineError(TLError):
    """The rules file is malformed."""


@dataclass(frozen=True)
class Source:
    key: str
    citation: str
    finding: str


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    priority: int
    when: dict[str, Any]
    recommend: dict[str, Any]
    because: str
    source: str


@dataclass(frozen=True)
class RuleBook:
    sources: dict[str, Source]
    rules: tuple[Rule, ...]

    def rule(self, rule_id: str) -> Rule:
        return next(r for r in self.rules if r.id == rule_id)


def _parse(data: dict, path: Path) -> RuleBook:
    if not isinstance(data, dict) or "rules" not in data or "sources" not in data:
        raise GuidelineError(f"{path} must hold 'sources' and 'rules'.")
    sources = {}
    for key, s in data["sources"].items():
        if not isinstance(s, dict) or not s.get("citation") or not s.get("finding"):
            raise GuidelineError(f"Source {key!r} in {path} needs a citation and a finding.")
        sources[key] = Source(key, s["citation"], s["finding"])
    rules, seen = [], set()
    for i, r in enumerate(data["rules"]):
        rid = r.get("id") or f"#{i}"
        where = f"rule {rid!r} in {path}"
        if rid in seen:
            raise GuidelineError(f"{where} is defined twice.")
        seen.add(rid)
        if r.get("kind") not in KINDS:
            raise GuidelineError(f"{where} needs kind {' or '.join(KINDS)}.")
        if r.get("source") not in sources:
            raise GuidelineError(f"{where} cites source {r.get('source')!r}, which is not in 'sources'.")
        unknown = set(r.get("when") or {}) - CONDITION_KEYS
        if unknown:
            raise GuidelineError(
                f"{where} has unknown condition(s) {sorted(unknown)}; known: {sorted(CONDITION_KEYS)}.")
        if not (r.get("because") or "").strip() or not isinstance(r.get("recommend"), dict):
            raise GuidelineError(f"{where} needs 'because' sentences and a 'recommend' mapping.")
        rules.append(Rule(rid, r["kind"], int(r.get("priority", 0)), dict(r.get("when") or {}),
                          dict(r["recommend"]), " ".join(r["because"].split()), r["source"]))
    return RuleBook(sources, tuple(rules))


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> RuleBook:
    with open(path) as f:
        return _parse(yaml.safe_load(f), Path(path))


def load_rules(path: str | Path = RULES_PATH) -> RuleBook:
    p = Path(path)
    if not p.is_file():
        raise GuidelineError(f"Guideline rules file {p} does not exist.")
    return _load_cached(str(p), p.stat().st_mtime)


def condition_holds(key: str, expected: Any, facts: dict[str, Any]) -> bool:
    value = facts.get(key)
    if isinstance(expected, dict):
        if value is None:
            return False
        lo, hi = expected.get("min"), expected.get("max")
        return (lo is None or value >= lo) and (hi is None or value <= hi)
    if isinstance(expected, list):
        return value in expected
    return value == expected


def rule_matches(rule: Rule, facts: dict[str, Any]) -> bool:
    return all(condition_holds(k, v, facts) for k, v in rule.when.items())


# ---------------------------------------------------------------------------------------------
# Cost projection


@dataclass(frozen=True)
class Speed:
    """How fast the chosen device turns FLOPs into results, and at what power."""

    flops_per_s_fe: float
    flops_per_s_ft: float
    watts: float | None
    how: str


@dataclass(frozen=True)
class OptionCost:
    label: str
    method: str
    configuration: int | str | None
    flops: float
    seconds: float | None  # None until this machine's pace is known
    energy_kwh: float | None


@dataclass(frozen=True)
class Projection:
    options: tuple[OptionCost, ...]
    assumptions: tuple[str, ...]

    def option(self, method: str, configuration: int | str | None = None) -> OptionCost:
        for o in self.options:
            if o.method == method and (method == "fe" or o.configuration == configuration):
                return o
        raise KeyError((method, configuration))


CONFIG_LABELS = {0: "FT, configuration 0 (train everything)", 1: "FT, configuration 1 (freeze ~1/4)",
                 2: "FT, configuration 2 (freeze ~1/2)", 3: "FT, configuration 3 (freeze ~3/4)",
                 "lp-ft": "LP-FT (linear probe, then fine-tune everything)"}


def gpu_speed(key: str) -> Speed:
    gpu = GPUS[key]
    rate = gpu.peak_tflops * 1e12 * GPU_UTILISATION
    return Speed(rate, rate, gpu.board_power_w,
                 f"{gpu.label}: rated {gpu.peak_tflops:g} TFLOP/s (dense bf16/fp16) x an assumed "
                 f"{GPU_UTILISATION:.0%} utilisation, at its {gpu.board_power_w:g} W board power")


def project_costs(situation: Situation, speed: Speed | None, flops_fe_per_image: float,
                  flops_ft_per_image: dict[int | str, float], lp_epochs: int = 5) -> Projection:
    """Time and energy of FE and each FT option on the user's whole labelled set.

    FE: one forward pass per image (x10 with crops). FT: forward + backward of what is trained,
    per image and epoch, for ``situation.epochs`` epochs (an upper bound: early stopping usually
    ends sooner). LP-FT: its first ``lp_epochs`` train the head on frozen features (a forward pass per
    image), the rest the whole network, as the fine-tuning method counts them.
    """
    n = situation.train_images * (10 if situation.use_crops else 1)
    options = []

    def add(label: str, method: str, config, flops: float, rate: float | None) -> None:
        seconds = flops / rate if rate else None
        energy = None if speed is None or speed.watts is None or seconds is None else speed.watts * seconds / 3.6e6
        options.append(OptionCost(label, method, config, flops, seconds, energy))

    add("Feature extraction (every layer, linear classifier)", "fe", None, n * flops_fe_per_image,
        speed.flops_per_s_fe if speed else None)
    for config, per_image in flops_ft_per_image.items():
        if config == "lp-ft":
            probe = min(lp_epochs, situation.epochs)  # the probe's epochs are part of the run's epochs, as in FT
            flops = n * probe * flops_fe_per_image + n * (situation.epochs - probe) * flops_ft_per_image[0]
        else:
            flops = n * situation.epochs * per_image
        add(CONFIG_LABELS.get(config, f"FT, configuration {config}"), "ft", config, flops,
            speed.flops_per_s_ft if speed else None)
    assumptions = (
        f"{situation.train_images:,} labelled images ({situation.samples_per_class} per class x "
        f"{situation.num_classes} classes){', 10 crops each' if situation.use_crops else ''}.",
        f"Fine-tuning runs {situation.epochs} epochs (an upper bound: early stopping usually ends sooner); LP-FT "
        f"spends the first {min(lp_epochs, situation.epochs)} of them on a linear probe.",
        f"FLOPs counted for {situation.backbone} at "
        + (f"{situation.resolution} px" if situation.resolution else "its input size")
        + " (forward for FE; forward + backward of the trained layers for FT).",
        f"Speed: {speed.how}." if speed else "Speed: not known yet (no finished job of this backbone on this "
                                             "machine); only the compute is projected.",
        "Energy: " + ("not projected (no power figure for this device)." if speed is None or speed.watts is None else
                      f"{speed.watts:.0f} W x time; an estimate, like every energy figure on a machine without "
                      "power counters."),
    )
    return Projection(tuple(options), assumptions)


# ---------------------------------------------------------------------------------------------
# Evidence from the user's runs, and how far each piece can be trusted

#: How much a piece of evidence can weigh (the page shows it beside each reason):
STRONG = "strong"  # measured on the user's dataset and backbone, with converged runs
MEDIUM = "medium"  # measured on the user's dataset with another backbone
WEAK = "weak"  # capped or near-chance runs, or another dataset: shown, never deciding
PRIOR = "prior"  # a published finding
PROJECTION = "projection"  # the cost projection (about cost, not accuracy)
DECIDING = (STRONG, MEDIUM)
STRENGTH_LABELS = {
    STRONG: "strong: measured on your dataset and backbone, converged runs",
    MEDIUM: "medium: measured on your dataset with another backbone",
    WEAK: "weak: shown, never deciding",
    PRIOR: "prior: a published finding",
    PROJECTION: "cost projection",
}
#: Measurements within this factor of the user's samples per class count as made "at" it.
NEAR_FACTOR = 2.0
#: An option projected to cost this many times the cheapest one needs measured evidence that it scores higher.
COSTLY_RATIO = 10.0


@dataclass(frozen=True)
class EvidenceItem:
    """One thing the user's runs say, how strong it is, and whether the recommendation used it."""

    kind: str  # comparison | crossover | quanta
    strength: str
    text: str
    used: bool = True
    why_not: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "strength": self.strength, "text": self.text}
        if not self.used:
            out["why_not_used"] = self.why_not
        return out


@dataclass(frozen=True)
class Comparison:
    """Feature extraction against the best fine-tuning configuration at one samples-per-class value,
    paired by training draw (``diff`` = FT - FE, with its 95 % interval)."""

    dataset: str
    backbone: str
    strength: str
    spc: int
    near: bool  # within NEAR_FACTOR of the user's samples per class
    measured_range: tuple[int, int]
    fe_variant: str
    ft_configuration: int | str | None
    fe: tuple[float, float, float]  # mean, 95% low, 95% high (NaN bounds with one draw)
    ft: tuple[float, float, float]
    diff: float
    diff_low: float
    diff_high: float
    n_pairs: int
    verdict: str  # fe_higher | ft_higher | not_resolved

    @property
    def where(self) -> str:
        return f"on {self.dataset} with {self.backbone}"

    @property
    def says_ft_lower(self) -> bool:
        return self.verdict == "fe_higher" or (self.verdict == "not_resolved" and self.ft[0] <= self.fe[0])

    def describe(self) -> str:
        interval = (f"{self.diff * 100:+.1f} points, 95% interval {self.diff_low * 100:+.1f} to "
                    f"{self.diff_high * 100:+.1f} over {self.n_pairs} draws" if np.isfinite(self.diff_low) else
                    f"{self.diff * 100:+.1f} points from {self.n_pairs} draw{'s' if self.n_pairs != 1 else ''}, too "
                    "few for an interval")
        ft = f"fine-tuning (configuration {self.ft_configuration})"
        scores = f"feature extraction {self.fe[0]:.1%}, {ft} {self.ft[0]:.1%}"
        if self.verdict == "fe_higher":
            head = f"feature extraction scored higher than {ft}"
        elif self.verdict == "ft_higher":
            head = f"{ft} scored higher than feature extraction"
        else:
            head = f"feature extraction and {ft} were not separated (the interval includes 0)"
        return (f"In your runs {self.where} at {self.spc} samples per class, {head}: {scores} (FT - FE "
                f"{interval}).")


@dataclass(frozen=True)
class Evidence:
    """What the user's own runs say about a situation like theirs, each piece with its strength.

    ``comparison``: the strongest FE-vs-FT comparison (None without one); ``crossover``: the
    resolved crossover of that dataset and backbone, if any, as (spc, low, high, configuration);
    ``quanta_depth``: (k, n) when QUANTA runs of the chosen backbone on this dataset show a signal
    against their control; ``items``: everything found, used or not, with why not.
    """

    dataset: str | None = None
    backbone: str | None = None
    comparison: Comparison | None = None
    crossover: tuple[float, float, float, int | str | None] | None = None
    quanta_depth: tuple[int, int] | None = None
    quanta_backbone: str | None = None
    quanta_dataset: str | None = None
    items: tuple[EvidenceItem, ...] = ()
    curves: Any = field(default=None, compare=False, repr=False)  # the closest learning curves (a DataFrame)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(i.text for i in self.items)

    @property
    def weak_items(self) -> list[EvidenceItem]:
        return [i for i in self.items if i.strength == WEAK]


# ---------------------------------------------------------------------------------------------
# The recommendation


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


def fits_budget(s: Situation, option: OptionCost) -> bool:
    """Whether an option stays within the user's hours and kWh (an unknown time or energy is not held
    against it: the page says when the pace is unknown)."""
    ok = s.budget_hours is None or option.seconds is None or option.seconds <= s.budget_hours * 3600
    return ok and (s.budget_kwh is None or option.energy_kwh is None or option.energy_kwh <= s.budget_kwh)


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
    reasons: list[Reason] = []
    fired: list[str] = []
    cautions: list[str] = []
    measured_src = book.sources.get("your_runs")

    method_rules = sorted((r for r in book.rules if r.kind == "method"), key=lambda r: -r.priority)
    chosen = next(r for r in method_rules if rule_matches(r, facts))
    method = chosen.recommend["method"]
    configuration = chosen.recommend.get("configuration", 0 if method == "ft" else None)
    layers = chosen.recommend.get("layers")
    comp = evidence.comparison if evidence is not None else None
    measured = _measured_decision(evidence, s) if measured_src is not None else None
    if measured is not None and not (chosen.id == "ft-over-budget" and measured[0] == "ft"):
        method, measured_config, text, strength = measured
        configuration = measured_config if method == "ft" else None
        layers = "all" if method == "fe" else None
        reasons.append(Reason(text, "measured-in-your-runs", measured_src, strength))
        fired.append("measured-in-your-runs")
        if chosen.recommend["method"] != method:
            reasons.append(Reason(f"(The generic rule would have said {chosen.recommend['method'].upper()}: "
                                  f"{chosen.because})", chosen.id, book.sources[chosen.source], PRIOR))
        else:
            reasons.append(Reason(chosen.because, chosen.id, book.sources[chosen.source], _rule_strength(chosen)))
        fired.append(chosen.id)
    elif (comp is not None and comp.strength in DECIDING and comp.near and comp.verdict == "not_resolved"
          and measured_src is not None and chosen.id != "ft-over-budget"):
        # measured at the user's label count but not separated: the cheaper option, said plainly
        method, configuration, layers = "fe", None, "all"
        reasons.append(Reason(comp.describe() + " With no measured difference, the cheaper option wins.",
                              "measured-tie", measured_src, comp.strength))
        fired.append("measured-tie")
        if chosen.recommend["method"] != "fe":
            reasons.append(Reason(f"(The generic rule would have said {chosen.recommend['method'].upper()}: "
                                  f"{chosen.because})", chosen.id, book.sources[chosen.source], PRIOR))
        fired.append(chosen.id)
        cautions.append("Your runs do not separate the two methods at your number of labels; the pilot with more "
                        "draws, or more labels, would.")
    else:
        reasons.append(Reason(chosen.because, chosen.id, book.sources[chosen.source], _rule_strength(chosen)))
        fired.append(chosen.id)
    facts["method"] = method

    pilot = False
    # The depth is fixed when the deciding rule or the user's runs named one; advice fills it in otherwise,
    # highest priority first, and a lower-priority rule that disagrees is not shown.
    config_fixed = method == "ft" and ((measured is not None and configuration is not None)
                                       or "configuration" in chosen.recommend)
    depth_reason: int | None = None  # the reason that chose the freezing depth, if advice did
    for rule in sorted((r for r in book.rules if r.kind == "advice"), key=lambda r: -r.priority):
        if not rule_matches(rule, facts):
            continue
        rec = rule.recommend
        if "configuration" in rec:
            if config_fixed and rec["configuration"] != configuration:
                continue
            configuration, config_fixed = rec["configuration"], True
            depth_reason = len(reasons)
        pilot = pilot or bool(rec.get("pilot"))
        reasons.append(Reason(rule.because, rule.id, book.sources[rule.source], _rule_strength(rule)))
        fired.append(rule.id)

    if method == "ft" and configuration is None:
        configuration = 0
    # QUANTA sets the depth only from the chosen backbone on this dataset, with a layer that showed a signal
    if (evidence is not None and method == "ft" and evidence.quanta_depth is not None and configuration != "lp-ft"
            and evidence.quanta_backbone == s.backbone and same_task_family(evidence.quanta_dataset, s.dataset)
            and measured_src is not None):
        k, n = evidence.quanta_depth
        suggested = min(3, int(k / n * 4))
        if depth_reason is not None and suggested != configuration:
            old = reasons[depth_reason]
            reasons[depth_reason] = Reason(f"(The generic advice would have said configuration {configuration}: "
                                           f"{old.text})", old.rule_id, old.source, old.strength)
        reasons.append(Reason(
            f"In your QUANTA runs ({evidence.quanta_backbone} on {evidence.quanta_dataset}), lambda_S stayed above "
            f"the random-source control for the first {k} of {n} layers (95% intervals): those transfer, which "
            f"supports freezing about {suggested}/4 of the network (configuration {suggested}).",
            "measured-quanta-depth", measured_src, STRONG))
        fired.append("measured-quanta-depth")
        configuration = suggested

    def cost_of(o: OptionCost) -> float:
        return o.seconds if o.seconds is not None else o.flops

    def option_for(m: str, config) -> OptionCost | None:
        key = (m, config if m == "ft" else None)
        return next((o for o in projection.options if (o.method, o.configuration if o.method == "ft" else None)
                     == key), None) if projection is not None else None

    # an option 10x costlier than the cheapest needs measured evidence that it scores higher
    chosen_cost = option_for(method, configuration)
    if (projection is not None and chosen_cost is not None and method == "ft" and comp is not None
            and comp.strength in DECIDING and comp.says_ft_lower and measured_src is not None):
        cheapest = min(projection.options, key=cost_of)
        ratio = cost_of(chosen_cost) / max(cost_of(cheapest), 1e-12)
        if ratio >= COSTLY_RATIO and cheapest.method == "fe":
            beyond = "" if comp.near else (f" (measured up to {comp.measured_range[1]} samples per class; you have "
                                           f"{s.samples_per_class}: the pilot at more labels would tell)")
            reasons.insert(0, Reason(
                f"{chosen_cost.label} is projected at {ratio:.0f}x the cost of feature extraction, and your runs "
                f"{comp.where} do not show it scoring higher: {comp.describe()}{beyond} Feature extraction is "
                "recommended until a run shows the gain is worth the cost.", "costly-without-measured-gain",
                measured_src, comp.strength))
            fired.insert(0, "costly-without-measured-gain")
            method, configuration, layers = "fe", None, "all"
            chosen_cost = option_for("fe", None)
            if not comp.near:
                cautions.append("Your runs stop below your number of labels; fine-tuning may still gain there.")
                pilot = True

    alternatives: list[tuple[OptionCost, str]] = []
    if projection is not None:
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

    # weak or conflicting evidence: say so, point to the pilot
    if evidence is not None:
        weak = evidence.weak_items
        if weak and (comp is None or comp.strength not in DECIDING):
            cautions.append("Your runs here are weak evidence (" + "; ".join(i.why_not or i.text for i in weak[:2])
                            + "): they are shown but do not decide.")
        conflicts = [i for i in evidence.items if i.kind == "conflict"]
        if conflicts:
            cautions.append(conflicts[0].text)
    if cautions:
        pilot = True

    accuracy_note, expected = _expected_accuracy(s, method, comp)
    caution = " ".join(dict.fromkeys(cautions))
    if caution:
        caution += " Run the pilot to measure it on your images."
    return Recommendation(method, configuration if method == "ft" else None, layers, reasons, alternatives,
                          chosen_cost, projection, evidence, fired, accuracy_note, pilot, caution, expected)


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


def same_task_family(a: str | None, b: str | None) -> bool:
    """Whether two dataset names come from one dataset (``digits:5-9`` and ``digits``): QUANTA runs on
    it speak about the user's data, runs on another dataset do not."""
    if not a or not b:
        return False
    return str(a).split(":")[0].rstrip("/\\") == str(b).split(":")[0].rstrip("/\\")


def witness(rule: Rule) -> dict[str, Any]:
    """Facts that satisfy a rule's conditions (tests use it to show every rule is reachable)."""
    facts: dict[str, Any] = {}
    for key, expected in rule.when.items():
        if isinstance(expected, dict):
            lo, hi = expected.get("min"), expected.get("max")
            facts[key] = lo if lo is not None else hi
        elif isinstance(expected, list):
            facts[key] = expected[0]
        else:
            facts[key] = expected
    return facts


def situation_for(facts: dict[str, Any], base: Situation | None = None) -> Situation:
    """A situation whose facts include ``facts`` (budget conditions are met through the projection)."""
    s = base or Situation(samples_per_class=10, num_classes=10)
    changes: dict[str, Any] = {}
    for key in ("samples_per_class", "num_classes", "tuning_time", "deployment_shift", "domain"):
        if key in facts:
            changes[key] = facts[key]
    if "shift" in facts and "domain" not in facts:
        changes["domain"] = next(k for k, d in DOMAINS.items() if d.shift == facts["shift"])
    if facts.get("gpu"):
        changes["device"] = "a100"
    return replace(s, **changes)



# ---------------------------------------------------------------------------------------------
# The pilot


PILOT_SPC = (1, 2, 5, 10)
PILOT_DRAWS = 3  # draws per value: the fewest that give a paired 95% interval a chance to exclude 0


def pilot_specs(situation: Situation, rec: Recommendation, dataset: str, resolution: int | None = None,
                seed: int = 0) -> list:
    """The cheap experiments that would confirm ``rec`` on the user's data: a feature-extraction
    curve at small samples per class and one fine-tuning configuration at the two largest of them,
    three draws each (so FE and FT compare on the same draws with an interval), at the input size
    the images call for: minutes, not the budget."""
    from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams

    grid = tuple(v for v in PILOT_SPC if v <= situation.samples_per_class) or (situation.samples_per_class,)
    config = rec.configuration if rec.method == "ft" and rec.configuration is not None else (
        0 if situation.shift == "input" else 2)
    common = dict(backbone=situation.backbone, resolution=resolution or situation.resolution, seed=seed,
                  splits=PILOT_DRAWS, tags={"pilot": "guidelines"})
    fe = ExperimentSpec("fe", dataset, samples_per_class=grid, params=FeatureExtractionParams(), **common)
    # fine-tuning on the two largest values only, but with as many draws as FE: a paired comparison needs
    # several draws to carry an interval, and fine-tuning costs far more per point
    ft = ExperimentSpec("ft", dataset, samples_per_class=grid[-2:], params=FineTuningParams(configuration=config),
                        **common)
    return [fe.validate(), ft.validate()]
