"""Transfer methods. Each module registers itself with :mod:`tlcore.experiments`."""
from tlcore.methods import quanta, source_training  # noqa: F401  (register "quanta" and "source")
