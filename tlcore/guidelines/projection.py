"""What each option would cost on the user's whole labelled set: FLOPs, and time and energy at a
device's speed (a named GPU's spec sheet, or this machine's pace from its finished jobs)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tlcore.guidelines.situation import GPU_UTILISATION, GPUS, Situation
from tlcore.speed import Speed


@dataclass(frozen=True)
class OptionCost:
    label: str
    method: str
    configuration: int | str | None
    flops: float
    seconds: float | None  # None until this machine's pace is known
    energy_kwh: float | None


@dataclass(frozen=True)
class Projection:
    options: tuple[OptionCost, ...]
    assumptions: tuple[str, ...]

    def option(self, method: str, configuration: int | str | None = None) -> OptionCost:
        for o in self.options:
            if o.method == method and (method == "fe" or o.configuration == configuration):
                return o
        raise KeyError((method, configuration))


CONFIG_LABELS = {0: "FT, configuration 0 (train everything)", 1: "FT, configuration 1 (freeze ~1/4)",
                 2: "FT, configuration 2 (freeze ~1/2)", 3: "FT, configuration 3 (freeze ~3/4)",
                 "lp-ft": "LP-FT (linear probe, then fine-tune everything)"}


def gpu_speed(key: str) -> Speed:
    gpu = GPUS[key]
    rate = gpu.peak_tflops * 1e12 * GPU_UTILISATION
    return Speed(rate, rate, gpu.board_power_w,
                 f"{gpu.label}: rated {gpu.peak_tflops:g} TFLOP/s (dense bf16/fp16) x an assumed "
                 f"{GPU_UTILISATION:.0%} utilisation, at its {gpu.board_power_w:g} W board power")


def project_costs(situation: Situation, speed: Speed | None, flops_fe_per_image: float,
                  flops_ft_per_image: dict[int | str, float], lp_epochs: int = 5) -> Projection:
    """Time and energy of FE and each FT option on the user's whole labelled set.

    FE: one forward pass per image (x10 with crops). FT: forward + backward of what is trained,
    per image and epoch, for ``situation.epochs`` epochs (an upper bound: early stopping usually
    ends sooner). LP-FT: its first ``lp_epochs`` train the head on frozen features (a forward pass per
    image), the rest the whole network, as the fine-tuning method counts them.
    """
    n = situation.train_images * (10 if situation.use_crops else 1)
    options = []

    def add(label: str, method: str, config, flops: float, rate: float | None) -> None:
        seconds = flops / rate if rate else None
        energy = None if speed is None or speed.watts is None or seconds is None else speed.watts * seconds / 3.6e6
        options.append(OptionCost(label, method, config, flops, seconds, energy))

    add("Feature extraction (every layer, linear classifier)", "fe", None, n * flops_fe_per_image,
        speed.flops_per_s_fe if speed else None)
    for config, per_image in flops_ft_per_image.items():
        if config == "lp-ft":
            probe = min(lp_epochs, situation.epochs)  # the probe's epochs are part of the run's epochs, as in FT
            flops = n * probe * flops_fe_per_image + n * (situation.epochs - probe) * flops_ft_per_image[0]
        else:
            flops = n * situation.epochs * per_image
        add(CONFIG_LABELS.get(config, f"FT, configuration {config}"), "ft", config, flops,
            speed.flops_per_s_ft if speed else None)
    assumptions = (
        f"{situation.train_images:,} labelled images ({situation.samples_per_class} per class x "
        f"{situation.num_classes} classes){', 10 crops each' if situation.use_crops else ''}.",
        f"Fine-tuning runs {situation.epochs} epochs (an upper bound: early stopping usually ends sooner); LP-FT "
        f"spends the first {min(lp_epochs, situation.epochs)} of them on a linear probe.",
        f"FLOPs counted for {situation.backbone} at "
        + (f"{situation.resolution} px" if situation.resolution else "its input size")
        + " (forward for FE; forward + backward of the trained layers for FT).",
        f"Speed: {speed.how}." if speed else "Speed: not known yet (no finished job of this backbone on this "
                                             "machine); only the compute is projected.",
        "Energy: " + ("not projected (no power figure for this device)." if speed is None or speed.watts is None else
                      f"{speed.watts:.0f} W x time; an estimate, like every energy figure on a machine without "
                      "power counters."),
    )
    return Projection(tuple(options), assumptions)


def fits_budget(s: Situation, option: OptionCost) -> bool:
    """Whether an option stays within the user's hours and kWh (an unknown time or energy is not held
    against it: the page says when the pace is unknown)."""
    ok = s.budget_hours is None or option.seconds is None or option.seconds <= s.budget_hours * 3600
    return ok and (s.budget_kwh is None or option.energy_kwh is None or option.energy_kwh <= s.budget_kwh)


# ---------------------------------------------------------------------------------------------
# This machine's pace


def _watts(runs: pd.DataFrame, backbone: str, device_type: str) -> float | None:
    """Median power of finished runs of ``backbone`` on ``device_type``: energy over wall time."""
    need = {"energy_kwh", "time_total_s", "device", "backbone"}
    if runs.empty or not need <= set(runs.columns):
        return None
    ok = (runs["status"].eq("FINISHED") & runs["backbone"].astype(str).eq(backbone)
          & runs["device"].astype(str).str.startswith(device_type) & (runs["time_total_s"] > 0)
          & (runs["energy_kwh"] > 0))
    watts = (runs.loc[ok, "energy_kwh"] * 3.6e6 / runs.loc[ok, "time_total_s"]).dropna()
    return float(watts.median()) if len(watts) else None


def machine_speed(tracker, runs: pd.DataFrame, backbone: str, device_type: str | None = None) -> Speed | None:
    """This machine's pace from its finished FE and FT jobs of ``backbone`` on ``device_type`` (None:
    the device this machine runs on by default); None when it has none."""
    from tlcore.history import measured_speed

    if device_type is None:
        from tlcore.devices import resolve_device

        device_type = resolve_device("auto").type
    fe = measured_speed(tracker, "fe", backbone, device_type)
    ft = measured_speed(tracker, "ft", backbone, device_type)
    if fe is None and ft is None:
        return None
    rate_fe = 1 / (fe or ft).seconds_per_flop
    rate_ft = 1 / (ft or fe).seconds_per_flop
    parts = [m.basis for m in (fe, ft) if m is not None]
    if fe is None or ft is None:
        parts.append(f"no {'feature-extraction' if fe is None else 'fine-tuning'} job yet, so its pace is assumed "
                     "equal")
    watts = _watts(runs, backbone, device_type)
    return Speed(rate_fe, rate_ft, watts, "; ".join(parts)
                 + (f"; power {watts:.0f} W, the median of those runs' energy over time" if watts else ""))
