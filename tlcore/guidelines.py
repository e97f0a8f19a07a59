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
    ends sooner). LP-FT: ``lp_epochs`` of the head on frozen features, then full fine-tuning.
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
            flops = n * lp_epochs * flops_fe_per_image + n * situation.epochs * flops_ft_per_image[0]
        else:
            flops = n * situation.epochs * per_image
        add(CONFIG_LABELS.get(config, f"FT, configuration {config}"), "ft", config, flops,
            speed.flops_per_s_ft if speed else None)
    assumptions = (
        f"{situation.train_images:,} labelled images ({situation.samples_per_class} per class x "
        f"{situation.num_classes} classes){', 10 crops each' if situation.use_crops else ''}.",
        f"Fine-tuning runs {situation.epochs} epochs (an upper bound: early stopping usually ends sooner); LP-FT "
        f"adds {lp_epochs} linear-probe epochs.",
        f"FLOPs counted for {situation.backbone} at its input size (forward for FE; forward + backward of the "
        "trained layers for FT).",
        f"Speed: {speed.how}." if speed else "Speed: not known yet (no finished job of this backbone on this "
                                             "machine); only the compute is projected.",
        "Energy: " + ("not projected (no power figure for this device)." if speed is None or speed.watts is None else
                      f"{speed.watts:.0f} W x time; an estimate, like every energy figure on a machine without "
                      "power counters."),
    )
    return Projection(tuple(options), assumptions)


# ---------------------------------------------------------------------------------------------
# Evidence from the user's runs


@dataclass(frozen=True)
class Evidence:
    """What the user's own runs say about a situation like theirs.

    ``crossover_spc``: the samples per class where a fine-tuning curve overtook feature
    extraction (None when it never did in the measured range, which ``measured_up_to`` gives).
    """

    dataset: str | None
    backbone: str | None
    fe_accuracy: tuple[float, float] | None = None  # (mean, std) at the closest samples per class
    ft_accuracy: tuple[float, float] | None = None
    ft_configuration: int | str | None = None
    closest_spc: int | None = None
    crossover_spc: float | None = None
    crossover_configuration: int | str | None = None
    measured_up_to: int | None = None
    quanta_depth: int | None = None  # layers whose lambda_S beat the random-source control
    quanta_layers: int | None = None
    quanta_backbone: str | None = None
    quanta_dataset: str | None = None
    notes: tuple[str, ...] = ()
    curves: Any = field(default=None, compare=False, repr=False)  # the closest learning curves (a DataFrame)


# ---------------------------------------------------------------------------------------------
# The recommendation


@dataclass(frozen=True)
class Reason:
    text: str
    rule_id: str
    source: Source


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


def _measured_reason(ev: Evidence, s: Situation) -> tuple[str, int | str | None, str] | None:
    """A decision from the user's runs, or None when they do not cover this situation."""
    where = f"on {ev.dataset}" + (f" with {ev.backbone}" if ev.backbone else "")
    if ev.crossover_spc is not None:
        config = ev.crossover_configuration
        if s.samples_per_class >= ev.crossover_spc:
            return ("ft", config, f"In your runs {where}, fine-tuning (configuration {config}) overtook feature "
                                  f"extraction at about {ev.crossover_spc:.0f} samples per class; you have "
                                  f"{s.samples_per_class}.")
        return ("fe", None, f"In your runs {where}, fine-tuning overtook feature extraction only at about "
                            f"{ev.crossover_spc:.0f} samples per class; you have {s.samples_per_class}.")
    if ev.fe_accuracy and ev.ft_accuracy and ev.measured_up_to and s.samples_per_class <= ev.measured_up_to:
        fe, ft = ev.fe_accuracy[0], ev.ft_accuracy[0]
        better = "fe" if fe >= ft else "ft"
        return (better, None if better == "fe" else ev.ft_configuration,
                f"In your runs {where} up to {ev.measured_up_to} samples per class, "
                f"{'feature extraction' if better == 'fe' else 'fine-tuning'} scored higher "
                f"({max(fe, ft):.1%} vs {min(fe, ft):.1%} at {ev.closest_spc} samples per class).")
    return None


def recommend(situation: Situation, book: RuleBook | None = None, projection: Projection | None = None,
              evidence: Evidence | None = None) -> Recommendation:
    """Evaluate the rules for a situation; the user's runs, when they cover it, decide first."""
    s = situation.validate()
    book = book or load_rules()
    facts = situation_facts(s, projection)
    reasons: list[Reason] = []
    fired: list[str] = []

    method_rules = sorted((r for r in book.rules if r.kind == "method"), key=lambda r: -r.priority)
    chosen = next(r for r in method_rules if rule_matches(r, facts))
    method = chosen.recommend["method"]
    configuration = chosen.recommend.get("configuration", 0 if method == "ft" else None)
    layers = chosen.recommend.get("layers")
    measured = _measured_reason(evidence, s) if evidence is not None and "your_runs" in book.sources else None
    if measured is not None and not (chosen.id == "ft-over-budget" and measured[0] == "ft"):
        method, measured_config, text = measured
        configuration = measured_config if method == "ft" else None
        layers = "all" if method == "fe" else None
        reasons.append(Reason(text, "measured-in-your-runs", book.sources["your_runs"]))
        fired.append("measured-in-your-runs")
        if chosen.recommend["method"] != method:
            reasons.append(Reason(f"(The generic rule would have said {chosen.recommend['method'].upper()}: "
                                  f"{chosen.because})", chosen.id, book.sources[chosen.source]))
        else:
            reasons.append(Reason(chosen.because, chosen.id, book.sources[chosen.source]))
        fired.append(chosen.id)
    else:
        reasons.append(Reason(chosen.because, chosen.id, book.sources[chosen.source]))
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
        reasons.append(Reason(rule.because, rule.id, book.sources[rule.source]))
        fired.append(rule.id)

    if method == "ft" and configuration is None:
        configuration = 0
    if (evidence is not None and method == "ft" and evidence.quanta_depth is not None and evidence.quanta_layers
            and configuration != "lp-ft" and same_task_family(evidence.quanta_dataset, s.dataset)):
        share = evidence.quanta_depth / evidence.quanta_layers
        suggested = min(3, int(share * 4))
        if depth_reason is not None and suggested != configuration:
            old = reasons[depth_reason]
            reasons[depth_reason] = Reason(f"(The generic advice would have said configuration {configuration}: "
                                           f"{old.text})", old.rule_id, old.source)
        reasons.append(Reason(
            f"In your QUANTA runs ({evidence.quanta_backbone or evidence.backbone} on "
            f"{evidence.quanta_dataset or evidence.dataset}), lambda_S stayed above the random-source control for "
            f"the first {evidence.quanta_depth} of {evidence.quanta_layers} layers: those transfer, which supports "
            f"freezing about {suggested}/4 of the network (configuration {suggested}).",
            "measured-quanta-depth", book.sources["your_runs"]))
        fired.append("measured-quanta-depth")
        configuration = suggested

    chosen_cost: OptionCost | None = None
    alternatives: list[tuple[OptionCost, str]] = []
    if projection is not None:
        key = (method, configuration if method == "ft" else None)
        chosen_cost = next((o for o in projection.options if (o.method, o.configuration if o.method == "ft" else None)
                            == key), None)
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

    accuracy_note = ""
    near = evidence is not None and evidence.closest_spc is not None and (
        s.samples_per_class / 2 <= evidence.closest_spc <= s.samples_per_class * 2)
    if evidence is not None and evidence.closest_spc is not None and not near:
        fe, ft = evidence.fe_accuracy, evidence.ft_accuracy
        accuracy_note = (f"Not measured near {s.samples_per_class} samples per class: your closest runs "
                         f"({evidence.dataset}, {evidence.backbone}) are at {evidence.closest_spc}, where feature "
                         f"extraction scored {fe[0]:.0%} and fine-tuning {ft[0]:.0%}. The pilot measures it.")
    elif near:
        acc = evidence.fe_accuracy if method == "fe" else evidence.ft_accuracy
        if acc is not None and acc[1] > 0:
            lo, hi = max(0.0, acc[0] - acc[1]), min(1.0, acc[0] + acc[1])
            accuracy_note = (f"{lo:.0%}-{hi:.0%} (balanced accuracy of your runs on {evidence.dataset} at "
                             f"{evidence.closest_spc} samples per class, mean ± std over splits)")
        elif acc is not None:
            accuracy_note = (f"about {acc[0]:.0%} (balanced accuracy of your runs on {evidence.dataset} at "
                             f"{evidence.closest_spc} samples per class; one split, so no spread yet)")
    if not accuracy_note:
        accuracy_note = ("Not known yet: no published source gives an accuracy for your data, and your store has "
                         "no comparable runs. The pilot measures it.")
    return Recommendation(method, configuration if method == "ft" else None, layers, reasons, alternatives,
                          chosen_cost, projection, evidence, fired, accuracy_note, pilot)


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


def pilot_specs(situation: Situation, rec: Recommendation, dataset: str, resolution: int | None = None,
                seed: int = 0) -> list:
    """The cheap experiments that would confirm ``rec`` on the user's data: a feature-extraction
    curve at small samples per class and one fine-tuning configuration on the same grid (one
    split each, so it costs minutes, not the budget)."""
    from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams

    grid = tuple(v for v in PILOT_SPC if v <= situation.samples_per_class) or (situation.samples_per_class,)
    config = rec.configuration if rec.method == "ft" and rec.configuration is not None else (
        0 if situation.shift == "input" else 2)
    common = dict(backbone=situation.backbone, samples_per_class=grid, resolution=resolution, seed=seed,
                  tags={"pilot": "guidelines"})
    fe = ExperimentSpec("fe", dataset, splits=3, params=FeatureExtractionParams(), **common)
    ft = ExperimentSpec("ft", dataset, splits=1, params=FineTuningParams(configuration=config), **common)
    return [fe.validate(), ft.validate()]
