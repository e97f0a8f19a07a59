"""The guideline walkthrough: a practitioner's situation in, a recommendation with reasons out.

The rules are data (``data/guidelines.yaml``): conditions, a recommendation, the sentences shown
and a source (a published finding, the cost projection, or the user's own runs). The package
reads them (:mod:`~tlcore.guidelines.rules`), grades the user's own runs by strength
(:mod:`~tlcore.guidelines.evidence`), projects what each option would cost on the user's full
dataset (:mod:`~tlcore.guidelines.projection`) and recommends, letting measured evidence of
deciding strength override a generic rule (:mod:`~tlcore.guidelines.recommend`).
:func:`advise` (:mod:`~tlcore.guidelines.advice`) is the one call the page and the CLI make.

    >>> from tlcore.guidelines import Situation, advise
    >>> advice = advise(Situation(samples_per_class=10, num_classes=5, domain="medical"))
    >>> advice.recommendation.method
    'fe'
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives. Importing the package loads none of them: the CLI's --help and the pages'
#: first paint need only the situation's constants, not pandas and the evidence machinery (PEP 562).
_HOMES: dict[str, str] = {name: module for module, names in {
    "tlcore.guidelines.advice": "Advice PILOT_DRAWS PILOT_SPC advise pilot_specs situation_from_dataset",
    "tlcore.guidelines.backbone": "PROXY BackboneSuggestion suggest_backbone",
    "tlcore.guidelines.evidence": (
        "Comparison DECIDING Evidence EvidenceItem MEDIUM NEAR_FACTOR PRIOR PROJECTION STRENGTH_LABELS STRONG "
        "WEAK configuration_of gather_evidence same_task_family spc_grid_for_pilot"
    ),
    "tlcore.guidelines.projection": (
        "CONFIG_LABELS OptionCost Projection fits_budget gpu_speed machine_speed project_costs"
    ),
    "tlcore.guidelines.recommend": "COSTLY_RATIO Reason Recommendation recommend situation_facts",
    "tlcore.guidelines.rules": (
        "CONDITION_KEYS GuidelineError KINDS RULES_PATH Rule RuleBook Source _parse condition_holds "
        "load_rules rule_matches"
    ),
    "tlcore.guidelines.situation": "DOMAINS Domain GPU GPUS GPU_UTILISATION Situation TUNING_TIMES",
    "tlcore.speed": "Speed calibrate_speed",
}.items() for name in names.split()}

__all__ = [
    "CONDITION_KEYS", "CONFIG_LABELS", "COSTLY_RATIO", "DECIDING", "DOMAINS", "GPU", "GPUS", "GPU_UTILISATION",
    "KINDS", "MEDIUM", "NEAR_FACTOR", "PILOT_DRAWS", "PILOT_SPC", "PRIOR", "PROJECTION", "PROXY", "RULES_PATH",
    "STRENGTH_LABELS", "STRONG", "TUNING_TIMES", "WEAK", "Advice", "BackboneSuggestion", "Comparison", "Domain",
    "Evidence", "EvidenceItem",
    "GuidelineError", "OptionCost", "Projection", "Reason", "Recommendation", "Rule", "RuleBook", "Situation",
    "Source", "Speed", "_parse", "advise", "calibrate_speed", "condition_holds", "configuration_of", "fits_budget",
    "gather_evidence", "gpu_speed", "load_rules", "machine_speed", "pilot_specs", "project_costs", "recommend",
    "rule_matches", "same_task_family", "situation_facts", "situation_from_dataset",
    "spc_grid_for_pilot", "suggest_backbone",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tlcore.guidelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
