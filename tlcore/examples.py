"""The embedded examples: real runs on the embedded data that every analysis page can show.

``python -m tlcore examples --mlflow-path DIR`` runs, on scikit-learn's digits:

* a feature-extraction few-shot curve (efficientnet_lite0, ImageNet weights),
* fine-tuning curves of the same backbone for freezing configurations 0 and 2,
* a source network (quanta_cnn) trained on digits 0-4, then QUANTA on digits 5-9 at every layer,
  with that source and with a randomly initialised source (the control), the QUANTA weights with
  their own learning rate.

These are real experiments, run through the same ``experiments.run`` as everything else, each
method with its default recipe (fine-tuning stops early, not at a fixed epoch count), at 64 px (the
input size digits default to) so they finish on a laptop CPU in about ten minutes (``--quick``: a
smaller grid for tests, about two). Their results are whatever the runs measure, and each run
carries its verdict (:mod:`tlcore.quality`): what an example cannot earn is labelled, not hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams, QuantaParams, SourceTrainingParams


@dataclass(frozen=True)
class ExampleGrid:
    dataset: str  # feature extraction and fine-tuning
    fe_spc: tuple[int, ...]
    fe_splits: int
    ft_spc: tuple[int, ...]  # fine-tuning points: each trains with the default recipe (early stopping)
    ft_splits: int
    ft_configs: tuple[int, ...]
    ft_batch_size: int  # at most the smallest training split (classes x samples per class)
    resolution: int  # efficientnet_lite0 (FE, FT): digits are 8x8, 224 px would cost 12x more for nothing
    source_epochs: int
    source_classes: str  # digits the QUANTA source learns (quanta_cnn takes 32 px, so fewer images is faster)
    target_classes: str  # digits QUANTA transfers to
    quanta_epochs: int
    quanta_samples: int | None  # per class; None: every training image
    quanta_runs: int  # runs (seeds) of the trained source and of the control each: their spread is the interval
    quanta_layer: int  # -1: every layer at once

    @property
    def samples_per_class(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.fe_spc) | set(self.ft_spc)))


FULL = ExampleGrid(
    dataset="digits", fe_spc=(1, 2, 5, 10, 20), fe_splits=3, ft_spc=(5, 20), ft_splits=3, ft_configs=(0, 2),
    ft_batch_size=32, resolution=64, source_epochs=8, source_classes="0-4", target_classes="5-9", quanta_epochs=6,
    quanta_samples=40, quanta_runs=2, quanta_layer=-1)
QUICK = ExampleGrid(
    dataset="digits:0-4", fe_spc=(2, 5), fe_splits=2, ft_spc=(5,), ft_splits=2, ft_configs=(0, 2),
    ft_batch_size=16, resolution=32,
    source_epochs=2, source_classes="0-1", target_classes="5-6", quanta_epochs=2, quanta_samples=10, quanta_runs=1,
    quanta_layer=-1)
# With Adam, lambda_S moves by about the learning rate per step (README, QUANTA "Dynamics"): at the
# reference's 2e-4 a few hundred steps on digits leave it at 0.900 on every layer, trained source or not.
QUANTA_LR = 0.05


def example_specs(mlflow_path: str, quick: bool = False, outdir: str | None = None,
                  seed: int = 0) -> list[tuple[str, ExperimentSpec | Callable[[str], ExperimentSpec]]]:
    """The examples in order; QUANTA specs are functions of the source run id trained before them."""
    g = QUICK if quick else FULL
    outdir = outdir or str(Path(mlflow_path) / "quanta_exports")
    common = dict(mlflow_path=mlflow_path, seed=seed, tags={"example": "embedded"})
    fe = ExperimentSpec("fe", g.dataset, backbone="efficientnet_lite0", samples_per_class=g.fe_spc,
                        splits=g.fe_splits, resolution=g.resolution, params=FeatureExtractionParams(), **common)
    ft = [ExperimentSpec("ft", g.dataset, backbone="efficientnet_lite0", samples_per_class=g.ft_spc,
                         splits=g.ft_splits, resolution=g.resolution, batch_size=g.ft_batch_size,
                         params=FineTuningParams(configuration=c), **common) for c in g.ft_configs]
    source_task, target_task = f"digits:{g.source_classes}", f"digits:{g.target_classes}"
    source = ExperimentSpec("source", source_task, backbone="quanta_cnn", weights="random", batch_size=32,
                            params=SourceTrainingParams(epochs=g.source_epochs), **common)

    def quanta(source_weights: str) -> Callable[[str], ExperimentSpec]:
        def build(source_run_id: str) -> ExperimentSpec:
            sw = source_run_id if source_weights == "trained" else "random"
            return ExperimentSpec("quanta", target_task, backbone="quanta_cnn", batch_size=32, params=QuantaParams(
                source_task=source_task, source_weights=sw, layer_to_transfer=g.quanta_layer,
                nb_of_target_epochs=g.quanta_epochs, nb_of_target_samples=g.quanta_samples, nb_of_runs=g.quanta_runs,
                quanta_lr=QUANTA_LR, outdir=outdir), **common)

        return build

    return [("feature extraction curve", fe),
            *((f"fine-tuning curve, configuration {c}", spec) for c, spec in zip(g.ft_configs, ft, strict=True)),
            (f"source training on digits {g.source_classes}", source),
            (f"QUANTA digits {g.source_classes} -> {g.target_classes}, trained source", quanta("trained")),
            (f"QUANTA digits {g.source_classes} -> {g.target_classes}, random source (control)", quanta("random"))]


@dataclass
class ExampleRun:
    """One example as it ran: its MLflow runs (the points; the sweep's parent apart) and its wall time."""

    label: str
    method: str
    run_ids: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def all_run_ids(self) -> list[str]:
        return ([self.parent_run_id] if self.parent_run_id else []) + list(self.run_ids)


def run_examples(mlflow_path: str, quick: bool = False, reporter: Reporter | None = None,
                 outdir: str | None = None, seed: int = 0) -> list[ExampleRun]:
    """Run every example in order (an error stops there, the runs before it stay); one entry per example."""
    from tlcore import experiments

    reporter = reporter or Reporter()
    steps = example_specs(mlflow_path, quick, outdir, seed)
    done: list[ExampleRun] = []
    source_run_id = ""
    for i, (label, spec_or_fn) in enumerate(steps):
        spec = spec_or_fn if isinstance(spec_or_fn, ExperimentSpec) else spec_or_fn(source_run_id)
        reporter.message(f"[{i + 1}/{len(steps)}] {label}")
        t0 = time.perf_counter()
        result = experiments.run(spec, reporter.scaled(i / len(steps), (i + 1) / len(steps)))
        done.append(ExampleRun(label, spec.method, list(result.run_ids), result.parent_run_id, dict(result.metrics),
                               time.perf_counter() - t0))
        if spec.method == "source":
            source_run_id = result.run_ids[0]
    return done


def summary_lines(mlflow_path: str, done: list[ExampleRun]) -> list[str]:
    """One line per example, read back from the store as the pages read it (balanced test accuracy, each
    run's verdict, and for QUANTA each layer's verdict against the control)."""
    from tlcore import quality, results
    from tlcore.tracking import resolve_tracking_uri

    ids = [i for d in done for i in d.run_ids]
    uri = resolve_tracking_uri(mlflow_path)
    df = results.load_view(uri, "quanta")
    df = pd.concat([df, results.load_view(uri, "tradeoffs")]).drop_duplicates("run_id")
    df = df[df["run_id"].isin(ids)].set_index("run_id")
    layer_verdicts = results.quanta_layer_verdicts(df.reset_index())
    lines = []
    for d in done:
        runs = df.loc[[i for i in d.run_ids if i in df.index]]
        verdicts = runs["quality"].map(lambda q: quality.LABELS.get(q, q) if isinstance(q, str) else "no verdict")
        earned = ", ".join(f"{n} {v}" for v, n in verdicts.value_counts().items())
        if d.method in ("fe", "ft"):
            curve = runs.groupby("spc")["test_accuracy"].mean()
            what = ", ".join(f"{acc:.1%} at {spc:g}" for spc, acc in curve.items())
            text = f"test accuracy {what} samples per class"
        elif d.method == "source":
            text = f"test accuracy {runs['test_accuracy'].mean():.1%}"
        else:
            layers = results.layer_order(results.quanta_layers(runs.dropna(axis=1, how="all")))
            lam = " ".join(f"{runs[results.QUANTA_PREFIX + x].mean():.3f}" for x in layers)
            text = (f"target test accuracy {runs['test_accuracy'].mean():.1%}; final lambda_S, layers "
                    f"{layers[0]}..{layers[-1]}: {lam}" if layers else "no lambda_S logged")
            if "control" in d.label and not layer_verdicts.empty:
                matched = layer_verdicts[layer_verdicts["matched"]]
                text += "; against the control: " + (", ".join(
                    f"layer {r.layer} {quality.LABELS[r.quality]}" + (f" ({r.delta:+.3f})" if r.direction else "")
                    for r in matched.sort_values("layer_pos").itertuples()) or "no matching runs")
        lines.append(f"{d.label}: {text} ({len(d.run_ids)} run(s): {earned}; {d.seconds:.0f} s)")
    return lines
