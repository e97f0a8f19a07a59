"""QUANTA per-layer analyses: lambda_S per layer beside its random-source control, and what it says.

Pure functions of the frames :mod:`.store` reads (the ``quanta_source/<layer>`` metrics): per-run
and per-layer summaries, the layer verdicts and the transfer depth they give, the caveat a page
shows without a control, lambda_S over steps, and fine-tuning accuracy per freezing depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from tlcore import quality
from tlcore.results.columns import (
    QUANTA_PREFIX,
    RANDOM_SOURCE,
    SOURCE_ACCURACY_METRICS,
    TRAINED_SOURCE,
    natural_key,
)


def quanta_layers(df: pd.DataFrame) -> list[str]:
    """The layer names of the ``quanta_source/<layer>`` columns present."""
    return [c[len(QUANTA_PREFIX):] for c in df.columns if str(c).startswith(QUANTA_PREFIX)]


def layer_order(layers: Iterable[str], hint: Sequence[str] | None = None) -> list[str]:
    """Layers in network order: as ``hint`` lists them (a run's ``quanta_layers`` param), the rest
    naturally sorted (transfer indices 0..6, or tap names such as ``blocks.2`` before ``blocks.10``)."""
    layers = list(dict.fromkeys(str(x) for x in layers))
    hint = [h for h in (hint or []) if h in layers]
    return hint + sorted((x for x in layers if x not in hint), key=natural_key)


def layer_hint(df: pd.DataFrame) -> list[str]:
    """The layers in network order as the runs' ``quanta_layers`` param lists them (comma-separated), if logged."""
    if "quanta_layers" not in df:
        return []
    for value in df["quanta_layers"].dropna():
        return [s.strip() for s in str(value).split(",") if s.strip()]
    return []


def quanta_values(df: pd.DataFrame) -> pd.DataFrame:
    """Final lambda_S per (QUANTA run, layer), long: run_id, backbone, dataset (the target),
    source_task, source_kind (trained source or random-source control), layer, lambda_s."""
    cols = ["run_id", "backbone", "dataset", "source_task", "source_kind", "layer", "lambda_s", "status"]
    layers = quanta_layers(df)
    if df.empty or not layers:
        return pd.DataFrame(columns=cols)
    runs = df[df["method"].eq("quanta") & ~df["is_sweep_parent"].astype(bool)]
    if "source_task" not in runs:
        runs = runs.assign(source_task=np.nan)
    long = runs.melt(id_vars=["run_id", "backbone", "dataset", "source_task", "source_kind", "status"],
                     value_vars=[QUANTA_PREFIX + x for x in layers], var_name="layer", value_name="lambda_s")
    long["layer"] = long["layer"].str[len(QUANTA_PREFIX):]
    long = long[long["lambda_s"].notna()]
    return long[cols].reset_index(drop=True)


def quanta_summary(values: pd.DataFrame, hint: Sequence[str] | None = None) -> pd.DataFrame:
    """Final lambda_S per layer: mean, std, min, max and the number of runs, per backbone, target
    dataset and source kind, with ``layer_pos`` (0-based network order) and ``depth`` (0..1]."""
    cols = ["backbone", "dataset", "source_kind", "layer", "layer_pos", "depth", "mean", "std", "min", "max", "n"]
    if values.empty:
        return pd.DataFrame(columns=cols)
    out = values.groupby(["backbone", "dataset", "source_kind", "layer"], dropna=False)["lambda_s"].agg(
        ["mean", "std", "min", "max", "size"]).rename(columns={"size": "n"}).reset_index()
    order = layer_order(values["layer"], hint)
    pos = {name: i for i, name in enumerate(order)}
    out["layer_pos"] = out["layer"].map(pos)
    out["depth"] = (out["layer_pos"] + 1) / len(order)
    return out.sort_values(["backbone", "dataset", "source_kind", "layer_pos"])[cols].reset_index(drop=True)


def quanta_matrix(summary: pd.DataFrame, source_kind: str = TRAINED_SOURCE) -> pd.DataFrame:
    """Mean final lambda_S as a layers x target-dataset table (one backbone's rows expected)."""
    part = summary[summary["source_kind"] == source_kind]
    if part.empty:
        return pd.DataFrame()
    table = part.pivot_table(index="layer", columns="dataset", values="mean", aggfunc="mean")
    return table.reindex(layer_order(part.sort_values("layer_pos")["layer"]))


def quanta_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Per QUANTA run: the transferred layer, the source kind, the target's test accuracy and the
    source network's own test accuracy (when logged)."""
    cols = ["run_id", "backbone", "dataset", "source_task", "source_kind", "layer_to_transfer",
            "target_accuracy", "source_accuracy"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    runs = df[df["method"].eq("quanta") & df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)].copy()
    source = pd.Series(np.nan, index=runs.index)
    for name in SOURCE_ACCURACY_METRICS:
        if name in runs:
            source = source.fillna(runs[name])
    runs["source_accuracy"] = source
    runs["target_accuracy"] = runs["test_accuracy"]
    if "source_task" not in runs:
        runs["source_task"] = np.nan
    runs["layer_to_transfer"] = runs["layer_to_transfer"].astype(str).replace({"-1": "all", "nan": "?"})
    return runs[cols].reset_index(drop=True)


FT_FROZEN_FRACTION = {"0": 0.0, "1": 0.25, "2": 0.5, "3": 0.75}


def freezing_depth_accuracy(df: pd.DataFrame, backbone: str, dataset: str,
                            accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Fine-tuning accuracy per freezing configuration (0-3: about 0, 1/4, 1/2, 3/4 of the network
    frozen) for one backbone and dataset: mean, std and count over finished runs."""
    cols = ["configuration", "frozen_fraction", "mean", "std", "n"]
    if df.empty or "configuration" not in df:
        return pd.DataFrame(columns=cols)
    ft = df[df["method"].eq("ft") & df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)
            & df["backbone"].astype(str).eq(str(backbone)) & df["dataset"].astype(str).eq(str(dataset))
            & df[accuracy].notna()]
    ft = ft[ft["configuration"].astype(str).isin(list(FT_FROZEN_FRACTION))]
    if ft.empty:
        return pd.DataFrame(columns=cols)
    out = ft.groupby(ft["configuration"].astype(str))[accuracy].agg(["mean", "std", "size"]).reset_index()
    out = out.rename(columns={"size": "n"})
    out["frozen_fraction"] = out["configuration"].map(FT_FROZEN_FRACTION)
    return out.sort_values("frozen_fraction")[cols].reset_index(drop=True)


def lambda_steps(histories: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """lambda_S over training steps, averaged over runs, per (source kind, layer, step)."""
    cols = ["source_kind", "layer", "step", "mean", "std", "n"]
    if histories.empty:
        return pd.DataFrame(columns=cols)
    h = histories[histories["key"].str.startswith(QUANTA_PREFIX)].copy()
    h["layer"] = h["key"].str[len(QUANTA_PREFIX):]
    h = h.merge(df[["run_id", "source_kind"]], on="run_id", how="left")
    h["source_kind"] = h["source_kind"].fillna(TRAINED_SOURCE)
    out = h.groupby(["source_kind", "layer", "step"])["value"].agg(["mean", "std", "size"]).reset_index()
    return out.rename(columns={"size": "n"})[cols]


#: The settings a QUANTA run and its random-source control must share to be compared (``transfer_mode``:
#: every layer at once, or one layer per run).
QUANTA_SETTINGS = ("backbone", "dataset", "transfer_mode", "nb_of_target_epochs", "learning_rate", "quanta_lr",
                   "samples_per_class")


def quanta_layer_verdicts(df: pd.DataFrame, with_runs: Iterable[str] | None = None) -> pd.DataFrame:
    """Per layer: final lambda_S of the trained-source runs minus the random-source control's, with
    the same settings (:data:`QUANTA_SETTINGS`), and the verdict of :func:`tlcore.quality.judge_layer`.

    One row per (settings, source task, layer): ``delta`` and its interval (``low``, ``high``),
    ``quality`` (signal / no_signal), ``direction`` (+1 the target keeps the source's features,
    -1 it prefers its own, 0 no signal), ``meaning`` and ``reason``; ``trained``/``control`` are
    the means, ``n_trained``/``n_control`` the runs; ``settings`` names the group for people.
    Trained-source runs with no control of the same settings get ``matched`` False. ``with_runs``
    keeps only the settings groups holding one of those run ids (a job's card).
    """
    cols = ["backbone", "dataset", "source_task", "settings", "settings_key", "layer", "layer_pos", "trained",
            "control", "delta", "low", "high", "n_trained", "n_control", "quality", "direction", "meaning", "reason",
            "matched"]
    layers = quanta_layers(df)
    if df.empty or not layers:
        return pd.DataFrame(columns=cols)
    runs = df[df["method"].eq("quanta") & df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)].copy()
    if runs.empty:
        return pd.DataFrame(columns=cols)
    for col in ("layer_to_transfer", *QUANTA_SETTINGS, "source_task"):
        if col not in runs:
            runs[col] = np.nan
    every = runs["layer_to_transfer"].astype(str).isin(["-1", "all"])
    runs["transfer_mode"] = np.where(every, "every layer at once", "one layer per run")
    runs["settings_key"] = runs[list(QUANTA_SETTINGS)].apply(lambda col: col.map(str)).agg("|".join, axis=1)
    order = layer_order(layers, layer_hint(runs))
    pos = {name: i for i, name in enumerate(order)}
    rows = []
    wanted = set(with_runs) if with_runs is not None else None
    for key, group in runs.groupby("settings_key", sort=False):
        if wanted is not None and not wanted & set(group["run_id"]):
            continue
        control = group[group["source_kind"] == RANDOM_SOURCE]
        trained = group[group["source_kind"] == TRAINED_SOURCE]
        first = group.iloc[0]
        settings = (f"{first['nb_of_target_epochs']} epoch(s), lr {first['learning_rate']}, QUANTA lr "
                    f"{first['quanta_lr']}, {first['samples_per_class']} per class, {first['transfer_mode']}")
        for task, t_runs in trained.groupby(trained["source_task"].astype(str), sort=True):
            for layer in order:
                col = QUANTA_PREFIX + layer
                t_vals = t_runs[col].dropna().to_numpy(float) if col in t_runs else np.array([])
                c_vals = control[col].dropna().to_numpy(float) if col in control else np.array([])
                if len(t_vals) == 0:
                    continue
                v = quality.judge_layer(layer, t_vals, c_vals, [quality.LAMBDA_START])
                rows.append({"backbone": first["backbone"], "dataset": first["dataset"], "source_task": task,
                             "settings": settings, "settings_key": key, "layer": layer, "layer_pos": pos[layer],
                             "trained": float(t_vals.mean()),
                             "control": float(c_vals.mean()) if len(c_vals) else np.nan, "delta": v.delta,
                             "low": v.low, "high": v.high, "n_trained": v.n_trained, "n_control": v.n_control,
                             "quality": v.quality, "direction": v.direction, "meaning": v.meaning,
                             "reason": v.reason, "matched": len(c_vals) > 0})
    return pd.DataFrame(rows, columns=cols)


def quanta_depth(verdicts: pd.DataFrame) -> tuple[int, int] | None:
    """(k, n): the target kept the source's features (signal, above the control) in the first k of its n
    layers; None when no layer shows any signal (then the runs do not speak about depth)."""
    if verdicts.empty or not (verdicts["quality"] == quality.SIGNAL).any():
        return None
    ordered = verdicts.sort_values("layer_pos")
    k = 0
    for direction in ordered["direction"]:
        if direction > 0:
            k += 1
        else:
            break
    return k, len(ordered)


def quanta_caveat(summary: pd.DataFrame) -> str | None:
    """The sentence a page must show when lambda_S has no random-source control beside it."""
    if summary.empty:
        return None
    kinds = set(summary["source_kind"])
    if RANDOM_SOURCE not in kinds:
        return ("No random-source control run here: lambda_S also moves with the scale of the activations, "
                "so a high value alone does not show that a layer transfers. Run QUANTA again with source "
                "weights = random and compare.")
    if TRAINED_SOURCE not in kinds:
        return "Only random-source control runs here: run QUANTA with a trained source to compare against them."
    return None
