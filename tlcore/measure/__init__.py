"""What a run costs: time, device-hours, images, FLOPs, energy and CO2, each with how it was obtained.

The names are imported when first used (PEP 562): ``tlcore.specs`` needs only the default country of
the energy settings, and the pages that import it must not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "EnergyMeter": "tlcore.measure.energy", "EnergyReading": "tlcore.measure.energy",
    "EnergySettings": "tlcore.measure.energy", "FlopCount": "tlcore.measure.flops",
    "count_flops": "tlcore.measure.flops", "flops_per_image": "tlcore.measure.flops",
    "CostMeter": "tlcore.measure.meter", "CostReport": "tlcore.measure.meter", "apportion": "tlcore.measure.meter",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tlcore.measure' has no attribute {name!r}")
