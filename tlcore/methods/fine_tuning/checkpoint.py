"""Checkpoints of a fine-tuning run, and what a resume needs: each epoch leaves the model, optimiser,
scaler, early-stop history, best weights and RNG state on disk, and what every session cost, so a
killed or failed run continues in the same MLflow run where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlcore.errors import TLError
from tlcore.measure import CostMeter, CostReport
from tlcore.methods.base import EXPERIMENTS
from tlcore.methods.common import SplitPoint
from tlcore.methods.fine_tuning.images import indices_hash
from tlcore.methods.supervised import rng_state
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import (
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


def checkpoint_dir(run: RunHandle) -> Path:
    """Beside the run's artifacts (local stores), else ``$TLCORE_CHECKPOINT_DIR/<run id>``."""
    local = run.artifact_dir()
    if local is not None:
        folder = local / CHECKPOINT_ARTIFACTS
    else:
        root = os.environ.get("TLCORE_CHECKPOINT_DIR", str(Path.home() / ".cache" / "tlcore" / "checkpoints"))
        folder = Path(root).expanduser() / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


#: Where a run's checkpoint files sit among its artifacts: written in place on a local store, uploaded to a server.
CHECKPOINT_ARTIFACTS = "checkpoint"
#: The order files are uploaded in: the best weights before the checkpoint that names them, as on disk.
_UPLOAD_ORDER = (BEST_FILE, CHECKPOINT_FILE, COST_FILE)


def upload_checkpoint(run: RunHandle, folder: Path, names: tuple[str, ...] = _UPLOAD_ORDER) -> None:
    """On a tracking server (no local artifact folder), copy checkpoint files into the run's ``checkpoint/``
    artifacts, so that a resume on another machine finds them; a local store already holds them in place."""
    if run.artifact_dir() is not None:
        return
    for name in sorted(names, key=_UPLOAD_ORDER.index):
        if (folder / name).exists():
            run.log_artifact(folder / name, CHECKPOINT_ARTIFACTS)


def ensure_local_checkpoint(tracker: Tracker, run_id: str) -> Path:
    """The local checkpoint folder of run ``run_id``, filled from the server's copy first when the run's store is a
    tracking server: what a resume calls, so that a run killed on one machine continues on any other.

    The server's copy wins over local files (every checkpoint written is uploaded, so it is the newest one); a
    run that uploaded none keeps whatever this machine has. On a local store the folder is returned as it is.
    """
    try:
        run = tracker.get_run(run_id)
    except Exception:
        raise TLError(f"No run with id {run_id!r} in {tracker.uri}; check the id and --mlflow-path.") from None
    handle = RunHandle(tracker, run_id, run.info.experiment_id)
    folder = checkpoint_dir(handle)
    if handle.artifact_dir() is not None:
        return folder
    stored = {Path(f.path).name for f in tracker.client.list_artifacts(run_id, CHECKPOINT_ARTIFACTS) if not f.is_dir}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for name in (n for n in _UPLOAD_ORDER if n in stored):
            got = tracker.client.download_artifacts(run_id, f"{CHECKPOINT_ARTIFACTS}/{name}", tmp)
            os.replace(got, folder / name)
    return folder


def discard_checkpoint(run: RunHandle, folder: Path) -> None:
    """A finished run needs no checkpoint: remove the local folder and, on a server, the uploaded copy."""
    shutil.rmtree(folder, ignore_errors=True)
    if run.artifact_dir() is not None:
        return
    try:
        if not run.client.list_artifacts(run.run_id, CHECKPOINT_ARTIFACTS):
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = run.client.get_run(run.run_id).info.artifact_uri
        get_artifact_repository(uri, tracking_uri=run.tracker.uri).delete_artifacts(CHECKPOINT_ARTIFACTS)
    except Exception as exc:  # a leftover copy costs space, never the run
        logging.getLogger(__name__).warning("Could not delete the checkpoint artifacts of run %s: %s", run.run_id, exc)


#: How many seconds of training a killed run may have to redo. Checkpoints (weights, optimiser state and the best
#: weights) are written at most this often, not after every epoch: a 20M-parameter network writes 240 MB a time,
#: which took 0.5-0.9 s here, 40 % of a 6-second CPU fine-tuning. 0: after every epoch.
CHECKPOINT_EVERY_ENV = "TLCORE_CHECKPOINT_EVERY_S"
DEFAULT_CHECKPOINT_EVERY_S = 60.0


def checkpoint_every_s() -> float:
    """The checkpoint interval from ``$TLCORE_CHECKPOINT_EVERY_S`` (default 60 s)."""
    value = os.environ.get(CHECKPOINT_EVERY_ENV, "").strip()
    if not value:
        return DEFAULT_CHECKPOINT_EVERY_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise TLError(f"{CHECKPOINT_EVERY_ENV}={value!r} is not a number of seconds; set it to e.g. 60, or 0 to "
                      "checkpoint after every epoch.")
    return seconds


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file: a killed process never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class Progress:
    """Where one training stands between epochs: what a checkpoint carries beside the model,
    optimiser, scaler and RNG states."""

    stage: int | str
    epoch: int = 0
    stopped: bool = False
    val_losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"val_accuracy": -1.0, "val_plain_accuracy": 0.0,
                                                            "epoch": 0})
    best_state: dict[str, torch.Tensor] | None = None  # the best val weights, on CPU (their own file: BEST_FILE)


def save_checkpoint(folder: Path, point: SplitPoint, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, batch_size: int, progress: Progress) -> None:
    """The end of an epoch: everything a resume needs to continue (model, optimiser, scaler, RNG
    state, ``progress``), tied to the split it trains on."""
    atomic_save({"epoch": progress.epoch, "stage": progress.stage, "stopped": progress.stopped,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "best": progress.best, "val_losses": progress.val_losses, "history": progress.history,
                 "rng": rng_state(python_and_numpy=False), "train_indices": indices_hash(point.train),
                 "batch_size": batch_size},
                folder / CHECKPOINT_FILE)


def load_checkpoint(folder: Path, point: SplitPoint, run: RunHandle,
                    reporter: Reporter) -> tuple[dict[str, Any], Progress] | None:
    """The checkpoint a resumed run continues from (its model, optimiser, scaler and RNG states) and
    its progress; ``None`` when the run had not written a checkpoint yet (it then trains from the start).
    Refused when the split changed or the run's checkpoint folder is gone."""
    if (folder / CHECKPOINT_FILE).exists():
        ck = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        if ck["train_indices"] != indices_hash(point.train):
            raise TLError(f"The training split {point.label} is not the one run {run.run_id} started with (the "
                          "split CSVs or the dataset changed); it cannot be resumed.")
        best_state = None
        if (folder / BEST_FILE).exists():
            best_state = torch.load(folder / BEST_FILE, map_location="cpu", weights_only=True)
        return ck, Progress(ck["stage"], ck["epoch"], ck["stopped"], ck["val_losses"], ck["history"], ck["best"],
                            best_state)
    if not (folder / COST_FILE).exists() and run.client.get_metric_history(run.run_id, "val_loss"):
        where = f"folder {folder}" if run.artifact_dir() is not None else (
            f"(neither in {folder} nor among its {CHECKPOINT_ARTIFACTS}/ artifacts on {run.tracker.uri})")
        raise TLError(f"Run {run.run_id} logged epochs but its checkpoint {where} is gone; it cannot be resumed. "
                      "Start a new run instead.")
    reporter.message(f"Run {run.run_id} had not written a checkpoint yet (one at most every "
                     f"{checkpoint_every_s():g} s, ${CHECKPOINT_EVERY_ENV}); training {point.label} from the start.")
    return None


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


def snapshot(report_time: float, meter: CostMeter) -> CostReport:
    """The running meter's figures so far, as a report without energy (read only when it stops)."""
    return CostReport(report_time, str(meter.device), 0.0, meter.images, meter.flops, None, None, "", None)


# ---------------------------------------------------------------------------------------------
# Resuming: which run, and the spec it started with


def check_resumable(tracker: Tracker, run_id: str):
    """The run ``--resume`` names, once it is known to be a fine-tuning run that ended without finishing."""
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


def read_stored_spec(tracker: Tracker, run) -> ExperimentSpec:
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



def stored_spec_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as each run stores it (:data:`SPEC_FILE`), for :func:`read_stored_spec`; never a resume."""
    d = spec.to_dict()
    d["params"]["resume"] = None
    return d
