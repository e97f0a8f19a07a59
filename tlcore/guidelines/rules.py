"""The guideline rules as data (``data/guidelines.yaml``): conditions, a recommendation, the
sentences shown and a source. This module reads and checks the file and evaluates a rule's
conditions against a situation's facts; :mod:`tlcore.guidelines.recommend` decides with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from tlcore.errors import TLError

RULES_PATH = Path(__file__).resolve().parents[2] / "data" / "guidelines.yaml"


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
