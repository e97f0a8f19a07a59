"""The files the seed's QUANTA tool wrote to ``--outdir``, in its format, and their MLflow artifacts.

The seed's export files go to ``{outdir}/{source}_to_{target}/``, rewritten (never appended to) and
logged as MLflow artifacts; ``target_r_*.pt`` holds everything a resume needs: weights, QUANTA
weights, optimizer and RNG state, epoch, step and history.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlcore.methods.quanta.names import RESUME_FORMAT, export_names
from tlcore.methods.quanta.plan import QuantaPlan
from tlcore.methods.source_training import save_checkpoint
from tlcore.models.quanta_layer import QuantaNetwork
from tlcore.seed_names import KERAS_METRIC_NAMES
from tlcore.tracking import RunHandle


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)  # rewritten whole, never appended; a hard-linked artifact keeps the old copy
    return path


def _link_or_copy(src: Path, dest: Path) -> Path:
    """``dest`` becomes the same bytes as ``src``: a hard link when possible (free), else a copy."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    return dest


def _attach(run: RunHandle, path: Path, artifact_path: str) -> None:
    """Log a (large) file as an artifact: a hard link into a local store when possible, else a copy."""
    folder = run.artifact_dir()
    if folder is None:
        run.log_artifact(path, artifact_path)
        return
    dest = folder / artifact_path
    dest.mkdir(parents=True, exist_ok=True)
    _link_or_copy(path, dest / path.name)


def keras_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Our metric set under Keras' names (``accuracy`` -> ``categorical_accuracy``, ``tp`` ->
    ``true_positives``, ...), the names the seed's files hold; other keys are kept as they are."""
    return {KERAS_METRIC_NAMES.get(k, k): v for k, v in metrics.items()}


def seed_exports(plan: QuantaPlan, result: dict[str, Any]) -> dict[str, dict]:
    """The four JSON lines of the seed's files, with the seed's fields.

    ``quantas``: ``{"<layer>": {"quanta_weights": [[w_S, w_T] per epoch, the start first], "quantas":
    {"source": [lambda_S ...], "target": [lambda_T ...]}}}`` (plus ours: the epochs, module and
    activation); ``training``: Keras' metrics per epoch, keyed by the 0-based epoch; ``testing_*``:
    one ``model.evaluate`` dict in Keras' names (plus ours: the set, its size).
    """
    hist = result["history"]
    lam = list(zip(*hist["lambda_s"], strict=True))
    weights = hist.get("weights")
    quantas = {}
    for j, p in enumerate(plan.points):
        lam_s = [float(v) for v in lam[j]]
        # a checkpoint written before per-epoch weights were kept: w = (a, -a), lambda_S = sigmoid(2a)
        w = ([row[j] for row in weights] if weights else
             [[0.5 * float(np.log(v / (1 - v))), -0.5 * float(np.log(v / (1 - v)))] for v in lam_s])
        quantas[p.key] = {"quanta_weights": w, "quantas": {"source": lam_s, "target": [1.0 - v for v in lam_s]},
                          "epochs": hist["epochs"], "module": p.module, "activation": p.activation or "identity"}
    training = {}
    for i, row in enumerate(hist["training"]):
        rest = {k: v for k, v in row.items() if k != "epoch"}
        val = {f"val_{KERAS_METRIC_NAMES[k[4:]]}": v for k, v in rest.items()
               if k.startswith("val_") and k[4:] in KERAS_METRIC_NAMES}
        training[str(i)] = {**keras_metrics({k: v for k, v in rest.items() if not k.startswith("val_")}), **val}
    source = result["source_test"]
    return {
        "quantas": quantas,
        "training": training,
        "testing_target": {**keras_metrics(result["target_test"]), "dataset": plan.spec.dataset,
                           "n_images": len(plan.splits.test)},
        "testing_source": keras_metrics(source) if source.get("evaluated") else dict(source),
    }


def _write_exports(plan: QuantaPlan, r: int, result: dict[str, Any], run: RunHandle,
                   train_idx: np.ndarray) -> dict[str, Path]:
    """The seed's files for run r, rewritten whole, and logged as artifacts of the MLflow run."""
    names = export_names(r, plan.label)
    out = plan.out_dir
    net: QuantaNetwork = result["net"]
    hist = result["history"]
    rows = seed_exports(plan, result)
    paths = {key: _write_jsonl(out / names[key], [rows[key]])
             for key in ("quantas", "training", "testing_target", "testing_source")}
    if plan.source.kind == "trained" and plan.source.path is not None:  # the very file it was loaded from
        paths["source_model"] = _link_or_copy(plan.source.path, out / names["source_model"])
    else:
        source_meta = {"architecture": plan.spec.backbone, "dataset": plan.source.task,
                       "num_classes": plan.source.head_classes, "input_size": plan.spec.input_size,
                       "weights": plan.source.description, "quanta_run_id": run.run_id}
        paths["source_model"] = save_checkpoint({k: v.detach().cpu() for k, v in net.source.net.state_dict().items()},
                                                source_meta, out / names["source_model"])
    ckpt = {
        "format": RESUME_FORMAT, "architecture": plan.spec.backbone, "num_classes": plan.ds.num_classes,
        "points": [p.key for p in plan.points], "layer_to_transfer": plan.label if plan.label != "all" else "-1",
        "target_task": plan.spec.dataset, "source_weights": plan.source.weights, "run_seed": result["run_seed"],
        "epoch": result["epoch"], "global_step": result["global_step"],
        "target": {k: v.detach().cpu() for k, v in net.target.net.state_dict().items()},
        "quanta": {k: v.detach().cpu() for k, v in net.quanta.state_dict().items()},
        "optimizer": result["optimizer"].state_dict(), "rng": result["rng"], "history": hist,
        "train_indices": torch.from_numpy(np.asarray(train_idx, dtype=np.int64)), "mlflow_run_id": run.run_id,
    }
    tmp = out / f".{names['target_model']}.tmp{os.getpid()}"
    torch.save(ckpt, tmp)
    os.replace(tmp, out / names["target_model"])
    paths["target_model"] = out / names["target_model"]
    for key, path in paths.items():
        if not key.endswith("_model"):
            run.log_artifact(path, "exports")
    # lean artifacts: the source is referenced (param source_reference), never copied into the run; the target
    # checkpoint stays in the export folder (what --train_from_previous_training resumes) and is kept in the
    # run only when asked (--keep-weights)
    if plan.params.keep_weights:
        _attach(run, paths["target_model"], "models")
    return paths
