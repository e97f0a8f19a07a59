"""What source training and QUANTA share (fine-tuning too: RNG state, eval mode, the divergence check):
seeding, the reference augmentation, per-epoch loaders, the seed's metric set, evaluation, and the
GPU settings of a training loop.

Metrics follow the QUANTA reference (Keras, one-hot targets): loss, accuracy, precision, recall,
TP/TN/FP/FN and top-3 accuracy. Precision, recall and the four counts treat every (image, class)
pair as one binary decision, positive when the softmax probability is above 0.5 (Keras'
``Precision()``/``TruePositives()`` defaults); accuracy is the argmax. Training metrics are
accumulated over an epoch's batches as the model trains (what Keras prints), evaluation metrics
in eval mode over the whole set.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from tlcore.data import ImageDataset
from tlcore.data.loading import Batch, ImageBatches, Preprocessing, make_loader, normalize_batch
from tlcore.errors import TrainingDiverged

METRIC_NAMES = ("loss", "accuracy", "precision", "recall", "tp", "tn", "fp", "fn", "top3_accuracy")


# ---------------------------------------------------------------------------------------------
# Seeds and RNG state


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (every device) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(python_and_numpy: bool = True) -> dict:
    """Every global RNG's state, as tensors and plain types (loads with ``weights_only=True``).

    ``python_and_numpy=False`` leaves out Python's and NumPy's generators: fine-tuning draws nothing
    from them, and its checkpoints never carried them. CUDA's states are saved once CUDA is in use.
    """
    state: dict = {}
    if python_and_numpy:
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["python"] = [version, list(internal), gauss]
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached": float(cached)}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved; CUDA's states only on a machine with as many GPUs as
    saved them (elsewhere they do not map one to one)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def loader_seed(run_seed: int, epoch: int) -> int:
    """The shuffle (and worker) seed of one epoch: a resumed run replays the same order."""
    return (run_seed * 1_000_003 + epoch) % 2**63


# ---------------------------------------------------------------------------------------------
# Data


def reference_augmentation() -> v2.Transform:
    """The QUANTA reference's augmentation (2020): rotation 45 deg, shifts 0.1, zoom 0.1, both flips."""
    return v2.Compose([
        v2.RandomAffine(degrees=45, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
    ])


def epoch_loader(ds: ImageDataset, indices: np.ndarray, prep: Preprocessing, batch_size: int,
                 device: torch.device, num_workers: int | None, seed: int, augment: bool = False,
                 shuffle: bool = True):
    """One epoch's batches: shuffled with ``seed``, augmented once per image when asked.

    A last batch of a single image is dropped when training (BatchNorm cannot normalise it).
    """
    images = ImageBatches(ds, indices, prep, augment=reference_augmentation() if augment else None)
    drop_last = shuffle and len(indices) % batch_size == 1 and len(indices) > 1
    return make_loader(images, batch_size, shuffle=shuffle, device=device, num_workers=num_workers, seed=seed,
                       drop_last=drop_last)


def eval_loader(ds: ImageDataset, indices: np.ndarray, prep: Preprocessing, batch_size: int,
                device: torch.device, num_workers: int | None):
    return make_loader(ImageBatches(ds, indices, prep), batch_size, shuffle=False, device=device,
                       num_workers=num_workers)


def batches_on_device(loader, prep: Preprocessing, device: torch.device,
                      channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        b: Batch = batch
        if len(b.labels) == 0:
            continue
        yield (normalize_batch(b.images, prep, device, channels_last=channels_last),
               b.labels.to(device, non_blocking=True))


# ---------------------------------------------------------------------------------------------
# Device settings


def configure_device(device: torch.device) -> None:
    """cuDNN autotuning and TF32 matmuls on CUDA; nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def use_channels_last(device: torch.device) -> bool:
    return device.type == "cuda"


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on cross-entropy (forward under :func:`autocast`, loss in fp32); returns
    (logits, loss) for the caller's metrics. Source training, QUANTA and its benchmark share it."""
    with autocast(device):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


# ---------------------------------------------------------------------------------------------
# Metrics


class ClassificationMeter:
    """Sums of the seed's metric set, kept on the device (no sync per batch) until ``compute()``."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        # loss_sum, images, correct, top3, tp, fp, fn, tn
        self.sums = torch.zeros(8, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        logits = logits.detach().float()
        if loss_sum is None:
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(labels, self.num_classes).bool()
        positive = probs > 0.5
        k = min(3, self.num_classes)
        top3 = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()
        self.sums += torch.stack([
            loss_sum.detach().double(),
            torch.tensor(len(labels), device=logits.device, dtype=torch.float64),
            (logits.argmax(dim=1) == labels).sum().double(),
            top3.double(),
            (positive & onehot).sum().double(),
            (positive & ~onehot).sum().double(),
            (~positive & onehot).sum().double(),
            (~positive & ~onehot).sum().double(),
        ])

    @property
    def images(self) -> int:
        return int(self.sums[1].item())

    def compute(self) -> dict[str, float]:
        loss_sum, n, correct, top3, tp, fp, fn, tn = self.sums.tolist()
        n = max(n, 1.0)
        return {
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "tp": tp, "tn": tn, "fp": fp, "fn": fn,
            "top3_accuracy": top3 / n,
        }


def check_finite_loss(loss: float, epoch: int, what: str, learning_rate: float,
                      flag: str = "the learning rate") -> None:
    """Stop a run whose training loss became nan or infinite (the run ends FAILED, verdict ``diverged``).

    ``flag`` names what to lower (fine-tuning names its CLI flag, ``--learning-rate``).
    """
    import math

    if not math.isfinite(loss):
        raise TrainingDiverged(f"Training diverged at epoch {epoch} of {what} (the loss is {loss}); lower {flag} "
                               f"(now {learning_rate:g}).")


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, inference: bool = False) -> Iterator[None]:
    """Eval mode without gradients for the block (``inference``: under inference mode); the model's
    mode is restored after, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode() if inference else torch.no_grad():
            yield
    finally:
        model.train(was_training)


def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, loader, prep: Preprocessing,
             device: torch.device, num_classes: int, amp: bool = True, on_batch: Callable[[int], None] | None = None,
             ) -> dict[str, float]:
    """The metric set of ``forward`` over a loader, in eval mode and without gradients; restores the mode."""
    meter = ClassificationMeter(num_classes, device)
    with evaluation_mode(model):
        for x, y in batches_on_device(loader, prep, device, use_channels_last(device)):
            with autocast(device, amp):
                logits = forward(x)
            meter.update(logits, y)
            if on_batch is not None:
                on_batch(len(y))
    return meter.compute()
