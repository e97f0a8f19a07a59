"""Which QUANTA settings separate a trained source from a random one, layer by layer?

The QUANTA method's own pieces (``QuantaNetwork``, the methods' ``train_step``, Adam with the
QUANTA weights in their own param group, eps 1e-7) on the embedded task the examples use: a
``quanta_cnn`` source trained on digits 0-4, transferred to digits 5-9, against a randomly
initialised source (the control). For each setting (QUANTA learning rate, target epochs, training
images per class, every layer at once or layer 0 alone) it trains ``--seeds`` targets per side and
reports each layer's final lambda_S, trained minus control, with Welch's 95 % interval
(``tlcore.quality.judge_layer``), the run-to-run spread and the targets' test accuracy. No MLflow:
the images are decoded once and kept on the device, batches are shuffled per (seed, epoch).

    python bench/quanta_signal.py --device cuda --seeds 8                 # the default grid
    python bench/quanta_signal.py --grid 0.05:6:40:-1 --seeds 3           # one setting (lr:epochs:per-class:layer)

Results go to stdout (a table per setting) and, with ``--out``, to a JSON file. docs/evidence.md
quotes them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from tlcore.data import load_dataset, resolve_splits
from tlcore.data.loading import ImageBatches, normalize_batch
from tlcore.devices import hardware_info, resolve_device
from tlcore.methods.supervised import configure_device, seed_everything, train_step, use_channels_last
from tlcore.models import backbone_config, create_backbone
from tlcore.models.quanta_layer import QuantaNetwork, select_points
from tlcore.quality import LAMBDA_START, judge_layer

DEFAULT_GRID = ("0.05:6:40:-1", "0.05:6:all:0", "0.05:20:all:0", "0.01:20:all:0", "0.05:20:all:-1",
                "0.01:20:all:-1", "0.005:40:all:0", "0.1:10:all:0", "0.05:6:all:-1")


def tensors(name: str, device: torch.device) -> tuple[dict, object]:
    """Every image of a dataset, normalised for quanta_cnn, on the device; and its splits (seed 0)."""
    ds = load_dataset(name)
    prep = backbone_config("quanta_cnn").preprocessing  # 32 px, the reference network's fixed size
    images = ImageBatches(ds, np.arange(len(ds)), prep)
    x = torch.cat([normalize_batch(torch.stack([images[i][0]]), prep, device) for i in range(len(ds))])
    return {"x": x, "y": torch.as_tensor(ds.labels, device=device), "ds": ds}, resolve_splits(ds, seed=0)


def batches(idx: np.ndarray, batch: int, seed: int, epoch: int):
    order = np.random.default_rng([seed, epoch]).permutation(idx)
    for i in range(0, len(order), batch):
        part = order[i:i + batch]
        if len(part) > 1:  # BatchNorm cannot normalise one image
            yield part


def accuracy(model, data: dict, idx: np.ndarray, device: torch.device) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(data["x"][torch.as_tensor(part, device=device)]).argmax(-1)
                          for part in np.array_split(idx, max(1, len(idx) // 256))])
    y = data["y"][torch.as_tensor(idx, device=device)]
    classes = torch.unique(y)
    return float(torch.stack([(pred[y == c] == c).float().mean() for c in classes]).mean())  # balanced


def train_source(data: dict, splits, device: torch.device, epochs: int) -> torch.nn.Module:
    seed_everything(0)
    train = np.setdiff1d(np.arange(len(data["y"])), np.union1d(splits.test, splits.val))
    model = create_backbone("quanta_cnn", "random", num_classes=data["ds"].num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, eps=1e-7)
    for epoch in range(epochs):
        model.train()
        for part in batches(train, 32, 0, epoch):
            ix = torch.as_tensor(part, device=device)
            train_step(model, data["x"][ix], data["y"][ix], opt, device)
    print(f"source: {epochs} epochs, test accuracy {accuracy(model, data, splits.test, device):.3f}", flush=True)
    return model.eval()


def run_target(source_state: dict | None, data: dict, splits, device: torch.device, seed: int, quanta_lr: float,
               epochs: int, per_class: int | None, layer: int) -> dict:
    cfg = backbone_config("quanta_cnn")
    seed_everything(seed)
    if source_state is None:  # the control: a random source from its own seed, as the method draws it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((seed * 7919 + 104_729) % 2**63)
            source = create_backbone("quanta_cnn", "random", num_classes=5)
    else:
        source = create_backbone("quanta_cnn", "random", num_classes=5)
        source.load_state_dict(source_state)
    target = create_backbone("quanta_cnn", "random", num_classes=data["ds"].num_classes)
    net = QuantaNetwork(source, target, select_points(cfg, layer)).to(device)
    if use_channels_last(device):
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([{"params": net.target.parameters(), "lr": 2e-4},
                            {"params": net.quanta_parameters(), "lr": quanta_lr}], eps=1e-7)
    pool = np.setdiff1d(np.arange(len(data["y"])), np.union1d(splits.test, splits.val))
    train = splits.train_split(per_class, seed % splits.draws(per_class)) if per_class else pool
    for epoch in range(1, epochs + 1):
        net.train()
        for part in batches(train, 32, seed, epoch):
            ix = torch.as_tensor(part, device=device)
            train_step(net, data["x"][ix], data["y"][ix], opt, device)
    lam = net.lambda_source().detach().float().cpu().tolist()
    return {"lambda_s": lam, "test_accuracy": accuracy(net, data, splits.test, device), "steps": epochs * len(train)
            // 32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, default=8, help="targets per side and setting")
    ap.add_argument("--source-epochs", type=int, default=8)
    ap.add_argument("--grid", nargs="*", default=list(DEFAULT_GRID), help="lr:epochs:per-class|all:layer")
    ap.add_argument("--max-seconds", type=float, default=420, help="stop starting new settings after this")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    device = resolve_device(args.device)
    configure_device(device)
    print(f"{hardware_info().describe()}; torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    src_data, src_splits = tensors("digits:0-4", device)
    tgt_data, tgt_splits = tensors("digits:5-9", device)
    source = train_source(src_data, src_splits, device, args.source_epochs)
    state = {k: v.detach().clone() for k, v in source.state_dict().items()}
    results = []
    for setting in args.grid:
        if time.perf_counter() - t0 > args.max_seconds:
            print(f"time is up: {setting} and later settings not run", flush=True)
            break
        lr, epochs, per_class, layer = setting.split(":")
        lr, epochs, layer = float(lr), int(epochs), int(layer)
        per_class = None if per_class == "all" else int(per_class)
        t = time.perf_counter()
        runs = {kind: [run_target(state if kind == "trained" else None, tgt_data, tgt_splits, device, s, lr, epochs,
                                  per_class, layer) for s in range(args.seeds)] for kind in ("trained", "control")}
        lam = {k: np.array([r["lambda_s"] for r in v]) for k, v in runs.items()}
        acc = {k: [r["test_accuracy"] for r in v] for k, v in runs.items()}
        layers = []
        for j in range(lam["trained"].shape[1]):
            v = judge_layer(str(j if layer < 0 else layer), lam["trained"][:, j], lam["control"][:, j],
                            [LAMBDA_START])
            layers.append({"layer": v.layer, "trained": float(lam["trained"][:, j].mean()),
                           "control": float(lam["control"][:, j].mean()),
                           "sd_trained": float(lam["trained"][:, j].std(ddof=1)),
                           "sd_control": float(lam["control"][:, j].std(ddof=1)), "delta": v.delta, "low": v.low,
                           "high": v.high, "quality": v.quality, "direction": v.direction})
        rec = {"setting": setting, "quanta_lr": lr, "epochs": epochs, "per_class": per_class, "layer": layer,
               "seeds": args.seeds, "steps": runs["trained"][0]["steps"], "seconds": time.perf_counter() - t,
               "accuracy": {k: [float(np.mean(a)), float(np.std(a, ddof=1))] for k, a in acc.items()},
               "layers": layers}
        results.append(rec)
        print(f"\n{setting}: {rec['steps']} steps/run, {rec['seconds']:.0f} s; target accuracy trained "
              f"{rec['accuracy']['trained'][0]:.3f}±{rec['accuracy']['trained'][1]:.3f}, control "
              f"{rec['accuracy']['control'][0]:.3f}±{rec['accuracy']['control'][1]:.3f}", flush=True)
        for r in layers:
            print(f"  layer {r['layer']}: trained {r['trained']:.4f} (sd {r['sd_trained']:.4f}) control "
                  f"{r['control']:.4f} (sd {r['sd_control']:.4f}) delta {r['delta']:+.4f} "
                  f"[{r['low']:+.4f}, {r['high']:+.4f}] {r['quality']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": hardware_info().describe(), "results": results}, indent=1,
                                             default=lambda o: None if isinstance(o, float) and math.isnan(o) else o))


if __name__ == "__main__":
    main()
