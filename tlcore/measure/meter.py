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


class CostMeter:
    def __init__(self, device, energy: EnergySettings | None = None, devices_held: int = 1) -> None:
        import torch

        self.device = device if isinstance(device, torch.device) else torch.device(device)
        self.energy = EnergyMeter(energy)
        self.devices_held = devices_held
        self.images = 0
        self.flops = 0.0
        self.laps: dict[str, float] = {}
        self._t0: float | None = None
        self.report: CostReport | None = None

    def start(self) -> CostMeter:
        self.energy.start()
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
        reading: EnergyReading = self.energy.stop()
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

    def __enter__(self) -> CostMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
