"""Which source a QUANTA experiment uses: resolved, built and checked before any run opens.

Sources (``-sw``): a weights file (``train-source --out`` or any state dict), a ``Source
training`` MLflow run id, ``imagenet``/``default`` (the backbone's pretrained weights), or
``random``: the control, a randomly initialised source that knows nothing. lambda_S alone is not
a verdict; compare with the control. A run records its source by reference (``source_reference``),
never by a copy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tlcore.errors import WeightsError
from tlcore.methods.quanta.names import safe_name
from tlcore.methods.source_training import ARTIFACT_NAME
from tlcore.models import (
    Backbone,
    BackboneConfig,
    backbone_config,
    create_backbone,
    load_weights_into,
    read_weights_file,
)
from tlcore.models.base import RANDOM_WEIGHTS
from tlcore.specs import ExperimentSpec, QuantaParams
from tlcore.tracking import Tracker

PRETRAINED_NAMES = ("default", "imagenet")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class SourcePlan:
    """Which source a QUANTA experiment uses, resolved and checked before any run opens."""

    kind: str  # "trained" (a weights file or a Source training run), "pretrained", "random"
    weights: str  # what the user passed
    description: str
    head_classes: int
    task: str | None = None  # the task the source's head predicts, when known
    path: Path | None = None
    run_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    backbone: Backbone | None = None  # built once, unless random (a new one per run)
    reference_top1: float | None = None

    @property
    def name(self) -> str:
        """The source half of the export folder's name (the control never shares the real source's folder)."""
        if self.kind == "random":
            return f"random_{safe_name(self.task)}" if self.task else "random"
        if self.task:
            return self.task
        if self.kind == "pretrained":
            return self.weights if self.weights not in PRETRAINED_NAMES else "imagenet"
        return self.path.stem if self.path else (self.run_id or "source")[:8]


def read_checkpoint(path: str | os.PathLike, what: str = "Source weights",
                    arch: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """A state dict and the tlcore meta saved with it (empty for a bare state dict); a Keras file
    (the seed's ``SourceModel.weights.h5``) is mapped onto ``arch``."""
    from tlcore.models.keras_weights import is_keras_file, keras_state_dict

    if arch is not None and is_keras_file(path):
        return keras_state_dict(path, arch), {"architecture": arch, "format": "keras"}
    return read_weights_file(path, what)


def _head_classes(state: dict[str, torch.Tensor], cfg: BackboneConfig) -> int | None:
    """Output width of the head a state dict carries (its last 2-D weight under the head's path)."""
    found = None
    for key, value in state.items():
        bare = key
        for prefix in ("module.", "net."):
            bare = bare.removeprefix(prefix)
        if (bare == f"{cfg.head_path}.weight" or bare.startswith(cfg.head_path + ".")) and value.dim() == 2 \
                and bare.endswith("weight"):
            found = int(value.shape[0])
    return found


def _check_input_size(trained_at: Any, input_size: int) -> None:
    if trained_at in (None, "", "none"):
        return
    size = int(trained_at)
    if size != input_size:
        raise WeightsError(f"The source was trained on {size}x{size} inputs but the target runs at "
                           f"{input_size}x{input_size}; source and target must see the same images "
                           f"(pass --resolution {size} or train the source at {input_size}).")


def _load_trained(cfg: BackboneConfig, path: Path, origin: str, fallback_classes: int,
                  input_size: int) -> tuple[Backbone, dict, int]:
    state, meta = read_checkpoint(path, arch=cfg.name)
    if meta.get("architecture") and meta["architecture"] != cfg.name:
        raise WeightsError(f"Source weights {origin} are a {meta['architecture']} network, not {cfg.name}; pass "
                           f"--architecture {meta['architecture']} or weights of a {cfg.name}.")
    _check_input_size(meta.get("input_size"), input_size)
    head = _head_classes(state, cfg) or fallback_classes
    bb = create_backbone(cfg.name, "random", num_classes=head)
    load_weights_into(bb.net, state, origin, cfg.name, cfg.head_path)  # WeightsError names the keys
    bb.weights_name = origin
    return bb, meta, head


def resolve_source(spec: ExperimentSpec, tracker: Tracker, target_classes: int,
                   tmp_dir: Path) -> SourcePlan:
    """Turn ``-sw`` into a built source (or the recipe for a random one); every refusal is one sentence."""
    params: QuantaParams = spec.params
    cfg = backbone_config(spec.backbone)
    sw = params.source_weights.strip()
    low = sw.lower()
    if low in RANDOM_WEIGHTS:
        return SourcePlan("random", sw, "random (control: a source that knows nothing)", 0, params.source_task)
    if low in PRETRAINED_NAMES or sw in cfg.weights:
        name = cfg.default_weights if low == "default" else ("imagenet" if low == "imagenet" else sw)
        if name is None or name not in cfg.weights:
            raise WeightsError(
                f"{spec.backbone} has no pretrained weights named {sw!r}; give -sw a weights file "
                f"(python -m tlcore train-source --architecture {spec.backbone} ... --out src.pt), a Source training "
                "run id, or 'random' for the control.")
        bb = create_backbone(spec.backbone, name, download=spec.download_weights)
        src = cfg.weights[name]
        task = params.source_task
        if task and task.lower() == name:
            task = None  # "-s imagenet": no local test set to score it on
        return SourcePlan("pretrained", sw, f"{name} ({src.description})", _head_classes(
            bb.net.state_dict(), cfg) or 0, task, backbone=bb, reference_top1=src.reference_top1)
    path = Path(sw).expanduser()
    if path.exists():
        if path.is_dir():
            raise WeightsError(f"-sw {sw} is a folder; give the weights file itself (e.g. {path / 'src.pt'}).")
        bb, meta, head = _load_trained(cfg, path, str(path), target_classes, spec.input_size)
        return SourcePlan("trained", sw, str(path.resolve()), head, params.source_task or meta.get("dataset"),
                          path=path.resolve(), meta=meta, backbone=bb, run_id=meta.get("run_id"))
    if _RUN_ID.match(low):
        try:
            run = tracker.get_run(low)
        except Exception:
            raise WeightsError(f"-sw {sw} is neither a file nor a run in {tracker.uri}; check the path, or the run id "
                               "and --mlflow-path.") from None
        run_params = run.data.params
        if run_params.get("backbone") and run_params["backbone"] != spec.backbone:
            raise WeightsError(f"Run {low} trained a {run_params['backbone']}, not {spec.backbone}; pass "
                               f"--architecture {run_params['backbone']} or another run.")
        try:
            local = Path(tracker.client.download_artifacts(low, ARTIFACT_NAME, str(tmp_dir)))
        except Exception:
            raise WeightsError(f"Run {low} has no {ARTIFACT_NAME} artifact; give the id of a Source training run "
                               "(python -m tlcore train-source) or a weights file.") from None
        _check_input_size(run_params.get("resolution"), spec.input_size)
        bb, meta, head = _load_trained(cfg, local, f"run {low}", target_classes, spec.input_size)
        meta = {"dataset": run_params.get("dataset"), "seed": run_params.get("seed"),
                "input_size": run_params.get("resolution"), **meta}
        return SourcePlan("trained", sw, f"run {low}", head, params.source_task or meta.get("dataset"),
                          path=local, run_id=low, meta=meta, backbone=bb)
    raise WeightsError(f"-sw {sw!r} is not a file, not a run id, and not one of random, default, imagenet; give "
                       "the weights of a trained source, a Source training run id, or 'random' for the control.")


def _random_source(arch: str, classes: int, run_seed: int) -> Backbone:
    """A randomly initialised source from its own seed (never the target's initialisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((run_seed * 7919 + 104_729) % 2**63)
        bb = create_backbone(arch, "random", num_classes=classes)
    bb.weights_name = "random"
    return bb


def source_reference(source: SourcePlan, spec: ExperimentSpec) -> str:
    """What a QUANTA run records instead of a copy of its source: the Source training run id, the weights
    file with its content hash, the pretrained weights' name, or the control's seed."""
    if source.run_id and source.weights.strip() == source.run_id:  # -sw RUN_ID: the run holds the weights
        return f"run:{source.run_id}"
    if source.kind == "trained" and source.path is not None:
        ref = f"file:{source.path.resolve()} sha256:{_file_sha256(source.path)[:16]}"
        return f"{ref} run:{source.run_id}" if source.run_id else ref  # a file train-source wrote knows its run
    if source.kind == "pretrained":
        return f"pretrained:{spec.backbone}/{source.weights}"
    return f"random:{spec.backbone} drawn from each run's seed (seed {spec.seed} + run index)"


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
