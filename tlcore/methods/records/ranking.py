"""Ranking's record: what the Run page, the cost estimate and the tables know of it.

The method itself is :mod:`tlcore.methods.ranking.method` (imported when a job runs: it imports torch).
"""

from __future__ import annotations

from tlcore.methods.base import FormField, Method, Workload, register
from tlcore.specs import RANK_SCORES, ExperimentSpec, RankingParams

F = FormField

SCORE_LABELS = {"logme": "LogME", "sfda": "SFDA", "hscore": "H-score", "leep": "LEEP (ImageNet head)",
                "nce": "NCE (ImageNet head)"}


def ranking_fields(backbone: str) -> list[FormField]:
    from tlcore.methods.ranking.plan import offline_backbones
    from tlcore.models import backbones

    names = tuple(backbones.names())
    here = set(offline_backbones())
    return [
        F("backbones", "Backbones to rank", "multichoice", "Each is scored on the same images; its features are "
          "extracted once and cached (feature extraction reuses them). Only backbones whose pretrained weights are "
          "on this machine can be ranked.", options=names, optional=True,
          placeholder=f"every backbone whose weights are here ({len(here)})",
          option_labels=tuple(n + ("" if n in here else " (weights not on this machine)") for n in names)),
        F("scores", "Scores", "multichoice", "LogME, SFDA and H-score read the features; LEEP and NCE the "
          "backbone's ImageNet head. No score wins everywhere: compare several.", options=RANK_SCORES,
          option_labels=tuple(SCORE_LABELS[s] for s in RANK_SCORES)),
        F("random_control", "Also score random-weights controls", "bool", "The same architectures with random "
          "weights: a score that does not put them last is not telling you much on these images."),
        F("tap_percent", "Layers", "choice", "Which taps feed the embedding (and are scored one by one): all, or "
          "an evenly spaced share, as in feature extraction.", options=(100, 75, 50, 25),
          option_labels=("every tap (100%)", "75% of the taps", "50% of the taps", "25% of the taps")),
        F("per_tap", "Score each tap too", "bool", "Which layers carry the signal; costs one score per tap.",
          advanced=True),
        F("cache", "Reuse extracted features", "bool", "Read and fill the feature cache feature extraction uses.",
          advanced=True),
        F("cache_dir", "Feature cache folder", "text", "Empty: beside the results.", advanced=True, optional=True),
    ]


def ranking_estimate(spec: ExperimentSpec) -> Workload:
    """Each network embeds the scored images once (nothing when its features are cached); scoring is seconds."""
    import numpy as np

    from tlcore.methods.common import load_data
    from tlcore.methods.ranking.plan import offline_backbones, ranking_points
    from tlcore.models.catalog import meta_flops

    p: RankingParams = spec.params
    ds, splits = load_data(spec)
    points = ranking_points(spec, ds, splits)
    n = len(np.unique(np.concatenate([pt.train for pt in points])))
    names = list(p.backbones) if p.backbones else offline_backbones()
    per_net = [meta_flops(b, spec.input_size, ds.num_classes)[0] for b in names]
    copies = 2 if p.random_control else 1
    flops = float(n) * sum(per_net) * copies
    images = n * len(names) * copies
    note = (f"{len(names) * copies} network(s) x {n:,} images ({len(points)} draw(s)); features already in the "
            "cache cost no forward, so a second ranking (or one after feature extraction) takes seconds.")
    return Workload(runs=len(names) * copies + 1, images=images, flops=flops,
                    flops_per_image=float(np.mean(per_net)), notes=(note,), upper_bound=True)


register(Method(
    name="rank", label="Ranking", noun="ranking", title="Rank backbones (no training)",
    experiment="Transferability", params=RankingParams, run="tlcore.methods.ranking.method:run_ranking",
    blurb="Training-free scores (LogME, SFDA, H-score; LEEP and NCE from the ImageNet head) of several backbones on "
          "your labelled images, from cached features: which backbone to try first, in seconds to minutes.",
    samples=True, grid="", grid_help="Empty: the largest balanced training set (one draw). Values with several "
    "draws give each score a spread.", picks_backbone=False, pretrained_weights=False, pace="forward",
    fields=ranking_fields, estimate=ranking_estimate, analysis_page="ranking", data_title="Your labelled images",
    app_defaults={"random_control": True}, app_defaults_note="The Run page adds random-weights controls by "
    "default: they show whether a score means anything on your images.",
    cli_help="rank backbones by training-free transferability scores (LogME, SFDA, ...), no training",
))
