"""Transfer methods. Each module registers itself with :mod:`tlcore.experiments`."""
from tlcore.methods import (  # noqa: F401  (register "quanta" and "source")
    feature_extraction,
    fine_tuning,
    quanta,
    source_training,
)
