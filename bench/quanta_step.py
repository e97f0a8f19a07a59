"""A QUANTA training step against a plain training step of the same target network.

A QUANTA step adds one forward pass of the frozen source (no backward, stopped after the last
QUANTA layer) and the mixing, so it should cost at most about 1.5x a plain step. Both steps are
timed interleaved in one process (plain, QUANTA, plain, ... with the order alternating), so load
from other processes hits both alike; we report medians and the median of the paired ratios.

    python bench/quanta_step.py                       # quanta_cnn, batch 32, -l -1 (every layer)
    python bench/quanta_step.py --layer 0 --layer 6
    python bench/quanta_step.py --architecture efficientnet_lite0 --resolution 96
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from tlcore.devices import hardware_info, resolve_device, synchronize
from tlcore.methods.supervised import configure_device, seed_everything, train_step, use_channels_last
from tlcore.models import backbone_config, create_backbone
from tlcore.models.quanta_layer import QuantaNetwork, select_points


def make_step(model: torch.nn.Module, params, x, y, device):
    """The methods' own training step (``train_step``), timed."""
    optimizer = torch.optim.Adam(params, lr=2e-4, eps=1e-7)

    def step() -> float:
        synchronize(device)
        t = time.perf_counter()
        train_step(model, x, y, optimizer, device)
        synchronize(device)
        return time.perf_counter() - t

    return step


def bench(arch: str, layer: int | str, batch: int, resolution: int | None, reps: int, warmup: int,
          device: torch.device) -> dict:
    seed_everything(0)
    cfg = backbone_config(arch)
    size = resolution or cfg.preprocessing.input_size
    weights = "random" if not cfg.weights else "default"
    source = create_backbone(arch, weights)
    target = create_backbone(arch, "random", num_classes=10)
    plain = create_backbone(arch, "random", num_classes=10)
    net = QuantaNetwork(source, target, select_points(cfg, layer)).to(device).train()
    plain.to(device).train()
    if use_channels_last(device):
        net.to(memory_format=torch.channels_last)
        plain.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    plain_step = make_step(plain, list(plain.parameters()), x, y, device)
    quanta_step = make_step(net, [p for p in net.parameters() if p.requires_grad], x, y, device)
    for _ in range(warmup):
        plain_step()
        quanta_step()
    t_plain, t_quanta = [], []
    for i in range(reps):
        if i % 2 == 0:
            t_plain.append(plain_step())
            t_quanta.append(quanta_step())
        else:
            t_quanta.append(quanta_step())
            t_plain.append(plain_step())
    ratios = [q / p for q, p in zip(t_quanta, t_plain, strict=True)]
    return {"arch": arch, "layer": layer, "n_layers": len(net.quanta), "batch": batch, "size": size,
            "plain_ms": 1000 * statistics.median(t_plain), "quanta_ms": 1000 * statistics.median(t_quanta),
            "ratio_of_medians": statistics.median(t_quanta) / statistics.median(t_plain),
            "median_paired_ratio": statistics.median(ratios)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--architecture", default="quanta_cnn")
    ap.add_argument("--layer", action="append", help="layer index or tap name (repeatable); default -1")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = resolve_device(args.device)
    configure_device(device)
    hw = hardware_info()
    print(f"machine: {hw.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"python {platform.python_version()}; device {device}")
    print(f"{'architecture':18s} {'layer':>10s} {'QUANTA':>6s} {'batch':>5s} {'size':>4s} {'plain ms':>9s} "
          f"{'QUANTA ms':>9s} {'ratio':>6s} {'paired':>6s}")
    for layer in args.layer or ["-1"]:
        lay: int | str = int(layer) if layer.lstrip("-").isdigit() else layer
        r = bench(args.architecture, lay, args.batch, args.resolution, args.reps, args.warmup, device)
        print(f"{r['arch']:18s} {r['layer']!s:>10s} {r['n_layers']:>6d} {r['batch']:>5d} {r['size']:>4d} "
              f"{r['plain_ms']:9.1f} {r['quanta_ms']:9.1f} {r['ratio_of_medians']:6.2f} "
              f"{r['median_paired_ratio']:6.2f}")
    print("ratio = median QUANTA step / median plain step; paired = median of per-pair ratios. Goal: <= 1.5.")


if __name__ == "__main__":
    main()
