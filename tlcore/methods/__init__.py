"""Transfer methods. Each module registers itself with :mod:`tlcore.experiments`."""

from tlcore.methods import (  # noqa: F401  (each import registers a method)
    feature_extraction,  # "fe"
    fine_tuning,  # "ft"
    quanta,  # "quanta"
    source_training,  # "source"
)
