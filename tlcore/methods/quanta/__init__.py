"""QUANTA: how much a target task wants a source network's features, layer by layer.

A frozen source (eval mode: BatchNorm running statistics, no dropout, no gradients) and a randomly
initialised target of the same architecture see the same image (augmented once, when asked); a
QUANTA layer (:mod:`tlcore.models.quanta_layer`) at the chosen layer, or at every layer (``-l -1``),
mixes the source's output into the target's.

The package, along its seams:

- :mod:`.sources`: which source (a weights file, a Source training run, pretrained, random) and
  how a run records it (``source_reference``);
- :mod:`.plan`: everything checked before a run opens, and ``--show_only_build``;
- :mod:`.training`: one run (build, train with lambda_S logged per step, test);
- :mod:`.exports`: the files the seed's QUANTA tool wrote to ``--outdir``;
- :mod:`.names`: the export folder and file names all of them share;
- :mod:`.method`: the registered method (``quanta``), one MLflow child run per run index.

Everything other modules imported from the former ``tlcore/methods/quanta.py`` is re-exported here.
"""

from tlcore.methods.quanta.exports import keras_metrics, seed_exports
from tlcore.methods.quanta.method import quanta
from tlcore.methods.quanta.names import RESUME_FORMAT, export_dir, export_names, safe_name
from tlcore.methods.quanta.plan import QuantaPlan, describe_network, prepare, show_build
from tlcore.methods.quanta.sources import (
    PRETRAINED_NAMES,
    SourcePlan,
    _random_source,
    read_checkpoint,
    resolve_source,
    source_reference,
)

__all__ = [
    "PRETRAINED_NAMES",
    "RESUME_FORMAT",
    "QuantaPlan",
    "SourcePlan",
    "_random_source",
    "describe_network",
    "export_dir",
    "export_names",
    "keras_metrics",
    "prepare",
    "quanta",
    "read_checkpoint",
    "resolve_source",
    "safe_name",
    "seed_exports",
    "show_build",
    "source_reference",
]
