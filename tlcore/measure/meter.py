"""The cost meter: wall time (device synchronised), device-hours, images, FLOPs, energy and CO2.

Every figure says how it was obtained: FLOPs are counted (meta device), energy is whatever
CodeCarbon could read (``energy_method``), time is measured. A method wraps its work::

    with CostMeter(device, energy_settings) as meter:
        ...
        meter.add_images(len(batch)); meter.add_flops(flops_per_image * len(batch))
    report = meter.report
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from tlcore.devices import synchronize
from tlcore.measure.energy import EnergyMeter, EnergyReading, EnergySettings


@dataclass
class CostReport:
    time_total_s: float
    device: str
    device_hours: float
    images_processed: int
    flops_total: float
    energy_kwh: float | None
    co2_kg: float | None
    energy_method: str
    carbon_intensity_g_per_kwh: float | None
    laps: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Numeric figures under the MLflow schema's names (missing energy is left out, not zero)."""
        out = {
            "time_total_s": self.time_total_s,
            "device_hours": self.device_hours,
            "images_processed": float(self.images_processed),
            "flops_total": float(self.flops_total),
        }
        if self.energy_kwh is not None:
            out["energy_kwh"] = self.energy_kwh
        if self.co2_kg is not None:
            out["co2_kg"] = self.co2_kg
        if self.carbon_intensity_g_per_kwh is not None:
            out["carbon_intensity_g_per_kwh"] = self.carbon_intensity_g_per_kwh
        for name, seconds in self.laps.items():
            out[f"time_{name}_s"] = seconds
        return out

    def params(self) -> dict[str, str]:
        return {"device": self.device, "energy_method": self.energy_method}

    def as_dict(self) -> dict:
        return asdict(self)


def apportion(total: float, weights: Sequence[float]) -> list[float]:
    """``total`` split in proportion to ``weights`` (equal shares when they are all zero); the shares add up
    to ``total``. How one tracker's energy is shared among a sweep's points by their measured time."""
    weights = [max(float(w), 0.0) for w in weights]
    whole = sum(weights)
    if not weights:
        return []
    if whole <= 0:
        return [total / len(weights)] * len(weights)
    return [total * w / whole for w in weights]


class CostMeter:
    """Time, images, FLOPs and energy of a piece of work; see the module docstring.

    ``within``: a meter already running around this one (see :meth:`part`): this one then reads its energy
    off that meter's tracker instead of starting its own.
    """

    def __init__(self, device, energy: EnergySettings | None = None, devices_held: int = 1, *,
                 within: CostMeter | None = None) -> None:
        import torch

        self.device = device if isinstance(device, torch.device) else torch.device(device)
        self.within = within
        self.energy = within.energy if within is not None else EnergyMeter(energy)
        self._energy_at_start: EnergyReading | None = None
        self.devices_held = devices_held
        self.images = 0
        self.flops = 0.0
        self.laps: dict[str, float] = {}
        self._t0: float | None = None
        self.report: CostReport | None = None

    def part(self) -> CostMeter:
        """A meter for one stage of this running one (a sweep's extraction): its own time, images and FLOPs,
        and the energy this meter's tracker counted meanwhile. One CodeCarbon start per sweep, not one per stage."""
        return CostMeter(self.device, devices_held=self.devices_held, within=self)

    def start(self) -> CostMeter:
        if self.within is None:
            self.energy.start()
        else:
            self._energy_at_start = self.energy.so_far()
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def add_images(self, n: int) -> None:
        self.images += int(n)

    def add_flops(self, n: float) -> None:
        self.flops += float(n)

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._t0 is None else time.perf_counter() - self._t0

    @contextmanager
    def lap(self, name: str):
        """Time a stage (``time_<name>_s``), synchronised; repeated laps of one name add up."""
        synchronize(self.device)
        t = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.laps[name] = self.laps.get(name, 0.0) + time.perf_counter() - t

    def stop(self) -> CostReport:
        synchronize(self.device)
        wall = time.perf_counter() - (self._t0 or time.perf_counter())
        reading: EnergyReading = self.energy.stop() if self.within is None else self._part_reading()
        self.report = CostReport(
            time_total_s=wall,
            device=str(self.device),
            device_hours=wall * self.devices_held / 3600.0,
            images_processed=self.images,
            flops_total=self.flops,
            energy_kwh=reading.energy_kwh,
            co2_kg=reading.co2_kg,
            energy_method=reading.method,
            carbon_intensity_g_per_kwh=reading.carbon_intensity_g_per_kwh,
            laps=dict(self.laps),
        )
        return self.report

    def _part_reading(self) -> EnergyReading:
        """This part's energy: the enclosing tracker's total now, less its total when the part started."""
        if not self.energy.settings.enabled:
            return EnergyReading(None, None, "unavailable: energy measurement turned off", None)
        start, end = self._energy_at_start, self.energy.so_far()
        if start is None or end is None or start.energy_kwh is None or end.energy_kwh is None:
            return EnergyReading(None, None, "unavailable: the enclosing meter's tracker could not be read", None)
        co2 = None if start.co2_kg is None or end.co2_kg is None else max(end.co2_kg - start.co2_kg, 0.0)
        return EnergyReading(max(end.energy_kwh - start.energy_kwh, 0.0), co2, end.method,
                             end.carbon_intensity_g_per_kwh)

    def __enter__(self) -> CostMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
