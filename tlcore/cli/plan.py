"""What every method command shares around its run: ``--dry-run``'s plan and projected cost, and the run
with the terminal's progress bar."""

from __future__ import annotations

import argparse
import sys


def print_plan(spec, out=None) -> None:
    """``--dry-run``: what the command would run and its projected cost, without opening a run or
    creating a store (the history is read only when the store already exists)."""
    from tlcore.experiments import resolve_defaults
    from tlcore.methods import base
    from tlcore.planning import estimate_cost, format_flops
    from tlcore.tracking import Tracker, resolve_tracking_uri, sqlite_path

    out = out or sys.stdout
    uri = resolve_tracking_uri(spec.mlflow_path)
    db = sqlite_path(uri)
    tracker = Tracker(uri) if db is None or db.exists() else None
    spec = resolve_defaults(spec.validate())
    est = estimate_cost(spec, tracker, calibrate=True)
    if est is None:
        print(f"Plan: {base.get(spec.method).noun} of {spec.backbone} on {spec.dataset}; this method has no cost "
              f"model, so nothing is projected. Dry run: nothing was run; drop --dry-run to run it.", file=out)
        return
    size = f" at {spec.input_size} px" if spec.input_size else ""
    what = f" of {spec.backbone}" if base.get(spec.method).picks_backbone else ""
    print(f"Plan: {base.get(spec.method).noun}{what}{size} on {spec.dataset}, device {spec.device}: "
          f"{est.runs} MLflow run{'s' if est.runs != 1 else ''}, {est.images:,} image passes x "
          f"{format_flops(est.flops_per_image)} per image = {format_flops(est.flops)}.", file=out)
    for note in est.notes:
        print(f"  {note}", file=out)
    print(f"Projected time: {est.describe_time()} ({est.basis}).", file=out)
    print(f"Dry run: nothing was run and no MLflow run was opened; drop --dry-run to run it (results go to {uri}).",
          file=out)


def run_with_progress(spec, args: argparse.Namespace):
    """Run ``spec`` with the terminal's progress bar (off with --quiet) where ``--executor`` says; returns the
    RunResult. Ctrl-C cancels: in this process the run ends KILLED at once; on Ray the tasks are told to stop."""
    from tlcore import experiments
    from tlcore.cli.args import executor_of
    from tlcore.reporting import TerminalReporter

    executor = executor_of(args)
    reporter = TerminalReporter(enabled=not args.quiet)
    try:
        if executor.name == "local":
            return experiments.run(spec, reporter)
        return _run_on(executor, spec, reporter)
    finally:
        reporter.close()


def _run_on(executor, spec, reporter):
    """Run the job through ``executor`` on this thread (Ctrl-C reaches its wait: a cancel)."""
    from tlcore.executors import Work
    from tlcore.tracking import Tracker

    spec = spec.validate()
    outcome = executor.run(Work("cli", spec, reporter, Tracker(spec.mlflow_path), spec.device))
    if outcome.error is not None:
        raise outcome.error
    return outcome.result
