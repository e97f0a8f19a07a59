"""What a run costs: time, device-hours, images, FLOPs, energy and CO2, each with how it was obtained."""

from tlcore.measure.energy import EnergyMeter, EnergyReading, EnergySettings
from tlcore.measure.flops import FlopCount, count_flops, flops_per_image
from tlcore.measure.meter import CostMeter, CostReport

__all__ = ["CostMeter", "CostReport", "EnergyMeter", "EnergyReading", "EnergySettings", "FlopCount",
           "count_flops", "flops_per_image"]
