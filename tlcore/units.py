"""One way to write every number the app shows: accuracies in % with one decimal, FLOPs with a unit,
energy in one family (Wh, with the prefix its size calls for), CO2 in grams or kilograms, times in
s / min / h. Pages and figures format through here, so a value reads the same on every page.
"""

from __future__ import annotations

import math

#: Cost metrics as charts draw them: axis label and the factor from the logged unit (kWh, kg) to the drawn one.
ENERGY_AXIS = ("Energy (Wh)", 1000.0)
CO2_AXIS = ("CO2 (g CO2e)", 1000.0)


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def percent(fraction, digits: int = 1) -> str:
    """0.8675 -> '86.8 %'."""
    v = _finite(fraction)
    return "—" if v is None else f"{v * 100:.{digits}f} %"


def flops(value) -> str:
    """11726346944 -> '11.7 GFLOPs'."""
    v = _finite(value)
    if v is None:
        return "—"
    for unit, scale in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} FLOPs"


def energy(kwh) -> str:
    """Energy logged in kWh, written in Wh with the prefix its size calls for: '40 mWh', '1.2 Wh', '3.4 kWh'."""
    v = _finite(kwh)
    if v is None:
        return "—"
    wh = v * 1000.0
    for unit, scale in (("MWh", 1e6), ("kWh", 1e3), ("Wh", 1.0), ("mWh", 1e-3), ("µWh", 1e-6)):
        if abs(wh) >= scale:
            return f"{wh / scale:.3g} {unit}"
    return "0 Wh" if wh == 0 else f"{wh * 1e6:.3g} µWh"


def co2(kg) -> str:
    """CO2 logged in kg: '12 mg', '3.1 g', '2.4 kg'."""
    v = _finite(kg)
    if v is None:
        return "—"
    g = v * 1000.0
    for unit, scale in (("t", 1e6), ("kg", 1e3), ("g", 1.0), ("mg", 1e-3)):
        if abs(g) >= scale:
            return f"{g / scale:.3g} {unit} CO2e"
    return "0 g CO2e" if g == 0 else f"{g * 1e3:.3g} mg CO2e"


def format_duration(seconds: float | None) -> str:
    """'42 s', '3 min 05 s', '12 min', '1.5 h'."""
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds / 3600:.1f} h"


def duration(seconds) -> str:
    """'42 s', '3 min 05 s', '12 min', '1.5 h'; a dash for a missing value."""
    v = _finite(seconds)
    return "—" if v is None else format_duration(v)


#: Which way is better, per metric name: +1 higher, -1 lower (Runs compare marks the best value).
def better(name: str) -> int:
    n = name.lower()
    if n.endswith(("accuracy", "precision", "recall")) or n.startswith("quanta_source"):
        return 1 if n.endswith(("accuracy", "precision", "recall")) else 0
    if n.endswith(("loss", "_s", "flops_total", "energy_kwh", "co2_kg", "device_hours", "images_processed")):
        return -1
    return 0


def metric(name: str, value) -> str:
    """A final metric as people read it, by its name."""
    v = _finite(value)
    if v is None:
        return "—"
    n = name.lower()
    if n.endswith(("accuracy", "precision", "recall")):
        return percent(v)
    if n.startswith("flops") or n.endswith("flops") or "flops_" in n:
        return flops(v)
    if n.endswith("energy_kwh"):
        return energy(v)
    if n.endswith("co2_kg"):
        return co2(v)
    if n.endswith("_s") and ("time" in n or n.startswith("epoch")):
        return duration(v)
    if n.startswith("quanta_source"):
        return f"{v:.4f}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"
