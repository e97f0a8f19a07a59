"""Which backbone to try first: the top of the user's latest ranking on their dataset, as a measured proxy.

A ranking (``python -m tlcore rank``, the Run page's "Rank backbones") scores backbones without training
them. Its top backbone is a *proxy*: measured on the user's images, but a score, not an accuracy. It
suggests a backbone and never decides feature extraction against fine-tuning. A score that put a
random-weights control at or above a pretrained backbone in that ranking is left out (it says little on
these images); when the trusted scores disagree on the top backbone, the suggestion says so instead of
picking one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

PROXY = "measured proxy"
PROXY_LABEL = "measured proxy: a training-free score on your images, not an accuracy"
#: The scores that may name the backbone, strongest first (SFDA and LogME: the best reported rank agreement).
TRUSTED_ORDER = ("sfda", "logme", "leep", "nce", "hscore")


@dataclass(frozen=True)
class BackboneSuggestion:
    """The backbone a ranking puts first, by which scores, and what was left out and why."""

    backbone: str | None
    scores: tuple[str, ...]
    dataset: str
    ranking_run_id: str
    strength: str = PROXY
    text: str = ""
    left_out: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "scores": list(self.scores), "strength": self.strength,
                "text": self.text, "left_out": list(self.left_out), "ranking_run_id": self.ranking_run_id}


def suggest_backbone(ranking_runs: pd.DataFrame, dataset: str | None) -> BackboneSuggestion | None:
    """The suggestion from the newest finished ranking of ``dataset`` with two or more pretrained backbones."""
    from tlcore.results import ranking as ranking_results

    if not dataset or ranking_runs is None or ranking_runs.empty:
        return None
    jobs = ranking_results.rankings(ranking_runs)
    jobs = jobs[(jobs["dataset"].astype(str) == dataset) & (jobs["status"] == "FINISHED")]
    for parent in jobs["run_id"]:
        table = ranking_results.ranking_table(ranking_runs, parent)
        table = table[table["status"] == "FINISHED"]
        if (~table["control"]).sum() >= 2:
            return _from_table(table, dataset, parent)
    return None


def _from_table(table: pd.DataFrame, dataset: str, parent: str) -> BackboneSuggestion:
    from tlcore.results import ranking as ranking_results

    labels = ranking_results.SCORE_LABELS
    suspect = {s for s in ranking_results.scores_in(table)
               if any(labels[s] in w for w in ranking_results.control_warnings(table))}
    trained = table[~table["control"]]
    tops: dict[str, str] = {}
    for s in TRUSTED_ORDER:
        if s in suspect or s not in trained or trained[s].notna().sum() < 2:
            continue
        tops[s] = str(trained.loc[trained[s].idxmax(), "backbone"])
    left_out = tuple(f"{labels[s]}: it put a random-weights control at or above a pretrained backbone" for s in
                     sorted(suspect, key=TRUSTED_ORDER.index))
    if not tops:
        return BackboneSuggestion(None, (), dataset, parent, text=f"Your ranking on {dataset} suggests no backbone: "
                                  "no score ranked its random-weights controls last.", left_out=left_out)
    lead = tops[next(iter(tops))]
    agree = tuple(s for s, b in tops.items() if b == lead)
    names = " and ".join(labels[s] for s in agree)
    if len(agree) == len(tops):
        text = f"{lead}: ranked first by {names} on your images ({dataset})."
        return BackboneSuggestion(lead, agree, dataset, parent, text=text, left_out=left_out)
    others = ", ".join(f"{labels[s]} puts {b} first" for s, b in tops.items() if b != lead)
    text = (f"Your ranking on {dataset} is split: {names} put{'s' if len(agree) == 1 else ''} {lead} first, {others}. "
            "Try the leading candidates with a short feature-extraction curve each.")
    return BackboneSuggestion(None, tuple(tops), dataset, parent, text=text, left_out=left_out)
