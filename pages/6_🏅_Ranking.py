"""Ranking: which backbone to try first, from training-free scores, with the checks that say how far to trust it."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from pages.shared import results_cache, widgets
from tlcore import plots, units
from tlcore.results import ranking as ranking_results

widgets.page_setup("Ranking", "🏅", heading="🏅 Ranking backbones before training")
st.caption("Training-free transferability scores of each backbone on your labelled images, computed from their "
           "features (no training). Scores compare backbones on the same labels only: they are not accuracies, and "
           "no score wins everywhere, so read several, their random-weights controls, and their agreement with "
           "the accuracy you then measure.")

try:
    runs = results_cache.runs("ranking")
except Exception as exc:
    widgets.show_error(exc)
    st.stop()
jobs = ranking_results.rankings(runs)
if jobs.empty:
    results_cache.no_runs_notice("rankings", "rank")
    st.stop()

with st.sidebar:
    st.header("Ranking")
    pick = st.selectbox("Ranking", list(jobs["run_id"]), key="ranking.pick",
                        format_func=dict(zip(jobs["run_id"], jobs["label"], strict=True)).get)
job = jobs[jobs["run_id"] == pick].iloc[0]
table = ranking_results.ranking_table(runs, pick)
if table.empty:
    st.info("This ranking has no finished network yet (it may still be running, or it failed before the first).")
    st.stop()
present = ranking_results.scores_in(table)
failed = table[table["status"] == "FAILED"]
if len(failed):
    st.error(f"{len(failed)} network(s) failed: " + "; ".join(f"{r.network}: {r.error}" for r in failed.itertuples()))

draws = int(pd.to_numeric(table["n_draws"], errors="coerce").max())
spc = ranking_results.measured_spc(table)
timing = ranking_results.time_beside_fe(table)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Dataset", str(job["dataset"]))
c2.metric("Images per draw", f"{int(pd.to_numeric(table['n_images'], errors='coerce').max()):,}",
          help="Labelled training images scored (samples per class x classes).")
c3.metric("Draws", draws, help="Each score is computed on each draw; the bars' whiskers are the spread over draws.")
c4.metric("Time", units.duration(timing["time_total_s"]),
          help="Extraction (nothing for features already cached) and scoring, all networks.")
if not math.isnan(timing["fe_curve_extract_s_min"]):
    ratio = timing["time_total_s"] / timing["fe_curve_extract_s_min"]
    st.caption(f"For scale: one feature-extraction curve of one backbone (1, 2, 5 and 10 per class, 3 draws: "
               f"{int(timing['fe_curve_images']):,} images) costs at least "
               f"{units.duration(timing['fe_curve_extract_s_min'])} of extraction alone on this machine, before any "
               f"classifier fit; this ranking took {ratio:.1f}x that.")

if not present:
    st.info("No score was computed in this ranking.")
    st.stop()
score = st.radio("Score", present, horizontal=True, key="ranking.score",
                 format_func=lambda s: ranking_results.SCORE_LABELS[s])
for warning in ranking_results.control_warnings(table):
    st.warning(warning)
if not table["control"].any():
    st.caption("No random-weights control in this ranking: rank again with the controls to see whether each score "
               "means anything on these images.")
st.plotly_chart(plots.ranking_bars(table, score, ranking_results.SCORE_LABELS[score]), width="stretch",
                key="ranking.bars", config=plots.figure_config(f"ranking_{score}"))
if draws < 2:
    st.caption("One draw: no spread to show. Rank with a samples-per-class value that has several draws (e.g. 10, "
               "3 draws) to see how much each score moves with the images.")

spreads = [f"{s}_std" for s in present if f"{s}_std" in table and table[f"{s}_std"].notna().any()]
shown = table[["network", *present, *spreads, "time_total_s", "feature_cache_hits", "run_id"]].copy()
shown["time_total_s"] = shown["time_total_s"].map(units.duration)
st.dataframe(shown.rename(columns={**ranking_results.SCORE_LABELS, "time_total_s": "time",
                                   "feature_cache_hits": "cached images",
                                   **{f"{s}_std": f"{ranking_results.SCORE_LABELS[s]} spread (std over draws)"
                                      for s in present}}),
             hide_index=True, width="stretch")

st.subheader("Which layers carry the signal")
tap_runs = table[table["n_taps"].astype(str) != "1"]
hist = results_cache.histories(tap_runs["run_id"], keys=(f"{score}_tap",)) if not tap_runs.empty else pd.DataFrame()
if hist.empty:
    st.caption("No per-tap score in this ranking (per-tap scoring was off, or each backbone had one tap).")
else:
    names = dict(zip(table["run_id"], table["network"], strict=True))
    st.plotly_chart(plots.tap_score_lines(hist, names, ranking_results.SCORE_LABELS[score]), width="stretch",
                    key="ranking.taps")
    st.caption("Each tap's features scored alone, from the earliest tap (left) to the deepest. A score that keeps "
               "rising to the last tap says the deep features carry the labels; a peak earlier says a shallower "
               "layer (a deeper fine-tuning) may serve better.")

st.subheader("Did the scores predict what you measured?")
try:
    measured = results_cache.runs("tradeoffs")
except Exception as exc:
    widgets.show_error(exc)
    measured = pd.DataFrame()
check = ranking_results.agreement(table, measured, str(job["dataset"]), spc)
if check.empty:
    need = f"{spc} per class" if spc is not None else "one samples-per-class value (rank with it)"
    st.caption(f"Not yet: this check needs finished feature-extraction or fine-tuning runs on {job['dataset']} at "
               f"{need} for three or more of the ranked backbones. Run them from the Run page, then come back.")
else:
    check = check.assign(score=check["score"].map(ranking_results.SCORE_LABELS))
    st.dataframe(check.rename(columns={"n_backbones": "backbones compared", "weighted_tau": "weighted tau",
                                       "chance_of_perfect": "chance of a perfect order"}),
                 hide_index=True, width="stretch",
                 column_config={"tau": st.column_config.NumberColumn(format="%.2f"),
                                "weighted tau": st.column_config.NumberColumn(format="%.2f"),
                                "chance of a perfect order": st.column_config.NumberColumn(format="%.3f")})
    st.caption("Kendall's tau between each score and the mean measured test accuracy (1: the same order, -1: "
               "reversed); the weighted tau counts the top of the ranking more. " + check["note"].iloc[0])
widgets.page_link("guidelines", "What it means for your choice")
