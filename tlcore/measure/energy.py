"""Energy and CO2 through CodeCarbon's offline tracker, and an honest label of how they were obtained.

Only ``OfflineEmissionsTracker`` is used: the online tracker needs a geolocation lookup and,
offline, silently assumes a near-zero-carbon grid. Process mode keeps other tenants' load off
the bill. ``start``/``stop`` swallow their own errors, so we check that results exist and fall
back to "unavailable" rather than a made-up number.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_COUNTRY = os.environ.get("TLCORE_COUNTRY_ISO_CODE", "FRA")


@dataclass(frozen=True)
class EnergySettings:
    """Where the electricity comes from: a 3-letter country code, or a forced intensity in gCO2e/kWh."""

    country_iso_code: str = DEFAULT_COUNTRY
    carbon_intensity_g_per_kwh: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class EnergyReading:
    energy_kwh: float | None
    co2_kg: float | None
    method: str  # e.g. "estimate: cpu_load_tdp+ram_estimate", "counters: nvml", "unavailable: ..."
    carbon_intensity_g_per_kwh: float | None
    cpu_kwh: float | None = None
    gpu_kwh: float | None = None
    ram_kwh: float | None = None

    @property
    def is_estimate(self) -> bool:
        return not self.method.startswith("counters")


def _component_methods(tracker) -> list[str]:
    parts = []
    for h in getattr(tracker, "_hardware", []):
        kind = type(h).__name__
        if kind == "CPU":
            mode = str(getattr(h, "_mode", "")).lower()
            parts.append("cpu_rapl" if "intel_rapl" in mode or mode == "rapl" else
                         "cpu_powergadget" if "power_gadget" in mode else "cpu_load_tdp")
        elif kind == "GPU":
            parts.append("gpu_nvml")
        elif kind == "RAM":
            parts.append("ram_estimate")
        elif kind == "AppleSiliconChip":
            parts.append("apple_powermetrics")
    return parts


class EnergyMeter:
    """Wraps one CodeCarbon tracker; works from a background thread and around code that raises."""

    def __init__(self, settings: EnergySettings | None = None, measure_power_secs: float = 1.0) -> None:
        self.settings = settings or EnergySettings()
        self.measure_power_secs = measure_power_secs
        self._tracker = None
        self._error: str | None = None

    def start(self) -> None:
        if not self.settings.enabled:
            return
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)  # after the import, which resets it to INFO

            kwargs = dict(
                tracking_mode="process",
                save_to_file=False,
                output_methods=[],
                log_level="error",
                measure_power_secs=self.measure_power_secs,
                allow_multiple_runs=True,
            )
            if self.settings.carbon_intensity_g_per_kwh is not None:
                kwargs["force_carbon_intensity_g_co2e_kwh"] = self.settings.carbon_intensity_g_per_kwh
            self._tracker = OfflineEmissionsTracker(country_iso_code=self.settings.country_iso_code, **kwargs)
            self._tracker.start()
        except Exception as exc:  # codecarbon missing or broken: say so, do not guess
            self._error = f"{type(exc).__name__}: {exc}"
            self._tracker = None

    def so_far(self) -> EnergyReading | None:
        """The energy used since ``start``, read now without stopping: a sweep measures its stages (the
        extraction) off its one tracker instead of starting a second one (~30-50 ms per CodeCarbon start
        and stop here). None when there is no tracker, or CodeCarbon's internals moved (the pinned 3.3.2
        has them): the caller then apportions by time."""
        if self._tracker is None:
            return None
        try:
            self._tracker._measure_power_and_energy()  # what its 1-s scheduler calls: brings the total up to now
            data = self._tracker._prepare_emissions_data()
            energy = float(data.energy_consumed)
            co2 = float(data.emissions) if data.emissions is not None else None
        except Exception:
            return None
        return EnergyReading(energy, co2, self.label(), self._intensity(energy, co2))

    def label(self) -> str:
        """How the running tracker gets its figures: ``counters: ...`` only when every part is read off hardware."""
        methods = _component_methods(self._tracker)
        counters_only = methods and all(m in ("cpu_rapl", "gpu_nvml") for m in methods)
        return ("counters: " if counters_only else "estimate: ") + "+".join(methods or ["unknown"])

    def _intensity(self, energy: float, co2: float | None) -> float | None:
        if co2 is not None and energy > 0:
            return co2 * 1000.0 / energy
        return self.settings.carbon_intensity_g_per_kwh

    def stop(self) -> EnergyReading:
        if not self.settings.enabled:
            return EnergyReading(None, None, "unavailable: energy measurement turned off", None)
        if self._tracker is None:
            return EnergyReading(None, None, f"unavailable: codecarbon did not start ({self._error})", None)
        try:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
        except Exception as exc:
            return EnergyReading(None, None, f"unavailable: codecarbon failed ({type(exc).__name__})", None)
        if data is None or data.energy_consumed is None:
            return EnergyReading(None, None, "unavailable: codecarbon returned no data", None)
        energy = float(data.energy_consumed)
        co2 = float(data.emissions) if data.emissions is not None else None
        return EnergyReading(energy, co2, self.label(), self._intensity(energy, co2), float(data.cpu_energy or 0.0),
                             float(data.gpu_energy or 0.0), float(data.ram_energy or 0.0))
