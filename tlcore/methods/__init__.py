"""Transfer methods. Each module registers itself with :mod:`tlcore.experiments`."""
from tlcore.methods import feature_extraction  # noqa: F401  (registers "fe")
