"""Rankings read back: each ranking's table, whether its controls came last, and the check against reality.

A ranking (a parent run in the ``Transferability`` experiment) holds one child per network. Its table
ranks them per score with the spread over draws. Two checks say how far to trust it:

- the **controls**: a score that does not put every random-weights network below every pretrained one
  is not telling much on these images;
- the **agreement** with what the user then measured: when feature-extraction or fine-tuning runs exist on
  the same dataset and samples per class for three or more of the ranked backbones, Kendall's tau (and the
  weighted tau that counts the top of the ranking more) between each score and the mean measured accuracy.
  On n backbones a perfect agreement happens by chance once in n! orderings: on 3, one time in 6. The
  table says so rather than a bare tau.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tlcore.methods.ranking.scores import rank_agreement
from tlcore.specs import RANK_SCORES

SCORE_LABELS = {"logme": "LogME", "sfda": "SFDA", "hscore": "H-score", "leep": "LEEP", "nce": "NCE"}


def rankings(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ranking (parent run), newest first: its id, dataset, samples per class, networks and time."""
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "dataset", "samples_per_class", "n_draws", "networks", "status",
                                     "start_time", "time_total_s", "label"])
    parents = runs[runs["is_sweep_parent"].astype(bool)].copy()
    kids = runs[~runs["is_sweep_parent"].astype(bool)]
    parents["networks"] = parents["run_id"].map(kids.groupby("parent_run_id").size()).fillna(0).astype(int)
    parents = parents.sort_values("start_time", ascending=False)
    parents["label"] = [f"{r.dataset} · {r.networks} networks · {_spc_label(r.samples_per_class)} · "
                        f"{pd.Timestamp(r.start_time):%Y-%m-%d %H:%M}" if pd.notna(r.start_time) else
                        f"{r.dataset} · {r.networks} networks" for r in parents.itertuples()]
    return parents.reset_index(drop=True)


def _spc_label(spc) -> str:
    return f"{spc} per class" if isinstance(spc, str) and spc else "largest set"


def ranking_table(runs: pd.DataFrame, parent_run_id: str) -> pd.DataFrame:
    """The networks of one ranking: per score its mean, spread and rank (1 = best), controls flagged."""
    kids = runs[(runs["parent_run_id"] == parent_run_id) & ~runs["is_sweep_parent"].astype(bool)].copy()
    if kids.empty:
        return kids
    kids["control"] = kids["control"].astype(str).str.lower().eq("true")
    kids["network"] = np.where(kids["control"], kids["backbone"] + " (random weights)", kids["backbone"])
    for s in RANK_SCORES:
        if s in kids:
            kids[f"{s}_rank"] = kids[s].rank(ascending=False, method="min")
    return kids.sort_values(_first_score(kids), ascending=False, na_position="last").reset_index(drop=True)


def scores_in(table: pd.DataFrame) -> list[str]:
    """The scores this ranking computed (columns with at least one value), in the canonical order."""
    return [s for s in RANK_SCORES if s in table and table[s].notna().any()]


def _first_score(table: pd.DataFrame) -> str:
    present = scores_in(table)
    return present[0] if present else "run_id"


def control_warnings(table: pd.DataFrame) -> list[str]:
    """One sentence per score that does not rank every random-weights control below every pretrained network."""
    out = []
    if table.empty or not table["control"].any():
        return out
    for s in scores_in(table):
        trained = table.loc[~table["control"], s].dropna()
        controls = table.loc[table["control"], s].dropna()
        if len(trained) and len(controls) and controls.max() >= trained.min():
            out.append(f"{SCORE_LABELS[s]} puts a random-weights control at or above a pretrained backbone: on these "
                       f"images its ranking is suspect.")
    return out


def agreement(table: pd.DataFrame, measured: pd.DataFrame, dataset: str, samples_per_class: int | None
              ) -> pd.DataFrame:
    """Kendall tau between each score and the measured accuracy, per method with runs on >= 3 ranked backbones.

    ``measured``: trade-off runs (feature extraction, fine-tuning), one row per run with ``method``, ``dataset``,
    ``backbone``, ``weights``, ``samples_per_class``, ``test_accuracy``, ``status`` and ``weak``. Only finished,
    not weak, pretrained-weights runs on the same dataset and samples per class count; a backbone's accuracy is the
    mean over its runs.
    """
    cols = ["method", "score", "n_backbones", "tau", "weighted_tau", "chance_of_perfect", "backbones", "note"]
    if table.empty or measured.empty or samples_per_class is None:
        return pd.DataFrame(columns=cols)
    trained = table[~table["control"]]
    m = measured[(measured["dataset"] == dataset) & (measured["status"] == "FINISHED")
                 & pd.to_numeric(measured["samples_per_class"], errors="coerce").eq(samples_per_class)
                 & measured["test_accuracy"].notna() & measured["backbone"].isin(trained["backbone"])
                 & ~measured["weights"].astype(str).str.lower().eq("random")]
    if "weak" in m:
        m = m[~m["weak"].astype(bool)]
    rows = []
    for method, g in m.groupby("method"):
        acc = g.groupby("backbone")["test_accuracy"].mean()
        if len(acc) < 3:
            continue
        for s in scores_in(trained):
            sc = trained.set_index("backbone")[s].reindex(acc.index)
            ok = sc.notna()
            if ok.sum() < 3:
                continue
            r = rank_agreement(sc[ok].tolist(), acc[ok].tolist())
            n = int(ok.sum())
            rows.append({"method": method, "score": s, "n_backbones": n, "tau": r["kendall_tau"],
                         "weighted_tau": r["weighted_tau"],
                         "chance_of_perfect": 1 / math.factorial(n), "backbones": ", ".join(acc.index[ok]),
                         "note": weakness_note(n)})
    return pd.DataFrame(rows, columns=cols)


def weakness_note(n: int) -> str:
    """How much a tau on ``n`` backbones can show."""
    perfect = math.factorial(n)
    if n < 5:
        return (f"{n} backbones: even a perfect order (tau = 1) happens by chance once in {perfect}; a weak check, "
                "a hint rather than evidence.")
    return f"{n} backbones: a perfect order happens by chance once in {perfect:,}."


def measured_spc(table: pd.DataFrame) -> int | None:
    """The ranking's samples per class when it scored one value (the check compares like with like)."""
    if table.empty:
        return None
    values = str(table["samples_per_class"].dropna().iloc[0]) if table["samples_per_class"].notna().any() else ""
    parts = [p for p in values.split(",") if p.strip()]
    return int(parts[0]) if len(parts) == 1 and parts[0].strip().isdigit() else None


def time_beside_fe(table: pd.DataFrame) -> dict[str, float]:
    """The ranking's time and the yardstick: what one FE curve's extraction alone would cost for each backbone."""
    trained = table[~table["control"]] if not table.empty else table
    total = float(pd.to_numeric(table.get("time_total_s"), errors="coerce").sum()) if not table.empty else math.nan
    fe = pd.to_numeric(trained.get("fe_curve_extract_s"), errors="coerce") if not trained.empty else pd.Series()
    return {"time_total_s": total, "fe_curve_extract_s_min": float(fe.min()) if fe.notna().any() else math.nan,
            "fe_curve_images": float(pd.to_numeric(trained.get("fe_curve_images"), errors="coerce").max())
            if not trained.empty else math.nan}
