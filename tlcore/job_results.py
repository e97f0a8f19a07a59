"""What a finished job found, as one card: the headline, what it cost, what it earned.

The Run page shows it in its main column when a job ends. A curve (feature extraction,
fine-tuning) reads as mean ± spread per samples-per-class value with its 95 % interval; QUANTA as
each layer's verdict against its random-source control, or lambda_S per layer when no control
exists yet; a source training as its test accuracy; a ranking as its networks, best first, with the
verdict of its random-weights controls. Pure functions of the job's MLflow rows
(:func:`tlcore.history.job_runs`) and, for QUANTA, the QUANTA view (:mod:`tlcore.results`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tlcore import quality, units


@dataclass
class ResultCard:
    """``rows`` is the headline table (already formatted for people); ``verdict`` one line."""

    title: str
    rows: list[dict] = field(default_factory=list)
    cost: dict[str, str] = field(default_factory=dict)
    verdict: str = ""
    weak: bool = False
    notes: list[str] = field(default_factory=list)


def _points(runs: pd.DataFrame) -> pd.DataFrame:
    pts = runs[~runs["sweep_parent"].astype(bool)].copy()
    pts["spc"] = pd.to_numeric(pts["samples_per_class"], errors="coerce")
    return pts


def _cost(runs: pd.DataFrame) -> dict[str, str]:
    parent = runs[runs["sweep_parent"].astype(bool)]
    src = parent if not parent.empty and parent["time_total_s"].notna().any() else runs
    total = lambda col: pd.to_numeric(src[col], errors="coerce").sum(min_count=1)
    return {"time": units.duration(total("time_total_s")), "compute": units.flops(total("flops_total")),
            "energy": units.energy(total("energy_kwh")), "CO2": units.co2(total("co2_kg"))}


def _verdict(runs: pd.DataFrame) -> tuple[str, bool]:
    parent = runs[runs["sweep_parent"].astype(bool)]
    row = parent.iloc[0] if not parent.empty else (runs.iloc[0] if len(runs) == 1 else None)
    if row is not None and isinstance(row.get("quality"), str):
        q = row["quality"]
        return f"{quality.LABELS.get(q, q).capitalize()}: {row.get('quality_reason') or ''}".strip(), q in quality.WEAK
    verdicts = [q for q in runs.get("quality", pd.Series(dtype=object)) if isinstance(q, str)]
    summary = quality.summarize(verdicts)
    if summary is None:
        return "", False
    return f"{quality.LABELS.get(summary.quality, summary.quality).capitalize()}: {summary.reason}", summary.weak


def curve_card(runs: pd.DataFrame, title: str) -> ResultCard:
    """Mean ± spread of balanced accuracy per samples-per-class value, with the 95 % interval."""
    pts = _points(runs)
    done = pts[(pts["status"] == "FINISHED") & pts["accuracy"].notna() & pts["spc"].notna()]
    card = ResultCard(title, cost=_cost(runs))
    card.verdict, card.weak = _verdict(runs)
    for spc, g in done.groupby("spc"):
        mean, low, high = quality.t_interval(g["accuracy"].tolist())
        std = g["accuracy"].std() if len(g) > 1 else float("nan")
        weak = g["quality"].map(quality.is_weak).sum() if "quality" in g else 0
        metric = (g["accuracy_metric"].dropna().iloc[0] if g["accuracy_metric"].notna().any() else "test_accuracy")
        card.rows.append({
            "samples per class": int(spc),
            "balanced accuracy": f"{units.percent(mean)}" + (f" ± {std * 100:.1f}" if pd.notna(std) else ""),
            "95% interval": (f"{low * 100:.1f}–{high * 100:.1f} %" if pd.notna(low) else "one draw: none"),
            "draws": len(g),
            "weak runs": int(weak),
            "scored on": "validation" if str(metric).startswith("val") else "test",
        })
    failed = pts[pts["status"] == "FAILED"]
    if len(failed):
        first = failed["error"].dropna()
        card.notes.append(f"{len(failed)} run(s) failed" + (f": {first.iloc[0]}" if len(first) else "."))
    return card


def quanta_card(runs: pd.DataFrame, verdicts: pd.DataFrame | None, title: str) -> ResultCard:
    """Each layer's verdict against the control (when one exists with the same settings), else lambda_S."""
    card = ResultCard(title, cost=_cost(runs))
    card.verdict, card.weak = _verdict(runs)
    mine = verdicts[verdicts["matched"]] if verdicts is not None and not verdicts.empty else pd.DataFrame()
    if not mine.empty:
        for r in mine.sort_values("layer_pos").itertuples():
            card.rows.append({"layer": r.layer, "verdict": r.meaning,
                              "λ_S trained − control": f"{r.delta:+.4f}",
                              "95% interval": (f"{r.low:+.4f} to {r.high:+.4f}" if pd.notna(r.low) else "—"),
                              "runs (trained / control)": f"{r.n_trained} / {r.n_control}"})
    else:
        card.notes.append("No random-source control with the same settings yet: λ_S alone does not show that a "
                          "layer transfers. Run the same QUANTA job with source weights = random.")
    acc = _points(runs)
    acc = acc[(acc["status"] == "FINISHED") & acc["accuracy"].notna()]
    if len(acc):
        card.notes.append(f"Target test accuracy {units.percent(acc['accuracy'].mean())} over {len(acc)} run(s).")
    return card


def source_card(runs: pd.DataFrame, title: str) -> ResultCard:
    card = ResultCard(title, cost=_cost(runs))
    card.verdict, card.weak = _verdict(runs)
    done = runs[(runs["status"] == "FINISHED") & runs["accuracy"].notna()]
    if len(done):
        card.rows.append({"trained on": done["dataset"].iloc[0],
                          "test accuracy": units.percent(done["accuracy"].iloc[0]), "run": done["run_id"].iloc[0]})
    return card


def ranking_card(runs: pd.DataFrame, table: pd.DataFrame | None, title: str) -> ResultCard:
    """The networks best first by the first score, each score's mean ± spread over draws; suspect scores named."""
    from tlcore.results import ranking as ranking_results

    card = ResultCard(title, cost=_cost(runs))
    if table is None or table.empty:
        card.notes.append("No network finished scoring.")
        return card
    scores = ranking_results.scores_in(table)
    for r in table.to_dict("records"):
        row = {"network": r["network"]}
        for s in scores:
            v, sd = r.get(s), r.get(f"{s}_std")
            row[ranking_results.SCORE_LABELS[s]] = ("n/a" if pd.isna(v) else f"{v:.4g}" + (
                f" ± {sd:.2g}" if pd.notna(sd) and sd > 0 else ""))
        row["time"] = units.duration(r.get("time_total_s"))
        card.rows.append(row)
    warnings = ranking_results.control_warnings(table)
    if warnings:
        card.verdict, card.weak = " ".join(warnings), True
    elif table["control"].any():
        card.verdict = "Every score ranked the random-weights controls below every pretrained backbone."
    else:
        card.notes.append("No random-weights control: rank again with it to see whether the scores mean anything here.")
    timing = ranking_results.time_beside_fe(table)
    if pd.notna(timing["fe_curve_extract_s_min"]):
        card.notes.append(f"One feature-extraction curve of one backbone would cost at least "
                          f"{units.duration(timing['fe_curve_extract_s_min'])} of extraction alone here "
                          f"({int(timing['fe_curve_images']):,} images); this ranking took "
                          f"{units.duration(timing['time_total_s'])} for {len(table)} networks.")
    return card


def result_card(runs: pd.DataFrame, method: str, title: str, quanta_verdicts: pd.DataFrame | None = None,
                ranking_table: pd.DataFrame | None = None) -> ResultCard | None:
    """The card of a job from its MLflow rows, or None when it left no run."""
    if runs.empty:
        return None
    from tlcore.methods import base

    if base.methods.knows(method) and base.get(method).analysis_page == "ranking":
        return ranking_card(runs, ranking_table, title)

    if base.methods.knows(method) and base.get(method).sweep:  # a few-shot curve: points x draws
        return curve_card(runs, title)
    if method == "quanta":
        return quanta_card(runs, quanta_verdicts, title)
    if method == "source":
        return source_card(runs, title)
    return ResultCard(title, cost=_cost(runs))
