"""How fast a device turns FLOPs into results: the :class:`Speed` record, and the timing that
measures this machine's in seconds.

Both the guideline projection (:mod:`tlcore.guidelines.projection`) and a job's time estimate
(:mod:`tlcore.pace`) need a speed; this module sits below both, so the pace of a job does not
reach up into the guidelines for it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Speed:
    """How fast the chosen device turns FLOPs into results, and at what power."""

    flops_per_s_fe: float
    flops_per_s_ft: float
    watts: float | None
    how: str


def calibrate_speed(backbone: str, device: str = "auto", batch: int = 8, repeats: int = 3,
                    input_size: int | None = None) -> Speed:
    """Measure this machine's pace now: a forward pass (FE) and a training step (FT) on random
    images at ``input_size`` (default: the backbone's), ``repeats`` times each, median. Takes
    seconds on a CPU."""
    import torch

    from tlcore.devices import resolve_device
    from tlcore.measure.flops import count_flops
    from tlcore.models import backbone_config, create_backbone

    dev = resolve_device(device)
    torch.manual_seed(0)
    size = input_size or backbone_config(backbone).preprocessing.input_size
    model = create_backbone(backbone, weights="random", num_classes=2)
    counts = count_flops(model, size, train=True, batch=2)
    model.to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 2, (batch,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def timed(fn) -> float:
        fn()  # warm-up
        out = []
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t)
        return statistics.median(out)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def step() -> None:
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    t_fe, t_ft = timed(forward), timed(step)
    rate_fe = batch * counts.forward / t_fe
    rate_ft = batch * (counts.forward + counts.backward) / t_ft
    how = (f"measured just now on {dev.type}: {batch} images at {size} px, forward {t_fe * 1000:.0f} ms, training "
           f"step {t_ft * 1000:.0f} ms (median of {repeats}); whole jobs also spend time loading data and models")
    return Speed(float(rate_fe), float(rate_ft), None, how)
