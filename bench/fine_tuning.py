"""Fine-tuning benchmarks: (a) epoch throughput of the FT loop vs a minimal plain PyTorch loop on the same
model and in-memory data, (b) training-step time of freezing configuration 3 vs 0.

    python bench/fine_tuning.py loop [--resolution 64 --spc 20 --batch-size 32 --epochs 4 --repeats 3]
    python bench/fine_tuning.py freezing [--resolution 96 --batch-size 32 --steps 5 --repeats 3]
    python bench/fine_tuning.py            # both

(a) runs the real method (``experiments.run``: reporter, per-epoch MLflow metrics and checkpoint,
SGDW, per-tensor clipping, val pass) and times its steady-state epochs (from the second on); the
plain loop decodes nothing either (same uint8 tensors), normalises the same way and does forward,
loss, backward, plain SGD step and the same val pass. Goal: FT throughput >= 0.85 of plain.
(b) must show frozen layers making a step cheaper. Runs are interleaved and repeated; medians
are compared as ratios, which survive a noisy shared machine better than seconds.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlcore import experiments
from tlcore.devices import hardware_info, resolve_device
from tlcore.measure import flops_per_image
from tlcore.methods import common
from tlcore.methods import fine_tuning as ft
from tlcore.models import create_backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FineTuningParams


def clocks() -> tuple[float, float]:
    """(wall, this process's CPU) seconds: CPU time is what other tenants of a shared machine do not inflate."""
    return time.perf_counter(), time.process_time()


def gaps(stamps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(stamps)]


class EpochClock(Reporter):
    """Notes when each epoch's metrics arrive: the gap between two is one whole epoch of the loop."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def log_metrics(self, metrics, step=None, series=""):
        self.stamps.append(clocks())


def plain_epochs(model, images, labels, val_images, prep, batch_size: int, epochs: int,
                 lr: float) -> list[tuple[float, float]]:
    """The minimal loop: shuffle, normalise, forward, loss, backward, SGD step; then a val pass. (wall, CPU) s/epoch."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(prep.std).view(1, 3, 1, 1) * 255
    stamps = [clocks()]
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(labels), batch_size):
            rows = order[i:i + batch_size]
            x = (images[rows].float() - mean) / std
            loss = F.cross_entropy(model(x), labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(val_images), batch_size):
                model((val_images[i:i + batch_size].float() - mean) / std)
        stamps.append(clocks())
    return gaps(stamps)


def bench_loop(args) -> dict[str, float]:
    store = tempfile.mkdtemp(prefix="ft-bench-")
    spec = ExperimentSpec("ft", "digits", samples_per_class=(args.spc,), model_selection=True,
                          resolution=args.resolution, batch_size=args.batch_size, mlflow_path=store,
                          measure_energy=False, num_workers=0,
                          params=FineTuningParams(configuration=0, epochs=args.epochs))
    # the plain loop gets the very same model and decoded tensors
    ds, splits = common.load_data(spec)
    (point,) = common.plan_points(spec, ds, splits)
    ctx = ft.prepare(spec, ds, Reporter())
    train = ctx.cache.get("train", point.train, Reporter(), transient=True)
    val = ctx.cache.get("val", point.val, Reporter())
    ft_epochs, plain_epochs_ = [], []  # steady-state epochs (the first of each run is left out), (wall, CPU)
    for r in range(args.repeats):
        clock = EpochClock()
        experiments.run(spec, clock)
        ft_epochs += gaps(clock.stamps)
        torch.manual_seed(r)
        model = ft.build_model(ctx.base, ds.num_classes, 0, ctx.bn_mode, torch.device("cpu"))
        plain = plain_epochs(model, train.images, train.labels, val.images, ctx.prep, args.batch_size, args.epochs,
                             spec.params.learning_rate)[1:]
        plain_epochs_ += plain
        print(f"  repeat {r + 1}: FT loop {statistics.median(w for w, _ in gaps(clock.stamps)):.2f} s/epoch, plain "
              f"loop {statistics.median(w for w, _ in plain):.2f} s/epoch (wall)", flush=True)
    n = len(train)
    out = {}
    for i, kind in enumerate(("wall", "CPU")):
        f, pl = statistics.median(e[i] for e in ft_epochs), statistics.median(e[i] for e in plain_epochs_)
        out[kind] = pl / f
        print(f"(a) epoch throughput ({kind} time), efficientnet_lite0 configuration 0, {n} train + {len(val)} val "
              f"images at {args.resolution} px, batch {args.batch_size}: FT loop {n / f:.1f} img/s, plain loop "
              f"{n / pl:.1f} img/s (training images per epoch, val pass included) -> ratio {pl / f:.2f} (goal >= 0.85)")
    return out


def step_time(model, optimizer, x, y, steps: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``steps`` training steps after a warm-up step."""
    trainable = model.trainable_parameters()
    model.train()
    stamps = []
    for _ in range(steps + 1):
        stamps.append(clocks())
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ft.clip_gradients_(trainable, 1.0)
        optimizer.step()
    stamps.append(clocks())
    return gaps(stamps)[1:]


def bench_freezing(args) -> dict[str, float]:
    out = {}
    params = FineTuningParams()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    y = torch.randint(0, 10, (args.batch_size,))
    for name in ("efficientnet_lite0", "resnet18"):
        base = create_backbone(name, "default" if name.startswith("efficientnet_lite") else "random")
        models = {c: ft.build_model(base, 10, c, "running", torch.device("cpu")) for c in (0, 3)}
        opts = {c: ft.build_optimizer(params, m.trainable_parameters()) for c, m in models.items()}
        times: dict[int, list[tuple[float, float]]] = {0: [], 3: []}
        for _ in range(args.repeats):
            for c in (0, 3):  # interleaved
                times[c] += step_time(models[c], opts[c], x, y, args.steps)
        flops = {c: flops_per_image(m, args.resolution, train=True).train_step for c, m in models.items()}
        med = {c: [statistics.median(t[i] for t in times[c]) for i in (0, 1)] for c in (0, 3)}
        ratio = med[3][0] / med[0][0]
        out[name] = ratio
        print(f"(b) {name}, batch {args.batch_size} at {args.resolution} px: step configuration 0 "
              f"{med[0][0] * 1000:.0f} ms, configuration 3 {med[3][0] * 1000:.0f} ms -> {ratio:.2f}x the time "
              f"(CPU time {med[3][1] / med[0][1]:.2f}x); FLOPs per image {flops[3] / flops[0]:.2f}x "
              f"({flops[0] / 1e9:.3f} -> {flops[3] / 1e9:.3f} GFLOPs); trainable parameters "
              f"{models[0].count_parameters(True) / 1e6:.2f}M -> {models[3].count_parameters(True) / 1e6:.2f}M",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=["loop", "freezing", "all"], default="all")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spc", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hw = hardware_info()
    print(f"machine: {hw.describe()}; device {resolve_device('auto')}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if args.what in ("loop", "all"):
        bench_loop(argparse.Namespace(**{**vars(args), "resolution": args.resolution or 64}))
    if args.what in ("freezing", "all"):
        bench_freezing(argparse.Namespace(**{**vars(args), "resolution": args.resolution or 96}))
    if resolve_device("auto").type != "cuda":
        print("no CUDA GPU here: images/s with AMP (bf16/fp16), channels_last and pinned memory were not measured")


if __name__ == "__main__":
    main()
