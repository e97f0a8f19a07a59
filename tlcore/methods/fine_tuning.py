"""Fine-tuning: a new head on a pretrained backbone, freezing configurations 0-3 or LP-FT, the seed's
optimiser, early stop and best-weights restore, and a checkpoint each epoch so a killed run resumes.

The protocol is tl-tradeoff's ``fine_tuning.py``: SGD with momentum and decoupled weight decay
(tf-addons' SGDW) or Adam, each gradient tensor clipped to norm 1 (Keras ``clipnorm``), up to 40
epochs, stop from the 11th epoch once the val loss has not decreased for 3 epochs, restore the
weights of the best val accuracy, then one test pass (10 crops vote when crops are used). LP-FT
(Kumar et al., ICLR 2022) trains the head on frozen features first, then everything.

Speed: images are decoded once per experiment and kept as uint8 (on the GPU when they fit),
normalised on the device; on CUDA also AMP (bf16, else fp16 with a GradScaler), channels_last
and cudnn.benchmark, none of which is used on CPU. Frozen layers hold parameters without
``requires_grad``, so autograd records nothing before the first trainable layer.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlcore.data import ImageDataset
from tlcore.data.loading import N_CROPS, ImageBatches, Preprocessing, default_num_workers, make_loader, normalize_batch
from tlcore.devices import resolve_device, synchronize
from tlcore.errors import BackboneError, SpecError, TLError, TrainingDiverged
from tlcore.measure import CostMeter, CostReport, flops_per_image
from tlcore.measure.energy import EnergySettings
from tlcore.methods import common
from tlcore.methods.base import RunResult
from tlcore.models import Backbone, create_backbone
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FineTuningParams
from tlcore.tracking import (
    EXPERIMENTS,
    STALE_AFTER_S,
    TAG_HEARTBEAT,
    TAG_HOST,
    TAG_PID,
    TAG_START,
    RunHandle,
    Tracker,
    owner_alive,
)

SPEC_FILE = "spec.json"
CHECKPOINT_FILE = "last.pt"
BEST_FILE = "best.pt"
COST_FILE = "cost.json"
HEAD_ONLY = "head"  # the training stage of LP-FT's linear probe: everything but the head frozen


# ---------------------------------------------------------------------------------------------
# Optimisation: the seed's SGDW, per-tensor clipping, early stop


class SGDW(torch.optim.SGD):
    """SGD with momentum and decoupled weight decay, as tf-addons' ``SGDW`` that the seed used.

    Each step first shrinks the parameters, ``w <- w - weight_decay * w`` (tf-addons' rule: the decay
    is not scaled by the learning rate), then takes the momentum step on the loss gradient alone.
    ``torch.optim.SGD(weight_decay=...)`` instead adds ``weight_decay * w`` to the gradient (L2), which
    then flows through the momentum buffer: a different optimiser.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0, nesterov=nesterov)
        self.defaults["decoupled_weight_decay"] = weight_decay
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", weight_decay)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            decay = group["decoupled_weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if decay and params:
                torch._foreach_mul_(params, 1.0 - decay)
        super().step()
        return loss


def build_optimizer(params: FineTuningParams, trainable: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """``sgd``: SGDW (the seed); ``adam``: Adam without weight decay (the seed); ``adamw``: PyTorch's AdamW."""
    if params.optimizer == "sgd":
        return SGDW(trainable, lr=params.learning_rate, momentum=params.momentum, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=params.learning_rate)
    return torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)


def clip_gradients_(trainable: Sequence[nn.Parameter], max_norm: float, mode: str = "per_tensor") -> None:
    """Clip gradients to ``max_norm``: each tensor on its own (Keras ``clipnorm``, the seed) or one global norm."""
    grads = [p.grad for p in trainable if p.grad is not None]
    if not grads:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(trainable, max_norm)
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)


def should_stop_early(val_losses: Sequence[float], patience: int = 3, start_epoch: int = 11) -> bool:
    """The seed's early stop: from epoch ``start_epoch`` on (1-based), stop once each of the last
    ``patience`` epochs had a val loss no lower than the epoch before it.

    >>> should_stop_early([5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1])
    True
    """
    epoch = len(val_losses)
    if epoch < start_epoch or epoch <= patience:
        return False
    last = list(val_losses[-(patience + 1):])
    return all(later >= earlier for earlier, later in itertools.pairwise(last))


# ---------------------------------------------------------------------------------------------
# The model: pretrained body, new head, what is frozen


def bn_statistics(params: FineTuningParams) -> str:
    """The BatchNorm mode: ``--bn-trainable`` (the seed's flag) means batch statistics everywhere."""
    return "batch" if params.bn_trainable else params.bn_statistics


def set_trainable(model: Backbone, stage: int | str, bn_mode: str = "running") -> list[str]:
    """Freeze for a training stage: a configuration 0-3, or ``"head"`` (only the head trains: LP-FT's probe).

    ``bn_mode`` says which BatchNorm layers normalise with their running statistics while training:
    ``"running"`` all of them, ``"frozen_layers"`` those in frozen layers, ``"batch"`` none (the seed).
    With few images a run takes few steps, and BatchNorm on batch statistics then trains on features
    its running statistics (used at evaluation) have not caught up with: on digits, 10 images per
    class, 3 epochs, "running" scored 36-50 % against 14-20 % for "frozen_layers". Returns the
    frozen parameter names.
    """
    if stage != HEAD_ONLY:
        frozen = model.apply_freezing(int(stage), bn_trainable=bn_mode == "batch")
    else:
        head = model.head_parameter_names()
        for name, p in model.named_parameters():
            p.requires_grad_(name in head)
        model.frozen_params = frozen = [n for n, _ in model.named_parameters() if n not in head]
        frozen_set = set(frozen)
        model.frozen_bn = [] if bn_mode == "batch" else [
            m for name, m in model.net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and f"net.{name}.weight" in frozen_set]
    if bn_mode == "running":
        model.frozen_bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.train(model.training)
    return frozen


def stage_for_epoch(params: FineTuningParams, epoch: int) -> int | str:
    """What trains in ``epoch`` (1-based): the configuration, or for LP-FT the head first, then everything."""
    if params.configuration == "lp-ft":
        return HEAD_ONLY if epoch <= params.lp_epochs else 0
    return int(params.configuration)


def build_model(base: Backbone, num_classes: int, stage: int | str, bn_mode: str, device: torch.device,
                channels_last: bool = False) -> Backbone:
    """A copy of the pretrained backbone with a new head (VGG16: the seed's Dense 256-256) and its freezing."""
    model = copy.deepcopy(base)
    model.reset_classifier(num_classes)
    set_trainable(model, stage, bn_mode)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def autocast_dtype(device: torch.device, amp: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, needs a GradScaler): bf16 on GPUs that have it, else fp16 + scaler; nothing off CUDA."""
    if device.type != "cuda" or not amp:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


# ---------------------------------------------------------------------------------------------
# Images: decoded once, batched from memory (or streamed by DataLoader workers when too large)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches; a last batch of one image joins the one before (BatchNorm cannot train on one)."""
    cuts = [*range(0, n, batch_size), n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1:
        del cuts[-2]
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


@dataclass
class ImageSet:
    """The images of one split, ready for batching: uint8 in memory, or streamed from disk each epoch."""

    name: str
    n_images: int
    images: torch.Tensor | None = None  # uint8 (N,3,S,S) or (N,10,3,S,S)
    labels: torch.Tensor | None = None
    stream: ImageBatches | None = None
    num_workers: int | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return self.n_images

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.images is None:
            loader = make_loader(self.stream, batch_size, shuffle=shuffle, device=device,
                                 num_workers=self.num_workers, seed=seed)
            for b in loader:
                if len(b.labels):
                    yield b.images, b.labels
            return
        assert self.labels is not None
        order = None
        if shuffle:
            order = torch.randperm(self.n_images, generator=torch.Generator().manual_seed(seed))
            order = order.to(self.images.device)
        for s in batch_slices(self.n_images, batch_size):
            if order is None:
                yield self.images[s], self.labels[s]
            else:
                rows = order[s]
                yield self.images[rows], self.labels[rows]


class ImageCache:
    """Decodes each split once per experiment: val and test are shared by every run of a sweep.

    Sets are kept while their total size stays under ``budget_mb``; on CUDA they live on the GPU
    when a quarter of its free memory holds them (no host-to-device copy per batch), else in
    pinned memory. Larger sets are streamed by DataLoader workers every epoch.
    """

    def __init__(self, ds: ImageDataset, prep: Preprocessing, spec: ExperimentSpec, device: torch.device,
                 budget_mb: int) -> None:
        self.ds, self.prep, self.spec, self.device = ds, prep, spec, device
        self.budget = budget_mb * 2**20
        self.crops = spec.use_crops or bool(spec.precomputed_crops)
        self.num_workers = spec.num_workers if spec.num_workers is not None else default_num_workers()
        self._sets: dict[str, ImageSet] = {}
        self._transient: str | None = None

    def bytes_for(self, n: int) -> int:
        return n * (N_CROPS if self.crops else 1) * 3 * self.prep.input_size ** 2

    def _source(self, indices: np.ndarray) -> ImageBatches:
        return ImageBatches(self.ds, indices, self.prep, crops=self.crops,
                            precomputed_crops=self.spec.precomputed_crops, skip_bad=self.spec.skip_bad_images)

    def used(self) -> int:
        return sum(s.images.numel() for s in self._sets.values() if s.images is not None)

    def get(self, name: str, indices: np.ndarray, reporter: Reporter, transient: bool = False) -> ImageSet:
        """The images at ``indices``; a ``transient`` set (a run's training split) replaces the previous one."""
        key = hashlib.blake2b(np.asarray(indices, dtype=np.int64).tobytes(), digest_size=12).hexdigest()
        if key in self._sets:
            return self._sets[key]
        if transient and self._transient is not None:
            self._sets.pop(self._transient, None)
        if self.bytes_for(len(indices)) + self.used() > self.budget:
            return ImageSet(name, len(indices), stream=self._source(indices), num_workers=self.num_workers)
        image_set = self._decode(name, indices, reporter)
        self._sets[key] = image_set
        if transient:
            self._transient = key
        return image_set

    def _decode(self, name: str, indices: np.ndarray, reporter: Reporter) -> ImageSet:
        s = self.prep.input_size
        shape = (len(indices), N_CROPS, 3, s, s) if self.crops else (len(indices), 3, s, s)
        images = torch.empty(shape, dtype=torch.uint8)
        labels = torch.empty(len(indices), dtype=torch.long)
        loader = make_loader(self._source(indices), batch_size=32, num_workers=self.num_workers)
        k = skipped = 0
        for b in loader:
            reporter.check_cancelled()
            reporter.update(stage=f"decoding {len(indices)} {name} images at {s} px")
            m = len(b.labels)
            images[k:k + m], labels[k:k + m] = b.images, b.labels
            k, skipped = k + m, skipped + len(b.skipped)
        if skipped:
            reporter.message(f"Skipped {skipped} unreadable {name} image(s) (--skip-bad-images).", "warning")
        images, labels = images[:k], labels[:k]
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            if images.numel() < free // 4:
                images, labels = images.to(self.device), labels.to(self.device)
            else:
                images, labels = images.pin_memory(), labels.pin_memory()
        return ImageSet(name, k, images=images, labels=labels, skipped=skipped)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Evaluation:
    loss: float  # mean cross-entropy per network input (each crop counts)
    y_true: np.ndarray
    y_pred: np.ndarray  # per image (crops: majority vote)
    n_inputs: int

    def metrics(self, prefix: str) -> dict[str, float]:
        return {**common.score_metrics(prefix, self.y_true, self.y_pred), f"{prefix}_loss": self.loss}


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             to_input: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
             autocast: Callable[[], Any] = contextlib.nullcontext,
             between_batches: Callable[[], None] | None = None) -> Evaluation:
    """Loss and predictions over ``batches`` in eval mode under inference mode; the mode is restored after.

    ``between_batches`` runs before each batch (a cancel check).
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    labels, predictions, crop_probs = [], [], []
    n_inputs = 0
    try:
        with torch.inference_mode():
            for x, y in batches:
                if between_batches is not None:
                    between_batches()
                x, y = to_input(x), y.to(device, non_blocking=True)
                crops = x.shape[0] // len(y)
                with autocast():
                    logits = model(x)
                logits = logits.float()
                loss_sum += F.cross_entropy(logits, y.repeat_interleave(crops), reduction="sum")
                n_inputs += x.shape[0]
                labels.append(y)
                if crops > 1:
                    crop_probs.append(logits.softmax(-1).view(len(y), crops, -1))
                else:
                    predictions.append(logits.argmax(-1))
    finally:
        model.train(was_training)
    y_true = torch.cat(labels).cpu().numpy()
    if crop_probs:
        probs = torch.cat(crop_probs).cpu().numpy()
        y_pred = common.vote(probs.argmax(-1), probs)
    else:
        y_pred = torch.cat(predictions).cpu().numpy()
    return Evaluation(loss_sum.item() / max(n_inputs, 1), y_true, y_pred, n_inputs)


# ---------------------------------------------------------------------------------------------
# Checkpoints and the cost of interrupted runs


def checkpoint_dir(run: RunHandle) -> Path:
    """Beside the run's artifacts (local stores), else ``$TLCORE_CHECKPOINT_DIR/<run id>``."""
    local = run.artifact_dir()
    if local is not None:
        folder = local / "checkpoint"
    else:
        root = os.environ.get("TLCORE_CHECKPOINT_DIR", str(Path.home() / ".cache" / "tlcore" / "checkpoints"))
        folder = Path(root).expanduser() / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class CostSoFar:
    """What earlier sessions of a resumed run cost. ``open``: the last session died before it
    could add its energy (a crash, not a cancel), so the energy figure is a lower bound."""

    time_s: float = 0.0
    images: int = 0
    flops: float = 0.0
    energy_kwh: float | None = 0.0
    co2_kg: float | None = 0.0
    sessions: int = 0
    energy_complete: bool = True
    open: bool = False

    def plus(self, report: CostReport, closed: bool) -> CostSoFar:
        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        energy = add(self.energy_kwh, report.energy_kwh) if closed else self.energy_kwh
        co2 = add(self.co2_kg, report.co2_kg) if closed else self.co2_kg
        return CostSoFar(self.time_s + report.time_total_s, self.images + report.images_processed,
                         self.flops + report.flops_total, energy, co2, self.sessions + 1,
                         self.energy_complete and closed, not closed)

    def save(self, folder: Path) -> None:
        tmp = folder / (COST_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, folder / COST_FILE)

    @classmethod
    def load(cls, folder: Path) -> CostSoFar:
        path = folder / COST_FILE
        if not path.exists():
            return cls()
        cost = cls(**json.loads(path.read_text()))
        if cost.open:  # the session that wrote it never closed: its energy is unknown
            cost = replace(cost, open=False, energy_complete=False)
        return cost

    def metrics(self) -> dict[str, float]:
        out = {"time_total_s": self.time_s, "device_hours": self.time_s / 3600.0,
               "images_processed": float(self.images), "flops_total": self.flops}
        if self.energy_kwh is not None:
            out["energy_kwh"] = self.energy_kwh
        if self.co2_kg is not None:
            out["co2_kg"] = self.co2_kg
        return out


def _snapshot(report_time: float, meter: CostMeter) -> CostReport:
    """The running meter's figures so far, as a report without energy (read only when it stops)."""
    return CostReport(report_time, str(meter.device), 0.0, meter.images, meter.flops, None, None, "", None)


# ---------------------------------------------------------------------------------------------
# One training: the loop


class DeviceOutOfMemory(TLError):
    """The accelerator ran out of memory; the message suggests a smaller batch."""


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


@dataclass
class Context:
    """What every training of an experiment shares, prepared once."""

    spec: ExperimentSpec
    ds: ImageDataset
    base: Backbone  # pretrained, original head, on CPU
    device: torch.device
    prep: Preprocessing
    cache: ImageCache
    energy: EnergySettings
    bn_mode: str = "running"
    messages: set[str] = field(default_factory=set)


def point_seed(seed: int, point: common.SplitPoint) -> int:
    return int(np.random.SeedSequence([seed, point.spc, point.split]).generate_state(1)[0])


def _indices_hash(indices: np.ndarray) -> str:
    return hashlib.blake2b(np.asarray(indices, dtype=np.int64).tobytes(), digest_size=12).hexdigest()


def train_point(ctx: Context, point: common.SplitPoint, run: RunHandle, reporter: Reporter, batch_size: int,
                resume: bool = False) -> dict[str, float]:
    """Fine-tune once on ``point.train``: epochs, early stop, best-val restore, score. Returns final metrics.

    With ``resume`` the run's checkpoint (if any) restores model, optimiser, scaler, epoch, best
    weights, early-stop history and RNG, and the epochs continue in the same MLflow run.
    """
    spec, p, device = ctx.spec, ctx.spec.params, ctx.device
    n_crops = N_CROPS if ctx.cache.crops else 1
    images_per_step = max(1, batch_size // n_crops)  # with crops a step sees ~batch_size crops, as the seed
    images_per_eval = max(1, max(batch_size, spec.batch_size) // n_crops)  # a shrunk training batch is no limit here
    folder = checkpoint_dir(run)
    seed = point_seed(spec.seed, point)
    bn_mode = ctx.bn_mode

    # -- precision, memory format: the GPU-only speed-ups stay off elsewhere
    amp_dtype, use_scaler = autocast_dtype(device, p.amp)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    channels_last = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def to_input(x: torch.Tensor) -> torch.Tensor:
        return normalize_batch(x.flatten(0, 1) if x.dim() == 5 else x, ctx.prep, device, channels_last)

    # -- model and optimiser for the first epoch (the head's initialisation is seeded per point)
    torch.manual_seed(seed)
    stage = stage_for_epoch(p, 1)
    model = build_model(ctx.base, ctx.ds.num_classes, stage, bn_mode, device, channels_last)
    optimizer = build_optimizer(p, model.trainable_parameters())

    # -- state a checkpoint carries; a resumed run takes it from there
    epoch, stopped, val_losses, history = 0, False, [], []
    best: dict[str, float] = {"val_accuracy": -1.0, "val_plain_accuracy": 0.0, "epoch": 0}
    best_state: dict[str, torch.Tensor] | None = None
    prior = CostSoFar()
    if resume:
        prior = CostSoFar.load(folder)
        if (folder / CHECKPOINT_FILE).exists():
            ck = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
            if ck["train_indices"] != _indices_hash(point.train):
                raise TLError(f"The training split {point.label} is not the one run {run.run_id} started with (the "
                              "split CSVs or the dataset changed); it cannot be resumed.")
            stage = ck["stage"]
            set_trainable(model, stage, bn_mode)
            optimizer = build_optimizer(p, model.trainable_parameters())
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scaler.load_state_dict(ck["scaler"])
            epoch, stopped, val_losses, history, best = (ck["epoch"], ck["stopped"], ck["val_losses"], ck["history"],
                                                         ck["best"])
            _set_rng_state(ck["rng"])
            if (folder / BEST_FILE).exists():
                best_state = torch.load(folder / BEST_FILE, map_location="cpu", weights_only=True)
            for h in history:
                reporter.log_metrics({k: v for k, v in h.items() if k != "epoch"}, step=int(h["epoch"]),
                                     series=point.label)
            reporter.message(f"Resuming {point.label} after epoch {epoch} of at most {p.epochs}.")
        elif run.client.get_metric_history(run.run_id, "val_loss"):
            raise TLError(f"Run {run.run_id} logged epochs but its checkpoint is missing from {folder}; it cannot be "
                          "resumed. Start a new run instead.")
        else:
            reporter.message(f"Run {run.run_id} had not completed an epoch; training {point.label} from the start.")

    meter = CostMeter(device, ctx.energy)
    try:
        with meter:
            with meter.lap("decode"):
                train_set = ctx.cache.get("train", point.train, reporter, transient=True)
                val_set = ctx.cache.get("val", point.val, reporter)
            n_batches = len(batch_slices(len(train_set), images_per_step))

            while epoch < p.epochs and not stopped:
                epoch += 1
                # -- LP-FT: after the linear probe, unfreeze everything with a fresh optimiser
                if stage_for_epoch(p, epoch) != stage:
                    stage = stage_for_epoch(p, epoch)
                    set_trainable(model, stage, bn_mode)
                    optimizer = build_optimizer(p, model.trainable_parameters())
                    reporter.message(f"{point.label}: linear probe done after epoch {epoch - 1}; "
                                     "fine-tuning everything.")
                trainable = model.trainable_parameters()
                flops = flops_per_image(model, ctx.prep.input_size, train=True)

                # -- one epoch of training
                t0 = time.perf_counter()
                model.train()
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device, dtype=torch.long)
                seen = 0
                shuffle_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
                for i, (x, y) in enumerate(train_set.batches(images_per_step, shuffle=True, seed=shuffle_seed,
                                                             device=device)):
                    reporter.check_cancelled()
                    x, y = to_input(x), y.to(device, non_blocking=True)
                    if x.shape[0] != len(y):  # crops: each crop is a training sample
                        y = y.repeat_interleave(x.shape[0] // len(y))
                    # forward, backward, clip, step
                    with autocast():
                        logits = model(x)
                    loss = F.cross_entropy(logits.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    clip_gradients_(trainable, p.grad_clip_norm, p.grad_clip_mode)
                    scaler.step(optimizer)
                    scaler.update()
                    # bookkeeping without a device sync per step
                    loss_sum += loss.detach() * len(y)
                    correct += (logits.detach().argmax(-1) == y).sum()
                    seen += len(y)
                    meter.add_images(len(y))
                    meter.add_flops(flops.train_step * len(y))
                    reporter.update(stage=f"{point.label}: epoch {epoch}/{p.epochs}, training",
                                    fraction=(epoch - 1 + (i + 1) / max(n_batches, 1)) / p.epochs)
                    run.heartbeat()
                train_loss, train_accuracy = loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)
                if not math.isfinite(train_loss):
                    raise TrainingDiverged(f"Training diverged at epoch {epoch} of {point.label} (the loss is "
                                           f"{train_loss}); lower --learning-rate (now {p.learning_rate}).")

                # -- evaluate on val
                reporter.update(stage=f"{point.label}: epoch {epoch}/{p.epochs}, validating")
                ev = evaluate(model, val_set.batches(images_per_eval, device=device), to_input, device, autocast,
                              reporter.check_cancelled)
                meter.add_images(ev.n_inputs)
                meter.add_flops(flops.forward * ev.n_inputs)
                synchronize(device)
                val = ev.metrics("val")
                metrics = {"train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": val["val_loss"],
                           "val_accuracy": val["val_accuracy"], "epoch_time_s": time.perf_counter() - t0}
                run.log_metrics(metrics, step=epoch)
                reporter.log_metrics(metrics, step=epoch, series=point.label)
                reporter.message(f"{point.label} epoch {epoch}/{p.epochs}: train loss {train_loss:.4f} acc "
                                 f"{train_accuracy:.1%} | val loss {val['val_loss']:.4f} acc {val['val_accuracy']:.1%} "
                                 f"| {metrics['epoch_time_s']:.1f} s")
                history.append({"epoch": epoch, **metrics})

                # -- keep the weights of the best val accuracy (strictly better, as the seed)
                if val["val_accuracy"] > best["val_accuracy"]:
                    best = {"val_accuracy": val["val_accuracy"], "val_plain_accuracy": val["val_plain_accuracy"],
                            "epoch": epoch}
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    _atomic_save(best_state, folder / BEST_FILE)

                # -- early stop (never inside LP-FT's probe), then checkpoint
                val_losses.append(val["val_loss"])
                stopped = stage != HEAD_ONLY and should_stop_early(val_losses, p.patience, p.early_stop_from_epoch)
                _atomic_save({"epoch": epoch, "stage": stage, "stopped": stopped, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "best": best,
                              "val_losses": val_losses, "history": history, "rng": _rng_state(),
                              "train_indices": _indices_hash(point.train), "batch_size": batch_size},
                             folder / CHECKPOINT_FILE)
                prior.plus(_snapshot(meter.elapsed_s, meter), closed=False).save(folder)
                if stopped:
                    reporter.message(f"{point.label}: early stop after epoch {epoch} (val loss has not decreased for "
                                     f"{p.patience} epochs).")

            # -- restore the best weights, then score on the evaluation set
            assert best_state is not None
            model.load_state_dict(best_state)
            final: dict[str, float] = {"best_epoch": float(best["epoch"]), "epochs_run": float(epoch),
                                       "n_eval_images": float(len(point.eval)),
                                       "stopped_early": float(stopped), "best_val_accuracy": best["val_accuracy"],
                                       "best_val_plain_accuracy": best["val_plain_accuracy"]}
            if point.eval_set == "test":
                with meter.lap("decode"):
                    test_set = ctx.cache.get("test", point.test, reporter)
                reporter.update(stage=f"{point.label}: testing the best weights (epoch {best['epoch']})", fraction=0.99)
                with meter.lap("test"):
                    ev = evaluate(model, test_set.batches(images_per_eval, device=device), to_input, device,
                                  autocast, reporter.check_cancelled)
                meter.add_images(ev.n_inputs)
                meter.add_flops(flops_per_image(model, ctx.prep.input_size, train=False).forward * ev.n_inputs)
                final.update(ev.metrics("test"))
    except BaseException as exc:
        if meter.report is not None:  # what this session cost stays with the run, and with its resume
            spent = prior.plus(meter.report, closed=True)
            with contextlib.suppress(Exception):
                spent.save(folder)
                run.log_metrics(spent.metrics())
        if _is_out_of_memory(exc):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise DeviceOutOfMemory(
                f"The {device.type.upper()} device ran out of memory training {spec.backbone} at batch size "
                f"{batch_size} and {ctx.prep.input_size} px; try a smaller --batch-size such as "
                f"{max(1, batch_size // 2)} (the epochs completed so far are kept in run {run.run_id})."
            ) from None
        raise

    # -- final metrics, the cost of every session, the weights if asked
    total = prior.plus(meter.report, closed=True)
    final.update(total.metrics())
    final.update({k: v for k, v in meter.report.metrics().items() if k.startswith("time_") and k != "time_total_s"})
    if meter.report.carbon_intensity_g_per_kwh is not None:
        final["carbon_intensity_g_per_kwh"] = meter.report.carbon_intensity_g_per_kwh
    run.log_metrics(final)
    _log_params_once(run, {"energy_method": meter.report.energy_method, "precision": str(amp_dtype or torch.float32)
                           .removeprefix("torch."), "channels_last": channels_last,
                           "trainable_params": model.count_parameters(trainable_only=True),
                           "total_params": model.count_parameters()})
    if total.sessions > 1:
        run.set_tags({"sessions": total.sessions, "energy_complete": str(total.energy_complete).lower()})
    if p.keep_weights:
        run.log_artifact(folder / BEST_FILE, "model")
    shutil.rmtree(folder, ignore_errors=True)
    return final


def _log_params_once(run: RunHandle, params: dict[str, Any]) -> None:
    """Params are immutable in MLflow: a resumed run logs new ones, and differing ones as ``resumed.<key>`` tags."""
    have = run.client.get_run(run.run_id).data.params
    new = {k: v for k, v in params.items() if k not in have}
    if new:
        run.log_params(new)
    changed = {f"resumed.{k}": v for k, v in params.items() if k in have and have[k] != str(v).lower()
               and have[k] != str(v)}
    if changed:
        run.set_tags(changed)


# ---------------------------------------------------------------------------------------------
# The experiment: one run or a few-shot sweep, and resuming either


def ft_params(p: FineTuningParams, bn_mode: str) -> dict[str, Any]:
    """The schema's method params, as the seed named them (plus ours)."""
    out = {"configuration": p.configuration, "optimizer": p.optimizer, "learning_rate": p.learning_rate,
           "weight_decay": 0.0 if p.optimizer == "adam" else p.weight_decay,
           "momentum": p.momentum if p.optimizer == "sgd" else "none", "epochs": p.epochs, "patience": p.patience,
           "early_stop_from_epoch": p.early_stop_from_epoch, "grad_clip_norm": p.grad_clip_norm,
           "grad_clip_mode": p.grad_clip_mode, "bn_statistics": bn_mode, "amp": p.amp}
    if p.configuration == "lp-ft":
        out["lp_epochs"] = p.lp_epochs
    return out


def run_params(ctx: Context, splits) -> dict[str, Any]:
    """Every param design.md's schema asks for, logged on the sweep's parent and each run."""
    config, units = ctx.spec.params.configuration, len(ctx.base.freeze_unit_names())
    frozen = f"{units}/{units} (head only), then 0/{units}" if config == "lp-ft" else \
        f"{ctx.base.frozen_unit_count(int(config))}/{units}"
    return {**common.common_params(ctx.spec, ctx.ds, splits), **ft_params(ctx.spec.params, ctx.bn_mode),
            "device": str(ctx.device), "frozen_units": frozen}


def prepare(spec: ExperimentSpec, ds: ImageDataset, reporter: Reporter) -> Context:
    """Checks that need the backbone, the device and the pretrained weights, before any run opens."""
    p: FineTuningParams = spec.params
    if p.configuration == "lp-ft" and p.lp_epochs >= p.epochs:
        raise SpecError(f"The 'lp_epochs' parameter of FineTuningParams must be smaller than 'epochs' ({p.epochs}) "
                        f"for configuration 'lp-ft', or nothing is fine-tuned after the linear probe. "
                        f"Got {p.lp_epochs} instead.")
    if p.optimizer == "adam" and p.weight_decay:
        reporter.message("adam uses no weight decay (as the seed); --weight-decay is ignored. Use --optimizer adamw "
                         "for decoupled weight decay with Adam.", "warning")
    device = resolve_device(spec.device)
    base = create_backbone(spec.backbone, spec.weights, download=spec.download_weights)
    valid = [*base.configurations(), "lp-ft"]
    if p.configuration not in valid:
        raise BackboneError(f"Configuration {p.configuration!r} is not defined for {spec.backbone}; valid "
                            f"configurations are {', '.join(map(str, valid))} (0 = train everything, 3 = freeze "
                            "about three quarters).")
    bn_mode = bn_statistics(p)
    if bn_mode == "running" and base.weights_name == "random":
        bn_mode = "batch"
        reporter.message("Randomly initialised BatchNorm layers have no running statistics to use: they train on "
                         "batch statistics (--bn-statistics batch).", "warning")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    prep = replace(base.preprocessing, input_size=spec.input_size)
    energy = EnergySettings(spec.country_iso_code, spec.carbon_intensity_g_per_kwh, spec.measure_energy)
    cache = ImageCache(ds, prep, spec, device, p.cache_images_mb)
    return Context(spec, ds, base, device, prep, cache, energy, bn_mode)


def batch_size_for(ctx: Context, point: common.SplitPoint, reporter: Reporter) -> int:
    """The spec's batch size, shrunk (with a warning) to the training set when that is smaller."""
    crops = N_CROPS if ctx.cache.crops else 1
    bs = ctx.spec.batch_size
    if bs > len(point.train) * crops:
        shrunk = len(point.train) * crops
        msg = (f"--batch-size {bs} is larger than the {len(point.train)} training images of {point.label}; "
               f"using {shrunk} (the whole training set per step).")
        if msg not in ctx.messages:
            ctx.messages.add(msg)
            reporter.message(msg, "warning")
        return shrunk
    return bs


@dataclass
class Outcome:
    point: common.SplitPoint
    run_id: str
    metrics: dict[str, float]


def fine_tune(spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    """Fine-tune ``spec.backbone`` on every planned split (or continue ``spec.params.resume``)."""
    if spec.params.resume:
        return resume(spec, reporter, tracker)
    started = time.perf_counter()
    ds, splits = common.load_data(spec, reporter)
    points = common.plan_points(spec, ds, splits)
    ctx = prepare(spec, ds, reporter)
    params = run_params(ctx, splits)
    stored = _stored_spec_dict(spec)
    outcomes: list[Outcome] = []
    with common.Sweep(spec, tracker, reporter, len(points), params) as sweep:
        if sweep.parent is not None:
            sweep.parent.log_dict(stored, SPEC_FILE)
        for point in points:
            bs = batch_size_for(ctx, point, reporter)
            with sweep.child(point, {"batch_size": bs, "batch_size_requested": spec.batch_size}) as (run, sub):
                run.log_dict(stored, SPEC_FILE)
                outcomes.append(Outcome(point, run.run_id, train_point(ctx, point, run, sub, bs)))
        if sweep.parent is not None:
            sweep.parent.log_metrics(sweep_cost(outcomes, time.perf_counter() - started))
    return _result(spec, outcomes, sweep.parent.run_id if sweep.parent else None, tracker)


def sweep_cost(outcomes: list[Outcome], wall_s: float) -> dict[str, float]:
    """What the whole sweep cost, for its parent run: the job's wall time (data loading and model
    set-up included, so this machine's pace projects whole jobs) and the sums of its runs' costs."""
    out = {"time_total_s": float(wall_s), "device_hours": float(wall_s) / 3600.0,
           "children_time_total_s": float(sum(o.metrics.get("time_total_s", 0.0) for o in outcomes))}
    for key in ("flops_total", "images_processed", "energy_kwh", "co2_kg"):
        values = [o.metrics.get(key) for o in outcomes]
        if values and all(v is not None for v in values):
            out[key] = float(sum(values))
    return out


def _stored_spec_dict(spec: ExperimentSpec) -> dict[str, Any]:
    d = spec.to_dict()
    d["params"]["resume"] = None
    return d


def _check_resumable(tracker: Tracker, run_id: str):
    try:
        run = tracker.get_run(run_id)
    except Exception:
        raise TLError(f"No run with id {run_id!r} in {tracker.uri}; check the id and --mlflow-path.") from None
    experiment = tracker.client.get_experiment(run.info.experiment_id).name
    if experiment != EXPERIMENTS["ft"]:
        raise TLError(f"Run {run_id} belongs to the {experiment!r} experiment; --resume continues Fine-tuning runs.")
    status, tags = run.info.status, run.data.tags
    if status == "FINISHED":
        raise TLError(f"Run {run_id} already FINISHED; there is nothing to resume.")
    if status == "RUNNING":
        pid = int(tags.get(TAG_PID, "0") or 0)
        start = float(tags[TAG_START]) if tags.get(TAG_START) else None
        if tags.get(TAG_HOST) == socket.gethostname():
            alive = owner_alive(pid, start)
        else:
            alive = time.time() - float(tags.get(TAG_HEARTBEAT, "0") or 0) < STALE_AFTER_S
        if alive:
            raise TLError(f"Run {run_id} is still RUNNING (pid {pid} on {tags.get(TAG_HOST, '?')}); cancel it or wait "
                          "for it to end before resuming it.")
    return run


def _read_stored_spec(tracker: Tracker, run) -> ExperimentSpec:
    """The spec a run was started with (its ``spec.json`` artifact)."""
    local = RunHandle(tracker, run.info.run_id, run.info.experiment_id).artifact_dir()
    try:
        if local is not None:
            data = json.loads((local / SPEC_FILE).read_text())
        else:
            with tempfile.TemporaryDirectory() as tmp:
                data = json.loads(Path(tracker.client.download_artifacts(run.info.run_id, SPEC_FILE, tmp)).read_text())
    except Exception:
        raise TLError(f"Run {run.info.run_id} has no {SPEC_FILE} artifact (it was not started by `tlcore ft`), so it "
                      "cannot be resumed.") from None
    return ExperimentSpec.from_dict(data)


def resume(cli_spec: ExperimentSpec, reporter: Reporter, tracker: Tracker) -> RunResult:
    """Continue a KILLED or FAILED fine-tuning run (or every unfinished run of a sweep) in the same MLflow runs.

    The runs' own settings are used; only where and how it runs (device, workers, tracking store,
    energy settings) comes from ``cli_spec``.
    """
    run_id = cli_spec.params.resume
    run = _check_resumable(tracker, run_id)
    stored = _read_stored_spec(tracker, run)
    spec = replace(stored, device=cli_spec.device, num_workers=cli_spec.num_workers, mlflow_path=cli_spec.mlflow_path,
                   measure_energy=cli_spec.measure_energy, country_iso_code=cli_spec.country_iso_code,
                   carbon_intensity_g_per_kwh=cli_spec.carbon_intensity_g_per_kwh)
    spec.validate()
    ds, splits = common.load_data(spec, reporter)
    points = common.plan_points(spec, ds, splits)
    ctx = prepare(spec, ds, reporter)
    reporter.message(f"Resuming {run_id}: {spec.backbone} on {spec.dataset}, configuration {spec.params.configuration} "
                     "(the run's own settings).")

    def point_of(params: dict[str, str]) -> common.SplitPoint:
        for pt in points:
            if str(pt.spc) == params.get("samples_per_class") and str(pt.split) == params.get("split"):
                return pt
        raise TLError(f"Run {run_id}'s split (samples_per_class={params.get('samples_per_class')}, "
                      f"split={params.get('split')}) is no longer in the split set of {spec.dataset}; it cannot be "
                      "resumed.")

    def continue_child(child, point: common.SplitPoint, sub: Reporter) -> Outcome:
        handle = tracker.resume_run(child.info.run_id)
        reporter.run_started(handle.run_id, EXPERIMENTS["ft"], f"{point.label} (resumed)")
        bs = int(child.data.params.get("batch_size", spec.batch_size))
        with handle:
            return Outcome(point, handle.run_id, train_point(ctx, point, handle, sub, bs, resume=True))

    if run.data.tags.get("sweep_parent") != "true":
        outcome = continue_child(run, point_of(run.data.params), reporter)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id and tracker.get_run(parent_id).info.status != "FINISHED":
            reporter.message(f"This run belongs to sweep run {parent_id}; `--resume {parent_id}` runs the sweep's "
                             "other unfinished points.")
        return _result(spec, [outcome], None, tracker)

    # a sweep: finished children stay, unfinished ones continue, missing ones start under the same parent
    children = {(c.data.params.get("samples_per_class"), c.data.params.get("split")): c
                for c in tracker.client.search_runs([run.info.experiment_id],
                                                    f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10000)}
    params = run_params(ctx, splits)
    sweep = common.Sweep(spec, tracker, reporter, len(points), params, sweep_id=run.data.tags.get("sweep_id"))
    sweep.parent = tracker.resume_run(run_id)
    reporter.run_started(run_id, EXPERIMENTS["ft"], "sweep parent (resumed)")
    stored_dict = _stored_spec_dict(spec)
    outcomes = []
    with sweep.parent:
        for point in points:
            child = children.get((str(point.spc), str(point.split)))
            if child is not None and child.info.status == "FINISHED":
                outcomes.append(Outcome(point, child.info.run_id, dict(child.data.metrics)))
            elif child is not None:
                sub = reporter.scaled(sweep.done / sweep.n_points, (sweep.done + 1) / sweep.n_points)
                _check_resumable(tracker, child.info.run_id)
                outcomes.append(continue_child(child, point, sub))
            else:
                bs = batch_size_for(ctx, point, reporter)
                with sweep.child(point, {"batch_size": bs, "batch_size_requested": spec.batch_size}) as (new, sub):
                    new.log_dict(stored_dict, SPEC_FILE)
                    outcomes.append(Outcome(point, new.run_id, train_point(ctx, point, new, sub, bs)))
                continue
            sweep.child_ids.append(outcomes[-1].run_id)
            sweep.done += 1
    return _result(spec, outcomes, run_id, tracker)


# ---------------------------------------------------------------------------------------------
# The summary


def _result(spec: ExperimentSpec, outcomes: list[Outcome], parent_id: str | None, tracker: Tracker) -> RunResult:
    scored = "test" if outcomes and outcomes[0].point.eval_set == "test" else "best_val"
    key = f"{scored}_accuracy"
    headline: dict[str, float] = {}
    if len(outcomes) == 1:
        headline = dict(outcomes[0].metrics)
    elif outcomes:
        accs = [o.metrics.get(key, float("nan")) for o in outcomes]
        headline = {f"{key}_mean": float(np.nanmean(accs)),
                    "time_total_s": float(sum(o.metrics.get("time_total_s", 0.0) for o in outcomes)),
                    "flops_total": float(sum(o.metrics.get("flops_total", 0.0) for o in outcomes))}
    return RunResult("ft", [o.run_id for o in outcomes], parent_id, headline, summary_table(spec, outcomes, tracker))


def summary_table(spec: ExperimentSpec, outcomes: list[Outcome], tracker: Tracker | None = None) -> str:
    """One line per run (samples per class, split, epochs, best epoch, val/test accuracy, time, FLOPs),
    then the mean per samples-per-class value: the few-shot curve in text."""
    p = spec.params
    lines = [f"Fine-tuning {spec.backbone} on {spec.dataset}: configuration {p.configuration}, {p.optimizer} "
             f"lr {p.learning_rate:g}, {len(outcomes)} run(s)", ""]
    header = f"{'spc':>5} {'split':>5} {'epochs':>6} {'best':>4} {'val acc':>8} {'test acc':>9} {'time s':>8} " \
             f"{'GFLOPs':>9}  run"
    lines += [header, "-" * len(header)]
    by_spc: dict[int, list[float]] = {}
    for o in outcomes:
        m = o.metrics
        test = m.get("test_accuracy")
        lines.append(f"{o.point.spc:>5} {o.point.split:>5} {m.get('epochs_run', float('nan')):>6.0f} "
                     f"{m.get('best_epoch', float('nan')):>4.0f} {m.get('best_val_accuracy', float('nan')):>8.1%} "
                     f"{'' if test is None else f'{test:.1%}':>9} {m.get('time_total_s', float('nan')):>8.1f} "
                     f"{m.get('flops_total', float('nan')) / 1e9:>9.1f}  {o.run_id}")
        score = test if test is not None else m.get("best_val_accuracy")
        if score is not None:
            by_spc.setdefault(o.point.spc, []).append(score)
    if len(outcomes) > 1:
        lines.append("")
        scored = "test" if outcomes[0].point.eval_set == "test" else "val"
        lines.append(f"Mean {scored} accuracy (balanced) per samples per class:")
        for spc, accs in sorted(by_spc.items()):
            sd = f" ± {np.std(accs) * 100:.1f}" if len(accs) > 1 else ""
            lines.append(f"  {spc:>5}: {np.mean(accs):.1%}{sd} ({len(accs)} run{'s' if len(accs) > 1 else ''})")
    if tracker is not None:
        lines += ["", f"Results: {tracker.uri} (experiment {EXPERIMENTS['ft']!r})"]
    return "\n".join(lines)
