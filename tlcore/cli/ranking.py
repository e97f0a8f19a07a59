"""``python -m tlcore rank``: training-free transferability scores of several backbones on a dataset."""

from __future__ import annotations

import argparse
import json
import sys

from tlcore.cli.args import data_args, dry_run_arg, run_args, spec_kwargs


def _names(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as efficientnet_lite0,"
                                         f"efficientnet_lite1, got {text!r}")
    return names


def add_rank_command(sub, common: argparse.ArgumentParser) -> None:
    from tlcore.methods import base
    from tlcore.specs import RANK_SCORES

    p = sub.add_parser("rank", parents=[common], help=base.get("rank").cli_help,
                       description="Score backbones on your labelled images without training any of them. "
                                   "Features go through the feature cache that `fe` fills and reads.")
    data_args(p)
    run_args(p)
    g = p.add_argument_group("ranking")
    g.add_argument("--backbones", type=_names, default=None,
                   help="comma-separated backbones (default: every backbone whose pretrained weights are on this "
                        "machine: python -m tlcore backbones)")
    g.add_argument("--scores", type=_names, default=RANK_SCORES,
                   help=f"comma-separated scores among {','.join(RANK_SCORES)} (default: all; leep and nce need an "
                        "ImageNet head)")
    g.add_argument("--random-control", action="store_true",
                   help="also score each architecture with random weights: a score that does not put them last "
                        "says little on these images")
    g.add_argument("--tap-percent", type=int, default=100, choices=(100, 75, 50, 25),
                   help="share of each backbone's taps in the embedding (evenly spaced, as FE's model descriptions)")
    g.add_argument("--taps", type=_names, default=None, help="comma-separated layers (one backbone only)")
    g.add_argument("--no-per-tap", action="store_true", help="score the whole embedding only")
    g.add_argument("--no-cache", action="store_true", help="do not read or fill the feature cache")
    g.add_argument("--cache-dir", help="feature cache folder (default: beside the results)")
    g.add_argument("--json", action="store_true", help="print the ranking as JSON on stdout (progress on stderr)")
    dry_run_arg(p)
    p.set_defaults(func=cmd_rank)


def cmd_rank(args: argparse.Namespace) -> int:
    from tlcore.cli.plan import print_plan, run_with_progress
    from tlcore.specs import ExperimentSpec, RankingParams

    params = RankingParams(backbones=args.backbones, scores=tuple(args.scores), random_control=args.random_control,
                           tap_percent=args.tap_percent, taps=args.taps, per_tap=not args.no_per_tap,
                           cache=not args.no_cache, cache_dir=args.cache_dir)
    spec = ExperimentSpec("rank", args.dataset, params=params, **spec_kwargs(args))
    if args.dry_run:
        print_plan(spec)
        return 0
    result = run_with_progress(spec, args)
    if args.json:
        json.dump({"dataset": spec.dataset, "parent_run_id": result.parent_run_id, "ranking": result.rows},
                  sys.stdout, indent=2, default=float)
        print()
    else:
        print(result.summary)
    return 0
