"""Transfer methods. Each module registers itself with :mod:`tlcore.experiments`."""

from tlcore.methods import fine_tuning  # noqa: F401
