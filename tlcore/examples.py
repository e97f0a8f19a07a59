"""The embedded examples: real runs on the embedded data that every analysis page can show.

``python -m tlcore examples --mlflow-path DIR`` runs, on scikit-learn's digits:

* a feature-extraction few-shot curve (efficientnet_lite0, ImageNet weights),
* fine-tuning curves of the same backbone for freezing configurations 0 and 2,
* a source network trained on digits 0-4, then QUANTA on digits 5-9 at every layer, with that
  source and with a randomly initialised source (the control).

These are real experiments, run through the same ``experiments.run`` as everything else, at a
reduced resolution so they finish on a laptop CPU in minutes (``--quick``: a smaller grid for
tests). Their results are whatever the runs measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams, QuantaParams, SourceTrainingParams


@dataclass(frozen=True)
class ExampleGrid:
    samples_per_class: tuple[int, ...]
    splits: int
    ft_epochs: int
    source_epochs: int
    quanta_epochs: int
    quanta_samples: int
    resolution: int


FULL = ExampleGrid((1, 2, 5, 10, 20), splits=3, ft_epochs=6, source_epochs=8, quanta_epochs=3, quanta_samples=40,
                   resolution=64)
QUICK = ExampleGrid((2, 5), splits=1, ft_epochs=2, source_epochs=2, quanta_epochs=1, quanta_samples=10,
                    resolution=32)


def example_specs(mlflow_path: str, quick: bool = False, outdir: str | None = None,
                  seed: int = 0) -> list[tuple[str, ExperimentSpec | Callable[[str], ExperimentSpec]]]:
    """The examples in order; QUANTA specs are functions of the source run id trained before them."""
    g = QUICK if quick else FULL
    outdir = outdir or str(Path(mlflow_path) / "quanta_exports")
    common = dict(mlflow_path=mlflow_path, seed=seed, tags={"example": "embedded"})
    fe = ExperimentSpec("fe", "digits", backbone="efficientnet_lite0", samples_per_class=g.samples_per_class,
                        splits=g.splits, resolution=g.resolution, params=FeatureExtractionParams(), **common)
    ft = [ExperimentSpec("ft", "digits", backbone="efficientnet_lite0", samples_per_class=g.samples_per_class,
                         splits=g.splits, resolution=g.resolution, batch_size=32,
                         params=FineTuningParams(configuration=c, epochs=g.ft_epochs), **common) for c in (0, 2)]
    source = ExperimentSpec("source", "digits:0-4", backbone="quanta_cnn", weights="random", batch_size=32,
                            params=SourceTrainingParams(epochs=g.source_epochs), **common)

    def quanta(source_weights: str) -> Callable[[str], ExperimentSpec]:
        def build(source_run_id: str) -> ExperimentSpec:
            sw = source_run_id if source_weights == "trained" else "random"
            return ExperimentSpec("quanta", "digits:5-9", backbone="quanta_cnn", batch_size=32, params=QuantaParams(
                source_task="digits:0-4", source_weights=sw, layer_to_transfer=-1,
                nb_of_target_epochs=g.quanta_epochs, nb_of_target_samples=g.quanta_samples, outdir=outdir),
                **common)

        return build

    return [("feature extraction curve", fe), ("fine-tuning curve, configuration 0", ft[0]),
            ("fine-tuning curve, configuration 2", ft[1]), ("source training on digits 0-4", source),
            ("QUANTA digits 0-4 -> 5-9, trained source", quanta("trained")),
            ("QUANTA digits 0-4 -> 5-9, random source (control)", quanta("random"))]


def run_examples(mlflow_path: str, quick: bool = False, reporter: Reporter | None = None,
                 outdir: str | None = None, seed: int = 0) -> list[str]:
    """Run every example in order; returns the MLflow run ids created."""
    from tlcore import experiments

    reporter = reporter or Reporter()
    steps = example_specs(mlflow_path, quick, outdir, seed)
    run_ids: list[str] = []
    source_run_id = ""
    for i, (label, spec_or_fn) in enumerate(steps):
        spec = spec_or_fn if isinstance(spec_or_fn, ExperimentSpec) else spec_or_fn(source_run_id)
        reporter.message(f"[{i + 1}/{len(steps)}] {label}")
        result = experiments.run(spec, reporter.scaled(i / len(steps), (i + 1) / len(steps)))
        run_ids += ([result.parent_run_id] if result.parent_run_id else []) + list(result.run_ids)
        if spec.method == "source":
            source_run_id = result.run_ids[0]
    return run_ids
