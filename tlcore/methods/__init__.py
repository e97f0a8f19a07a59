"""Transfer methods. Each module registers itself with :mod:`tlcore.experiments`."""
