"""Ranking's cost against the yardstick the issue names: one feature-extraction curve of one backbone.

    python bench/ranking.py [--repeats 3 --resolution 64]

In one process, interleaved, each repeat times (whole ``experiments.run`` calls, data loading included):

- the baseline: one FE curve of efficientnet_lite0 on digits (1, 2, 5 and 10 per class, 3 draws: the Run
  page's CPU default), on a fresh feature cache;
- ranking efficientnet_lite0/1/2 over all their taps on the largest balanced set (the default), cold (a fresh
  cache: every image goes through each network and its ImageNet head) and warm (the same again, features
  cached);
- the ranking at 10 per class x 3 draws (the FE curve's own regime): first after the largest set (a few of its
  images were not in that set: they are extracted), then again with every feature cached (warm).

Medians over repeats; ratios against the FE curve of the same repeat. Goal (issue 15): a warm ranking <= 0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlcore import experiments
from tlcore.devices import hardware_info
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, RankingParams

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def timed(spec: ExperimentSpec) -> float:
    started = time.perf_counter()
    experiments.run(spec, Reporter())
    return time.perf_counter() - started


def one_repeat(root: Path, resolution: int) -> dict[str, float]:
    store = str(root / "results")
    common = dict(dataset="digits", resolution=resolution, mlflow_path=store, measure_energy=False)
    fe = ExperimentSpec("fe", samples_per_class=(1, 2, 5, 10), splits=3,
                        params=FeatureExtractionParams(cache_dir=str(root / "fe-cache")), **common)
    rank = ExperimentSpec("rank", params=RankingParams(backbones=BACKBONES, cache_dir=str(root / "rank-cache")),
                          **common)
    rank_10 = ExperimentSpec("rank", samples_per_class=(10,), splits=3,
                             params=RankingParams(backbones=BACKBONES, cache_dir=str(root / "rank-cache")), **common)
    out = {"fe_curve": timed(fe), "rank_cold": timed(rank), "rank_warm": timed(rank)}
    # the 10 x 3 draws come from the whole training pool, which holds a few images the largest balanced set left
    # out: the first such ranking extracts those, the second finds every feature cached
    out["rank_10x3_first"] = timed(rank_10)
    out["rank_warm_10x3"] = timed(rank_10)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {hardware_info().describe()}")
    rows = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_repeat(Path(tmp), args.resolution))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in rows[-1].items()), flush=True)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    ratios = {k: statistics.median(row[k] / row["fe_curve"] for row in rows) for k in rows[0] if k != "fe_curve"}
    print(f"\nmedians over {len(rows)} repeats at {args.resolution} px, 3 backbones (efficientnet_lite0/1/2):")
    print(f"  one FE curve of efficientnet_lite0 (1,2,5,10 x 3 draws, cold cache): {med['fe_curve']:.1f} s")
    for k, v in ratios.items():
        print(f"  {k:16s} {med[k]:6.1f} s   {v:.2f} x the FE curve")
    for k in ("rank_warm", "rank_warm_10x3"):
        print(f"goal: {k} <= 0.10 x the FE curve: {'met' if ratios[k] <= 0.10 else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
