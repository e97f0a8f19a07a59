"""The old import path of the evidence helpers, kept for its importers (``tlcore.planning``, the
tests): the code lives in :mod:`tlcore.guidelines.evidence`, the pace in
:mod:`tlcore.guidelines.projection` and the timing in :mod:`tlcore.speed`."""

from tlcore.guidelines.evidence import _usable_points, configuration_of, gather_evidence, spc_grid_for_pilot
from tlcore.guidelines.projection import _watts, machine_speed
from tlcore.speed import calibrate_speed

__all__ = ["_usable_points", "_watts", "calibrate_speed", "configuration_of", "gather_evidence", "machine_speed",
           "spc_grid_for_pilot"]
