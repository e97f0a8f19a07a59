"""Device selection: ``auto`` picks cuda, then mps, then cpu. Nothing assumes a GPU exists."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from tlcore.errors import TLError


def resolve_device(name: str = "auto"):
    """Return a ``torch.device`` for a user string, with one sentence when it is not available."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TLError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TLError(f"Device {name!r} was asked for but no CUDA GPU is available here; use --device cpu or auto.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TLError(
            f"Device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TLError("Device 'mps' was asked for but Apple MPS is not available here; use --device cpu or auto.")
    return device


def synchronize(device) -> None:
    """Wait for queued kernels, so wall-clock readings cover the work (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class HardwareInfo:
    device: str
    name: str
    cpu: str
    cpu_count: int
    memory_gb: float | None
    gpu_count: int

    def describe(self) -> str:
        if self.device.startswith("cuda"):
            return f"{self.name} (CUDA, {self.gpu_count} GPU(s)); CPU: {self.cpu}, {self.cpu_count} cores"
        return f"CPU only: {self.cpu}, {self.cpu_count} cores" + (
            f", {self.memory_gb:.0f} GiB RAM" if self.memory_gb else ""
        )


def hardware_info() -> HardwareInfo:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        memory_gb = psutil.virtual_memory().total / 2**30
    except Exception:  # psutil is optional at this level
        memory_gb = None
    device = resolve_device("auto")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        gpus = torch.cuda.device_count()
    elif device.type == "mps":
        name, gpus = "Apple MPS", 1
    else:
        name, gpus = "CPU", 0
    return HardwareInfo(str(device), name, cpu, os.cpu_count() or 1, memory_gb, gpus)
