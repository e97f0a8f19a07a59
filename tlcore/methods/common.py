"""What feature extraction and fine-tuning share: the run plan over splits, the sweep's parent and
child MLflow runs, the schema's common params, scores, and crop voting.

The protocol is the seed's: ``--model-selection`` trains once on the largest split and scores on
val; otherwise every draw of every samples-per-class value is one child run scored on test,
under a parent run tagged with the sweep id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from tlcore.classifiers.voting import vote  # noqa: F401  (fine-tuning's test pass votes as FE does)
from tlcore.data import ImageDataset, SplitSet, generate_splits, load_dataset, resolve_splits
from tlcore.data.splits import N_DRAWS, find_split_dir
from tlcore.errors import DatasetError
from tlcore.methods.base import EXPERIMENTS
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import RunHandle, Tracker


@dataclass(frozen=True)
class SplitPoint:
    """One training of a sweep: which images train it and which score it."""

    spc: int
    split: int
    train: np.ndarray
    eval_set: str  # "val" (model selection) or "test"
    eval: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def label(self) -> str:
        return f"spc={self.spc} split={self.split}" + (" (model selection)" if self.eval_set == "val" else "")

    @property
    def name(self) -> str:
        """How people read the point in run names: samples per class and draw."""
        return f"{self.spc} per class · split {self.split}" + (" · model selection" if self.eval_set == "val" else "")


def variant_name(spec: ExperimentSpec) -> str:
    """What a run is, for its name in the app and MLflow: "FE linearsvc", "FT config 2", "FT lp-ft"."""
    p = spec.params
    if spec.method == "fe":
        return f"FE {p.classifier}"
    if spec.method == "ft":
        return f"FT config {p.configuration}" if isinstance(p.configuration, int) else f"FT {p.configuration}"
    return {"quanta": "QUANTA", "source": "Source training"}.get(spec.method, spec.method.upper())


def load_data(spec: ExperimentSpec, reporter: Reporter | None = None) -> tuple[ImageDataset, SplitSet]:
    """The dataset and its split set for a spec; warnings (split overlaps) go to the reporter.

    ``spec.splits`` draws are required of every samples-per-class value except a largest one
    with a single draw (the full balanced set, one draw by design): generated splits make that
    many, CSV split sets must hold them.
    """
    ds = load_dataset(spec.dataset, spec.data_dir, spec.download, split_path=spec.split_path)
    wanted = list(spec.samples_per_class) if spec.samples_per_class else None
    if spec.model_selection and wanted:
        wanted = [max(wanted)]
    n_splits = None if spec.model_selection else spec.splits
    if n_splits and n_splits > N_DRAWS and find_split_dir(ds, spec.split_path) is None:
        splits = generate_splits(ds, seed=spec.seed, spc_values=wanted, n_draws=n_splits)
    else:
        splits = resolve_splits(ds, spec.split_path, seed=spec.seed, n_splits=n_splits, spc_values=wanted)
    if n_splits:
        short = [(spc, splits.draws(spc)) for spc in splits.spc_values
                 if splits.draws(spc) < n_splits and not (spc == splits.largest_spc and splits.draws(spc) == 1)]
        if short:
            spc, have = short[0]
            raise DatasetError(
                f"--splits {n_splits} asks for {n_splits} draws of {spc} samples per class, but the split set "
                f"({splits.origin}) holds {have} (train_samples_{spc:02d}_split_0..{have - 1}); pass --splits "
                f"{have} or add the missing split files.")
    for w in splits.warnings:
        if reporter is not None:
            reporter.message(w, "warning")
    if spec.precomputed_crops:  # every crop is checked now: a missing one must not fail a run half-way
        from tlcore.data.loading import check_precomputed_crops

        used = [splits.val, splits.test, *(d for draws in splits.train.values() for d in draws)]
        check_precomputed_crops(ds, np.concatenate(used), spec.precomputed_crops)
    return ds, splits


def plan_points(spec: ExperimentSpec, ds: ImageDataset, splits: SplitSet) -> list[SplitPoint]:
    """Every (samples per class, draw) to train, checked before any run is opened."""
    if spec.model_selection:
        spc = splits.largest_spc
        points = [SplitPoint(spc, 0, splits.train_split(spc, 0), "val", splits.val, splits.val, splits.test)]
    else:
        points = [SplitPoint(spc, k, idx, "test", splits.test, splits.val, splits.test)
                  for spc in splits.spc_values for k, idx in enumerate(splits.train[spc])]
    if not points:
        raise DatasetError(f"The split set of {ds.name} has no training split to run.")
    if spec.points is not None:  # one executor's share of the sweep (experiments.run_point)
        wanted = set(spec.points)
        points = [p for p in points if (p.spc, p.split) in wanted]
        if not points:
            raise DatasetError(f"None of the points {sorted(wanted)} (samples per class, draw) is in the split set "
                               f"of {ds.name}; list them with experiments.sweep_points.")
    for p in points:
        present = np.unique(ds.labels[p.train])
        if len(p.train) == 0:
            raise DatasetError(f"The training split {p.label} of {ds.name} is empty; check the split CSVs.")
        if len(present) < 2:
            raise DatasetError(f"The training split {p.label} of {ds.name} holds a single class "
                               f"({ds.classes[int(present[0])]!r}); a classifier needs at least two.")
        if len(p.eval) == 0:
            raise DatasetError(f"The {p.eval_set} set of {ds.name} is empty; nothing would score the run.")
    return points


def common_params(spec: ExperimentSpec, ds: ImageDataset, splits: SplitSet) -> dict[str, Any]:
    """Params every run logs (design.md's schema), before the point-specific ones."""
    return {
        "method": spec.method,
        "dataset": spec.dataset,
        "backbone": spec.backbone,
        "weights": spec.weights,
        "seed": spec.seed,
        "model_selection": spec.model_selection,
        "use_crops": spec.use_crops,
        "batch_size": spec.batch_size,
        "resolution": spec.input_size,
        "num_classes": ds.num_classes,
        "split_origin": splits.origin,
        "job": spec.job or "",
    }


def split_hash(indices: np.ndarray) -> str:
    """A short fingerprint of a set of images: runs trained on the same draw pair up across methods."""
    import hashlib

    return hashlib.sha1(np.sort(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()[:12]


def point_params(point: SplitPoint) -> dict[str, Any]:
    return {"samples_per_class": point.spc, "split": point.split, "n_train_images": len(point.train),
            "eval_set": point.eval_set, "train_hash": split_hash(point.train)}


#: Tag of a spec whose sweep points run one by one (experiments.run_point): their children's parent run.
PARENT_TAG = "sweep_parent_run_id"
#: Tag naming a run's point within its sweep: with ``sweep_id`` it identifies the run, so a retried task finds it.
POINT_TAG = "sweep_point"


def point_key(point: SplitPoint) -> str:
    """A point's identity within its sweep (samples per class, draw, scored set)."""
    return f"{point.spc}/{point.split}/{point.eval_set}"


class Sweep:
    """The MLflow runs of one experiment: a parent (when there is more than one point) and children.

    Children carry ``sweep_id``, ``sweep_point`` and ``mlflow.parentRunId``; a child that raises ends
    FAILED or KILLED and the error propagates, so the parent ends the same way. ``defer_children``:
    children under a parent write everything they log in one batch at their end
    (``Tracker.start_run(defer=True)``), for sweeps of many short points.

    A sweep whose id was given in the spec's tags (an executor split or shipped it) is *idempotent*: a
    task retried after its worker died finds the parent and the point runs the first attempt opened, by
    (sweep id, point), and continues them (``RunHandle.reopened``) instead of opening second ones.
    """

    def __init__(self, spec: ExperimentSpec, tracker: Tracker, reporter: Reporter, n_points: int,
                 params: dict[str, Any], sweep_id: str | None = None, variant: str | None = None,
                 defer_children: bool = False) -> None:
        self.spec, self.tracker, self.reporter = spec, tracker, reporter
        self.variant = variant or variant_name(spec)
        self.n_points = n_points
        self.params = params
        self.sweep_id = sweep_id or spec.tags.get("sweep_id") or uuid.uuid4().hex[:12]
        self.idempotent = "sweep_id" in spec.tags
        self._earlier: dict[str, Any] | None = None
        self.parent: RunHandle | None = None
        self.given_parent_id = spec.tags.get(PARENT_TAG)  # a parent opened by whoever split the sweep
        self.child_ids: list[str] = []
        self.done = 0
        self.progress = (0.0, 1.0)  # the share of the reporter's bar the children fill (after shared work)
        self.defer_children = defer_children

    @property
    def tags(self) -> dict[str, str]:
        t = {"sweep_id": self.sweep_id, **self.spec.tags}
        if self.spec.job:
            t["job"] = self.spec.job
        return t

    def earlier_run(self, key: str):
        """The run an earlier attempt of this sweep opened for ``key`` (a point key, or "parent"), if any."""
        if not self.idempotent:
            return None
        if self._earlier is None:
            from tlcore.tracking import experiment_of

            eid = self.tracker.experiment_id(experiment_of(self.spec.method))
            runs = self.tracker.client.search_runs([eid], f"tags.sweep_id = '{self.sweep_id}'", max_results=10000)
            self._earlier = {("parent" if r.data.tags.get("sweep_parent") == "true" else r.data.tags.get(POINT_TAG)): r
                             for r in runs}
        return self._earlier.get(key)

    def _reopen(self, earlier, what: str) -> RunHandle:
        run = self.tracker.resume_run(earlier.info.run_id)
        run.reopened = True
        self.reporter.message(f"Continuing {what} run {run.run_id}, which an earlier attempt of this task opened "
                              f"({earlier.info.status}).")
        return run

    def __enter__(self) -> Sweep:
        if self.n_points > 1 and not self.given_parent_id and (earlier := self.earlier_run("parent")) is not None:
            self.parent = self._reopen(earlier, "sweep parent")
            self.reporter.run_started(self.parent.run_id, EXPERIMENTS[self.spec.method], "sweep parent")
        elif self.n_points > 1 and not self.given_parent_id:
            self.parent = self.tracker.start_run(
                self.spec.method, {**self.params, "samples_per_class": "sweep", "split": "sweep",
                                   "n_points": self.n_points},
                tags={**self.tags, "sweep_parent": "true"},
                run_name=f"{self.variant} · {self.spec.dataset} · {self.n_points} runs")
            self.reporter.run_started(self.parent.run_id, EXPERIMENTS[self.spec.method], "sweep parent")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.parent is not None:
            self.parent.__exit__(exc_type, exc, tb)
        return False

    @contextmanager
    def child(self, point: SplitPoint, params: dict[str, Any]) -> Iterator[tuple[RunHandle, Reporter]]:
        """One run for ``point``; yields it and a reporter scaled to its share of the sweep."""
        self.reporter.check_cancelled()
        if (earlier := self.earlier_run(point_key(point))) is not None:
            run = self._reopen(earlier, point.label)
        else:
            run = self.tracker.start_run(
                self.spec.method, {**self.params, **point_params(point), **params},
                tags={**self.tags, POINT_TAG: point_key(point)},
                parent_run_id=self.parent.run_id if self.parent else self.given_parent_id,
                run_name=f"{self.variant} · {point.name}", defer=self.defer_children and self.parent is not None)
        self.child_ids.append(run.run_id)
        self.reporter.run_started(run.run_id, EXPERIMENTS[self.spec.method], point.label)
        lo, hi = self.progress
        step = (hi - lo) / self.n_points
        sub = self.reporter.scaled(lo + self.done * step, lo + (self.done + 1) * step)
        with run:
            yield run, sub
        self.done += 1


def score_metrics(prefix: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (mean per-class, the seed's measure) as ``<prefix>_accuracy``, plain beside it."""
    return {
        f"{prefix}_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        f"{prefix}_plain_accuracy": float(accuracy_score(y_true, y_pred)),
    }


def sweep_cost(point_metrics: list[dict[str, float]], wall_s: float) -> dict[str, float]:
    """What a whole sweep cost, for its parent run: the job's wall time (data loading and model set-up included,
    so this machine's pace projects whole jobs) and the sums of its runs' costs (a sum only when every run has
    the figure)."""
    out = {"time_total_s": float(wall_s), "device_hours": float(wall_s) / 3600.0,
           "children_time_total_s": float(sum(m.get("time_total_s", 0.0) for m in point_metrics))}
    for key in ("flops_total", "images_processed", "energy_kwh", "co2_kg"):
        values = [m.get(key) for m in point_metrics]
        if values and all(v is not None for v in values):
            out[key] = float(sum(values))
    return out


def point_pairs(spec: ExperimentSpec) -> list[tuple[int, int]]:
    """(samples per class, draw) of every point of ``spec``'s sweep: what a cluster runs as separate tasks."""
    return [(p.spc, p.split) for p in plan_sweep(spec)]


def plan_sweep(spec: ExperimentSpec) -> list[SplitPoint]:
    """The points a sweep of ``spec`` will run (loads the dataset and its split set, as the run will)."""
    ds, splits = load_data(spec)
    return plan_points(spec, ds, splits)
