"""What a run earned: a verdict per run, so that no run is used as evidence beyond it.

A run that stopped at its epoch cap while its validation loss was still falling, a score that
guessing would reach, a loss that went to nan, a QUANTA lambda_S that did not separate from its
random-source control: each gets a label and one sentence a practitioner understands, and the
pages, the guideline walkthrough and ``python -m tlcore advise`` draw weak runs as weak and never
let them decide. The rules are pure functions of what a run logged (params, final metrics, its
validation-loss history), so runs written before verdicts existed are judged the same way when
they are read (:mod:`tlcore.results`), and runs finishing now carry the verdict as MLflow tags
``quality`` and ``quality_reason`` (:mod:`tlcore.tracking`).

Statistics used (docs/evidence.md says more):

* near chance: the balanced accuracy lies inside the central 95 % of what uniform guessing
  scores on a test set of that size, Binomial(n, 1/classes) / n (for balanced accuracy on a
  balanced test set this is exact; otherwise an approximation);
* means over splits carry a Student-t 95 % interval; FE vs FT differences are paired by split;
* QUANTA per layer: lambda_S of the trained source minus that of the random-source control
  (same flags); with two or more runs on each side, a signal when the Welch 95 % interval of the
  difference excludes 0; with a single run on a side, when the difference exceeds
  :data:`LAMBDA_SINGLE_RUN_MARGIN`, a margin measured from the run-to-run spread of lambda_S.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

QUALITY_TAG = "quality"
QUALITY_REASON_TAG = "quality_reason"
LAYER_TAG_PREFIX = "quality/"  # QUANTA: quality/<layer> = signal | no_signal (and quality_reason/<layer>)
LAYER_REASON_PREFIX = "quality_reason/"

CONVERGED, CAPPED, NEAR_CHANCE, DIVERGED = "converged", "capped", "near_chance", "diverged"
SIGNAL, NO_SIGNAL = "signal", "no_signal"
RUN_VERDICTS = (CONVERGED, CAPPED, NEAR_CHANCE, DIVERGED)
WEAK = frozenset({CAPPED, NEAR_CHANCE, DIVERGED})
LABELS = {CONVERGED: "converged", CAPPED: "capped (still improving)", NEAR_CHANCE: "near chance",
          DIVERGED: "diverged", SIGNAL: "signal", NO_SIGNAL: "no signal"}

CONFIDENCE = 0.95
DEFAULT_PATIENCE = 3
#: The QUANTA layer's lambda_S before training: softmax([1.1, -1.1])[0] (the reference's initial weights).
LAMBDA_START = 1.0 / (1.0 + math.exp(-2.2))
#: lambda_S that moved less than this from where it started did not move at all.
LAMBDA_STILL = 1e-3
#: With one run on a side, |lambda_S(trained) - lambda_S(control)| must exceed this to count as a
#: signal: 1.96 x sqrt(2) x 0.079, the largest run-to-run standard deviation of a layer's final
#: lambda_S we measured over seeds (quanta_cnn, digits 0-4 -> 5-9, 6 epochs, QUANTA lr 0.05;
#: docs/evidence.md). Two runs of one setting differ by more than this in fewer than 1 in 20 pairs.
LAMBDA_SINGLE_RUN_MARGIN = 0.22


@dataclass(frozen=True)
class Verdict:
    """A label and the sentence that explains it."""

    quality: str
    reason: str

    @property
    def weak(self) -> bool:
        return self.quality in WEAK

    def tags(self) -> dict[str, str]:
        return {QUALITY_TAG: self.quality, QUALITY_REASON_TAG: self.reason}


DIVERGED_VERDICT = Verdict(DIVERGED, "The training loss became nan or infinite: the run diverged. Lower the "
                                    "learning rate and run it again.")


def is_weak(quality: object) -> bool:
    """Whether a verdict label (or a missing one) marks the run as weak evidence."""
    return isinstance(quality, str) and quality in WEAK


# ---------------------------------------------------------------------------------------------
# Statistics


def chance_interval(n: int, n_classes: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """The accuracy range uniform guessing reaches with probability ``level`` on ``n`` test images."""
    from scipy.stats import binom

    p = 1.0 / n_classes
    tail = (1.0 - level) / 2.0
    lo = binom.ppf(tail, n, p) / n
    hi = binom.isf(tail, n, p) / n
    return float(lo), float(hi)


def t_interval(values: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean; low/high are NaN with fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2.0, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def t_intervals(mean: Sequence[float], std: Sequence[float], n: Sequence[float],
                level: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of :func:`t_interval` for many groups at once, from each group's mean, sample std
    (ddof=1) and count of finite values: one scipy call for thousands of curves instead of one each."""
    from scipy.stats import t

    n = np.asarray(n, dtype=float)
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t.ppf(0.5 + level / 2.0, np.where(n >= 2, n - 1, np.nan)) * std / np.sqrt(n)
    return mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's interval of a difference of means (NaN bounds when a
    side has fewer than 2 values)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / ((va ** 2) / (len(a) - 1) + (vb ** 2) / (len(b) - 1))
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2.0, dof) * se)
    return diff, diff - half, diff + half


# ---------------------------------------------------------------------------------------------
# One run


def judge_accuracy(accuracy: float | None, n: int | None, n_classes: int | None,
                   assumed_n: bool = False) -> Verdict | None:
    """``near_chance`` when guessing would reach the balanced accuracy on this test set, else None."""
    if accuracy is None or not np.isfinite(accuracy) or not n or not n_classes or n_classes < 2:
        return None
    lo, hi = chance_interval(int(n), int(n_classes))
    if accuracy > hi:
        return None
    size = f"about {int(n)}" if assumed_n else f"{int(n)}"
    return Verdict(NEAR_CHANCE, f"Balanced accuracy {accuracy:.1%} is within what guessing reaches on {size} test "
                                f"images of {int(n_classes)} classes (95% of guesses score {lo:.1%}-{hi:.1%}): it "
                                "shows no learning and is not evidence.")


def still_improving(val_losses: Sequence[float], patience: int = DEFAULT_PATIENCE) -> bool:
    """Whether the validation loss reached a new low within its last ``patience`` epochs."""
    losses = [v for v in val_losses if v is not None and np.isfinite(v)]
    if len(losses) <= patience:
        return True
    return min(losses[-patience:]) < min(losses[:-patience])


def judge_training(val_losses: Sequence[float], epochs_run: int, epoch_cap: int | None, stopped_early: bool,
                   patience: int = DEFAULT_PATIENCE) -> Verdict:
    """``converged`` when early stopping ended it or its val loss stopped falling; else ``capped``."""
    if stopped_early:
        return Verdict(CONVERGED, f"Early stopping ended it after epoch {epochs_run}: the validation loss had "
                                  f"stopped falling for {patience} epochs.")
    losses = [v for v in val_losses if v is not None and np.isfinite(v)]
    if len(losses) <= patience:
        return Verdict(CAPPED, f"It stopped at its cap of {epochs_run} epoch{'s' if epochs_run != 1 else ''}, too "
                               f"few to see whether the validation loss had stopped falling; its score is not "
                               f"final. Train it longer (early stopping) before relying on it.")
    if still_improving(losses, patience):
        return Verdict(CAPPED, f"It stopped at its cap of {epochs_run} epochs while the validation loss was still "
                               f"falling (a new low in the last {patience}); its score is not final. Allow more "
                               "epochs.")
    return Verdict(CONVERGED, f"The validation loss did not improve over its last {patience} epochs before the cap "
                              f"({epochs_run} epochs).")


def _num(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(value: object) -> int | None:
    v = _num(value)
    return int(v) if v is not None else None


def judge_run(method: str, status: str, params: Mapping[str, object], metrics: Mapping[str, float],
              val_losses: Sequence[float] | None = None, error_type: str | None = None,
              fallback_eval_images: int | None = None) -> Verdict | None:
    """The verdict of one run from what it logged (None for a run that did not finish).

    ``params`` and ``metrics`` are the run's MLflow params (strings are fine) and final metrics;
    ``val_losses`` its per-epoch validation losses (fine-tuning, QUANTA, source training).
    ``fallback_eval_images``: the test-set size to assume when the run did not log its own.
    """
    losses = list(val_losses or [])
    train_loss = _num(metrics.get("train_loss")) if "train_loss" in metrics else 0.0
    if error_type == "TrainingDiverged" or (status == "FAILED" and "train_loss" in metrics and train_loss is None):
        return DIVERGED_VERDICT
    if status != "FINISHED":
        return None
    if str(params.get("samples_per_class", "")) == "sweep":
        return None  # a sweep's parent: judged from its children (summarize)
    accuracy = _num(metrics.get("test_accuracy"))
    if accuracy is None:
        accuracy = _num(metrics.get("val_accuracy"))
    n = (_int(metrics.get("n_eval_images")) or _int(params.get("n_test_images")) or _int(metrics.get("n_test_images")))
    assumed = n is None and fallback_eval_images is not None
    chance = judge_accuracy(accuracy, n or fallback_eval_images, _int(params.get("num_classes")), assumed)
    if chance is not None:
        return chance
    if method == "fe":
        if str(params.get("classifier_converged", "true")).lower() == "false":
            return Verdict(CAPPED, f"The {params.get('classifier', 'classifier')} fit stopped at its iteration cap "
                                   "(max_iter) before converging; its score may not be final.")
        return Verdict(CONVERGED, "A linear classifier fitted to convergence on features extracted once.")
    if method in ("ft", "source", "quanta"):
        epochs_run = _int(metrics.get("epochs_run")) or len(losses) or _int(params.get("epochs")) or 0
        if method == "quanta":
            epochs_run = len(losses) or _int(params.get("nb_of_target_epochs")) or epochs_run
        cap = _int(params.get("epochs")) or _int(params.get("nb_of_target_epochs"))
        stopped = bool(_num(metrics.get("stopped_early")))
        patience = _int(params.get("patience")) or DEFAULT_PATIENCE
        return judge_training(losses, epochs_run, cap, stopped, patience)
    return None


def summarize(verdicts: Sequence[str | None]) -> Verdict | None:
    """A sweep's verdict from its points': converged only when every point converged."""
    known = [v for v in verdicts if isinstance(v, str) and v in RUN_VERDICTS]
    if not known:
        return None
    weak = [v for v in known if v in WEAK]
    if not weak:
        return Verdict(CONVERGED, f"All {len(known)} runs converged.")
    counts = {v: weak.count(v) for v in (DIVERGED, NEAR_CHANCE, CAPPED) if v in weak}
    worst = max(counts, key=lambda v: (counts[v], -RUN_VERDICTS.index(v)))
    parts = ", ".join(f"{c} {LABELS[v]}" for v, c in counts.items())
    return Verdict(worst, f"{len(weak)} of {len(known)} runs are weak evidence ({parts}); see each run's reason.")


# ---------------------------------------------------------------------------------------------
# QUANTA: a layer's lambda_S against the random-source control


@dataclass(frozen=True)
class LayerVerdict:
    """lambda_S of the trained source minus the control's at one layer, and what it shows.

    ``direction``: +1 the target keeps the source's features, -1 it prefers its own, 0 no signal.
    """

    layer: str
    quality: str
    direction: int
    delta: float
    low: float
    high: float
    n_trained: int
    n_control: int
    reason: str

    @property
    def meaning(self) -> str:
        if self.direction > 0:
            return "the target keeps the source's features"
        if self.direction < 0:
            return "the target prefers its own features"
        return "no signal"


def judge_layer(layer: str, trained: Sequence[float], control: Sequence[float],
                trained_start: Sequence[float] | None = None,
                margin: float = LAMBDA_SINGLE_RUN_MARGIN) -> LayerVerdict:
    """Compare a layer's final lambda_S over trained-source runs with the control's runs."""
    t = np.asarray([v for v in trained if np.isfinite(v)], dtype=float)
    c = np.asarray([v for v in control if np.isfinite(v)], dtype=float)
    if len(t) == 0 or len(c) == 0:
        return LayerVerdict(layer, NO_SIGNAL, 0, math.nan, math.nan, math.nan, len(t), len(c),
                            "No random-source control with the same settings: lambda_S alone is not a verdict.")
    delta, lo, hi = welch_interval(t, c)
    if trained_start is not None and len(trained_start):
        start = np.asarray([v for v in trained_start if np.isfinite(v)], dtype=float)
        moved = float(np.max(np.abs(t - float(np.mean(start))))) if len(start) else math.inf
        if moved < LAMBDA_STILL:
            return LayerVerdict(layer, NO_SIGNAL, 0, delta, lo, hi, len(t), len(c),
                                f"lambda_S hardly moved from its start (by at most {moved:.4f}): train longer or "
                                "give the QUANTA weights a larger learning rate (QUANTA weights' learning rate, "
                                "--quanta-lr).")
    if len(t) >= 2 and len(c) >= 2:
        if lo > 0 or hi < 0:
            direction = 1 if delta > 0 else -1
            return LayerVerdict(layer, SIGNAL, direction, delta, lo, hi, len(t), len(c),
                                f"lambda_S {'above' if direction > 0 else 'below'} the control by {delta:+.3f} "
                                f"(95% interval {lo:+.3f} to {hi:+.3f}, {len(t)} vs {len(c)} runs).")
        return LayerVerdict(layer, NO_SIGNAL, 0, delta, lo, hi, len(t), len(c),
                            f"lambda_S differs from the control by {delta:+.3f}, but the 95% interval "
                            f"({lo:+.3f} to {hi:+.3f}, {len(t)} vs {len(c)} runs) includes 0.")
    if abs(delta) > margin:
        direction = 1 if delta > 0 else -1
        return LayerVerdict(layer, SIGNAL, direction, delta, delta - margin, delta + margin, len(t), len(c),
                            f"lambda_S {'above' if direction > 0 else 'below'} the control by {delta:+.3f}, more "
                            f"than the {margin:.3f} that separate runs of one setting differ by (one run on a side: "
                            "add runs for an interval).")
    return LayerVerdict(layer, NO_SIGNAL, 0, delta, delta - margin, delta + margin, len(t), len(c),
                        f"lambda_S differs from the control by {delta:+.3f}, within the {margin:.3f} that separate "
                        "runs of one setting differ by.")
