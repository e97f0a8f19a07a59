"""Training-free transferability scores: rank backbones for a target task before fine-tuning any.

Each score reads what one forward pass gives (features, or the source head's probabilities) and
the target labels, and says how well a backbone should transfer; only the ORDER of the scores
over backbones means something, and only on the same labels (feature dimensions may differ).
:func:`rank_agreement` measures that order against accuracies reached by real training.

numpy and scipy only (no torch), float64 throughout: these are sums of many logs and
near-singular solves, where float32 rounding changes the ranking.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import linalg, stats

from tlcore.errors import TLError

#: Added to the alpha/beta update denominators of LogME so a perfectly fit class (zero residual)
#: stops at a large finite beta instead of inf. Applied to features scaled to unit spectral norm,
#: so it is the same for every scale of the same features.
LOGME_EPSILON = 1e-5


class ScoreInputError(TLError, ValueError):
    """Features, labels or probabilities that a score cannot use; the message says which and why."""


# ---- input checks: one sentence each ------------------------------------------------------------


def _labels(labels: Any, n: int | None = None, name: str = "labels") -> tuple[np.ndarray, int]:
    """Class codes 0..C-1 for any hashable labels; refuses what no score can rank with."""
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise ScoreInputError(f"{name} must be one label per sample (1-D); got shape {raw.shape}.")
    if n is not None and len(raw) != n:
        raise ScoreInputError(f"{name} has {len(raw)} entries but there are {n} samples: the lengths must match.")
    if len(raw) < 2:
        raise ScoreInputError(f"A score needs at least 2 samples; got {len(raw)}.")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise ScoreInputError(f"{name} contains NaN or infinite values.")
    classes, codes = np.unique(raw, return_inverse=True)
    if name == "labels" and len(classes) < 2:
        raise ScoreInputError(f"labels hold a single class ({classes[0]!r}): a score needs at least 2.")
    return codes.reshape(-1), len(classes)


def _matrix(values: Any, name: str) -> np.ndarray:
    """A finite float64 (samples x columns) matrix with at least 2 rows."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ScoreInputError(f"{name} must be a 2-D array (samples x dimensions); got shape {x.shape}.")
    if len(x) < 2:
        raise ScoreInputError(f"A score needs at least 2 samples; {name} has {len(x)}.")
    if not np.all(np.isfinite(x)):
        raise ScoreInputError(f"{name} contains NaN or infinite values.")
    return x


def _features_and_labels(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    f = _matrix(features, "features")
    y, n_classes = _labels(labels, len(f))
    return f, y, n_classes


def _probabilities(source_probs: Any, n: int | None = None) -> np.ndarray:
    """Rows of a source head's softmax, renormalised; logits are refused, not silently squashed."""
    p = _matrix(source_probs, "source_probs")
    if n is not None and len(p) != n:
        raise ScoreInputError(f"source_probs has {len(p)} rows but labels has {n} entries: the lengths must match.")
    sums = p.sum(axis=1)
    if p.min() < 0 or np.max(np.abs(sums - 1.0)) > 1e-3:
        raise ScoreInputError(
            "source_probs must be probabilities (non-negative rows summing to 1): pass the softmax of the "
            "source head, not its logits."
        )
    return p / sums[:, None]


def standardize_features(f: Any) -> np.ndarray:
    """Per-dimension z-score with this set's own mean and std, float64; a constant dimension becomes 0.

    Callers concatenate taps of very different scales; without this the largest tap would decide
    the covariance-based scores alone.
    """
    x = _matrix(f, "features")
    std = x.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (x - x.mean(axis=0)) / safe, 0.0)


def _class_sums(values: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class sums of the rows of ``values`` (classes x columns; a stack of sets keeps its leading axis), as one
    matrix product (np.add.at is ~10x slower, and a ranking takes thousands of these)."""
    return (y[None, :] == np.arange(n_classes)[:, None]).astype(np.float64) @ values


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, shifted by its maximum (scipy's logsumexp does the same behind ~0.5 ms of input
    handling per call, which a ranking pays thousands of times)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


# ---- LogME ----------------------------------------------------------------------------------------


def _logme_terms(x2: np.ndarray, rest: np.ndarray, sigma: np.ndarray, mask: np.ndarray, alpha: np.ndarray,
                 beta: np.ndarray) -> tuple[np.ndarray, ...]:
    """gamma, k - gamma, ||m||^2 and ||y - F m||^2 at (alpha, beta), one value per column, with t = alpha / beta.

    A column is one class of one feature set, all in the SVD basis of its set: x2 = (U^T y)^2, sigma = the
    eigenvalues of F^T F, rest = the part of ||y||^2 outside the column space of F. Sets of different rank k sit
    side by side zero-padded to the largest; ``mask`` (1 on a set's own k rows) keeps the padding out of k - gamma.
    """
    t = alpha / beta
    r = 1.0 / (sigma + t)
    tr = t * r
    gamma = np.sum(sigma * r, axis=0)
    unfit = np.sum(mask * tr, axis=0)  # k - gamma without the cancellation of k - gamma
    m2 = np.sum(sigma * x2 * r**2, axis=0)
    res2 = np.sum(x2 * tr**2, axis=0) + rest
    return gamma, unfit, m2, res2


def _logme_columns(x2: np.ndarray, rest: np.ndarray, sigma: np.ndarray, mask: np.ndarray, n: int, k: np.ndarray,
                   d: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, ...]:
    """MacKay's fixed point for every column at once: (log evidence, alpha, beta, iterations, converged), per column.

    Each column iterates exactly as it would alone: once its alpha and beta settle it is frozen, the others go on.
    ``k`` and ``d`` are each column's rank and feature dimension.
    """
    n_cols = x2.shape[1]
    alpha, beta = np.ones(n_cols), np.ones(n_cols)
    converged = np.zeros(n_cols, dtype=bool)
    iterations = np.zeros(n_cols, dtype=int)
    for _ in range(max_iter):
        live = np.flatnonzero(~converged)
        if not len(live):
            break
        gamma, unfit, m2, res2 = _logme_terms(x2[:, live], rest[live], sigma[:, live], mask[:, live], alpha[live],
                                              beta[live])
        new_alpha = gamma / (m2 + LOGME_EPSILON)
        new_beta = ((n - k[live]) + unfit) / (res2 + LOGME_EPSILON)  # N - gamma
        settled = (np.abs(new_alpha - alpha[live]) <= tol * alpha[live]) & (
            np.abs(new_beta - beta[live]) <= tol * beta[live])
        alpha[live], beta[live] = new_alpha, new_beta
        iterations[live] += 1
        converged[live[settled]] = True
    _, _, m2, res2 = _logme_terms(x2, rest, sigma, mask, alpha, beta)
    # log det A over all D eigenvalues: alpha + beta*sigma on F's k directions, alpha on the D - k others
    log_det = np.sum(mask * np.log(alpha + beta * sigma), axis=0) + (d - k) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2
    )
    return evidence, alpha, beta, iterations, converged


def thin_svd(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, singular values) of ``f`` from the eigen-decomposition of its smaller Gram matrix.

    Why: the scores need U and the singular values, never V; LAPACK's SVD of a 1,000 x 3,000 embedding
    computes V too and takes seconds on a small CPU, the N x N (or D x D) eigenproblem a fraction of that.
    Values below ~1e-8 of the largest lose relative precision (they are squared), which moves LogME by
    far less than its tolerance: those directions carry sigma / (sigma + alpha / beta) ~ 0.
    """
    n, d = f.shape
    if n <= d:
        w, u = np.linalg.eigh(f @ f.T)
        w, u = w[::-1], u[:, ::-1]
    else:
        w, v = np.linalg.eigh(f.T @ f)
        w, v = w[::-1], v[:, ::-1]
        s_all = np.sqrt(np.maximum(w, 0.0))
        keep = s_all > s_all[0] * 1e-12 if s_all[0] > 0 else np.zeros(len(s_all), dtype=bool)
        u = (f @ v[:, keep]) / s_all[keep]
        return u, s_all[keep]
    s_all = np.sqrt(np.maximum(w, 0.0))
    keep = s_all > s_all[0] * 1e-12 if s_all[0] > 0 else np.zeros(len(s_all), dtype=bool)
    return u[:, keep], s_all[keep]


def logme(
    features: Any, labels: Any, *, return_info: bool = False, tol: float = 1e-3, max_iter: int = 100,
    svd: tuple[np.ndarray, np.ndarray] | None = None,
) -> float | tuple[float, dict[str, Any]]:
    """LogME (You et al., ICML 2021): mean over classes of the maximum log evidence per sample.

    Why: the evidence of a Bayesian linear model y_c = F w + noise (prior w ~ N(0, 1/alpha), noise
    precision beta) says how well the features fit the one-hot column of each class without
    training anything. (alpha, beta) are set by MacKay's fixed point on ONE thin SVD of F shared by
    all classes, so N < D costs an N x N problem, never a D x D one; the log-determinant counts all
    D eigenvalues of F^T F (the D - k zero ones too), which public code that keeps only the nonzero
    ones gets wrong when N < D.

    Scale invariance: L(c^2 alpha, beta | cF) = L(alpha, beta | F) exactly, so the maximum does not
    depend on the scale of the features. The features are therefore scaled to unit spectral norm
    before iterating, which makes the epsilon (:data:`LOGME_EPSILON`) and the start (alpha = beta
    = 1) the same for every scale: logme(c * F) == logme(F) to rounding.

    Iterates until alpha and beta change by less than ``tol`` (relative) or ``max_iter``; a class
    that did not converge raises a RuntimeWarning (MacKay's iteration crawls when a class is barely
    explained and the maximum lies at alpha -> inf; the evidence is flat there). With ``return_info``
    returns (score, info), info holding "converged" (every class), and per class "iterations",
    "alpha" and "beta" (alpha for the features scaled to unit spectral norm). ``svd``: the (U, singular
    values) of ``features`` when the caller already has them (:func:`thin_svd`), so that one decomposition
    serves LogME and a PCA.
    """
    f, y, n_classes = _features_and_labels(features, labels)
    n, d = f.shape
    if svd is None:
        u, s, _ = np.linalg.svd(f, full_matrices=False)  # the one SVD, shared by every class
    else:
        u, s = svd
    if len(s) == 0 or s[0] == 0:
        raise ScoreInputError("features are all zero, so LogME has nothing to fit.")
    (evidence, alpha, beta, iterations, converged), = _logme_sets([(u, s, d)], y, n_classes, tol, max_iter)
    score = float(np.mean(evidence) / n)
    info = {
        "converged": bool(converged.all()),
        "iterations": [int(i) for i in iterations],
        "alpha": [float(a) for a in alpha],
        "beta": [float(b) for b in beta],
    }
    if not info["converged"]:
        warnings.warn(
            f"LogME: {int((~converged).sum())} of {n_classes} classes did not converge in {max_iter} "
            "iterations; the score is the evidence where the iteration stopped.",
            RuntimeWarning,
            stacklevel=2,
        )
    return (score, info) if return_info else score


def _logme_sets(sets: Sequence[tuple[np.ndarray, np.ndarray, int]], y: np.ndarray, n_classes: int, tol: float,
                max_iter: int) -> list[tuple[np.ndarray, ...]]:
    """The per-class fixed points of several feature sets of the same images, iterated side by side.

    Each set is (U, singular values, feature dimension). Sets are grouped by rank (within a factor of 2), so the
    zero padding never costs more than the sets themselves; each set's result is what it gets alone.
    """
    n = len(y)
    onehot = (y[:, None] == np.arange(n_classes)).astype(np.float64)
    prepared = []
    for u, s, d in sets:
        sigma = (s / s[0]) ** 2  # unit spectral norm: the same start and epsilon for every scale
        proj = u.T @ onehot
        rest = np.maximum(onehot.sum(axis=0) - np.sum(proj**2, axis=0), 0.0)
        prepared.append((proj**2, rest, sigma, d))
    results: list[tuple[np.ndarray, ...] | None] = [None] * len(sets)
    groups: dict[int, list[int]] = {}
    for i, (_, _, sigma, _) in enumerate(prepared):
        groups.setdefault(int(np.ceil(np.log2(max(len(sigma), 1)))), []).append(i)
    for members in groups.values():
        k_max = max(len(prepared[i][2]) for i in members)
        cols = len(members) * n_classes
        x2, sig, mask = np.zeros((k_max, cols)), np.zeros((k_max, cols)), np.zeros((k_max, cols))
        rest, k, d = np.zeros(cols), np.zeros(cols), np.zeros(cols)
        for j, i in enumerate(members):
            p2, r, sigma, dim = prepared[i]
            c = slice(j * n_classes, (j + 1) * n_classes)
            x2[: len(sigma), c], sig[: len(sigma), c], mask[: len(sigma), c] = p2, sigma[:, None], 1.0
            rest[c], k[c], d[c] = r, len(sigma), dim
        out = _logme_columns(x2, rest, sig, mask, n, k, d, tol, max_iter)
        for j, i in enumerate(members):
            c = slice(j * n_classes, (j + 1) * n_classes)
            results[i] = tuple(a[c] for a in out)
    return results  # type: ignore[return-value]


def logme_many(sets: Sequence[tuple[np.ndarray, np.ndarray, int]], labels: Any, *, tol: float = 1e-3,
               max_iter: int = 100) -> list[float]:
    """:func:`logme` of several feature sets of the same images (the whole embedding and each tap), at once.

    Why: a ranking scores dozens of sets per draw; iterating them side by side costs one pass of array work per
    step instead of dozens of small ones. Each set is (U, singular values, feature dimension), from
    :func:`thin_svd`; each score equals ``logme(features, labels, svd=(U, s))``, with its RuntimeWarning when a
    class did not converge.
    """
    y, n_classes = _labels(labels)
    for u, s, _ in sets:
        if u.shape[0] != len(y):
            raise ScoreInputError(f"features have {u.shape[0]} rows but labels has {len(y)} entries: the lengths "
                                  "must match.")
        if len(s) == 0 or s[0] == 0:
            raise ScoreInputError("features are all zero, so LogME has nothing to fit.")
    scores = []
    for evidence, _, _, _, converged in _logme_sets(sets, y, n_classes, tol, max_iter):
        if not converged.all():
            warnings.warn(f"LogME: {int((~converged).sum())} of {n_classes} classes did not converge in {max_iter} "
                          "iterations; the score is the evidence where the iteration stopped.", RuntimeWarning,
                          stacklevel=2)
        scores.append(float(np.mean(evidence) / len(y)))
    return scores


# ---- SFDA -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fisher:
    """Regularised Fisher discriminants of a stack of feature sets (the leading axis): projections, projected
    class means, log priors and each set's shrinkage."""

    projection: np.ndarray  # (sets, r, directions)
    means: np.ndarray  # (sets, classes, directions)
    log_priors: np.ndarray  # (classes,)
    shrinkage: np.ndarray  # (sets,)

    def log_proba(self, f: np.ndarray) -> np.ndarray:
        """log p(class | x) under the softmax of the linear discriminant in the projected space: (sets, n, classes)."""
        z = f @ self.projection
        logits = z @ self.means.transpose(0, 2, 1) - 0.5 * np.sum(self.means**2, axis=2)[:, None, :] + self.log_priors
        return _log_softmax(logits)


def _fit_fisher(f: np.ndarray, y: np.ndarray, n_classes: int, d_full: int, shrinkage: np.ndarray | None) -> _Fisher:
    """Shrink S_w toward (trace/D) I by lambda = exp(-5 * largest eigenvalue of S_w), then solve S_b w = e S_w w.

    ``f`` is a stack of feature sets of the same images and labels (sets x n x r): every step is one batched
    array operation, so a ranking's dozens of taps cost about what one does.
    """
    n, r = f.shape[1:]
    counts = np.bincount(y, minlength=n_classes)
    priors = counts / n
    means = _class_sums(f, y, n_classes) / counts[:, None]
    within = f - means[:, y]
    s_w = within.transpose(0, 2, 1) @ within / n
    centred = means - (priors @ means)[:, None, :]
    s_b = (centred * priors[:, None]).transpose(0, 2, 1) @ centred
    if shrinkage is None:
        largest = np.linalg.eigvalsh(s_w)[:, -1]
        shrinkage = np.maximum(np.exp(-5.0 * largest), 1e-10)
    # the trace-scaled target of Ledoit-Wolf; the floor keeps classes that are single points solvable
    total = np.sum((f - f.mean(axis=1, keepdims=True)) ** 2, axis=(1, 2)) / n
    mu = np.maximum(np.trace(s_w, axis1=1, axis2=2), 1e-12 * total) / d_full
    s_w_shrunk = (1.0 - shrinkage)[:, None, None] * s_w + (shrinkage * mu)[:, None, None] * np.eye(r)
    n_dirs = min(n_classes - 1, r)
    # S_b w = e S_w w through the Cholesky factor S_w = L L^T: the symmetric L^-1 S_b L^-T has the same
    # eigenvalues, and w = L^-T v satisfies w^T S_w w = I (what scipy's generalized eigh returns, without its
    # input handling, which costs more than the solve at a ranking's sizes)
    l_inv = np.linalg.inv(np.linalg.cholesky(s_w_shrunk))
    l_inv_t = l_inv.transpose(0, 2, 1)
    _, v = np.linalg.eigh(l_inv @ s_b @ l_inv_t)
    w = l_inv_t @ v[:, :, r - n_dirs:]
    return _Fisher(projection=w, means=means @ w, log_priors=np.log(priors), shrinkage=shrinkage)


def _sfda_stack(f: np.ndarray, y: np.ndarray, n_classes: int, d_full: int, self_challenging: bool) -> np.ndarray:
    """SFDA of each centred feature set of a stack (sets x n x r, r <= n): one value per set."""
    n = f.shape[1]
    rows = np.arange(n)
    model = _fit_fisher(f, y, n_classes, d_full, None)
    if self_challenging:
        soft = np.exp(_log_softmax(np.exp(model.log_proba(f))))
        p_own = soft[:, rows, y][:, :, None]
        means = _class_sums(f, y, n_classes) / np.bincount(y, minlength=n_classes)[:, None]
        others = (means.sum(axis=1, keepdims=True) - means) / (n_classes - 1)
        f = p_own * f + (1.0 - p_own) * others[:, y]
        model = _fit_fisher(f, y, n_classes, d_full, model.shrinkage)
    return np.mean(model.log_proba(f)[:, rows, y], axis=1)


def sfda(features: Any, labels: Any, *, self_challenging: bool = True) -> float:
    """SFDA (Huang et al., ECCV 2022): mean log-probability of the true class in a regularised Fisher space.

    Why: a backbone transfers well when a linear projection already pulls its classes apart; the
    Fisher projection with S_w shrunk by the paper's adaptive lambda = exp(-5 * sigma_max(S_w)) finds
    it without training, and the class-conditional Gaussian discriminant in that space says how
    confidently each sample lands in its own class. With ``self_challenging`` (the paper's
    ConfMix, on by default) every sample is first mixed toward the mean of the OTHER classes by its
    softened probability of its own class (p' = softmax of the probabilities, as the reference code
    does), and the score is taken on a second fit with the same lambda: hard classes then cost more.

    Differences from the reference code: it averages the probability (its comment: log "ignored
    in case of instability"); this averages the log-probability, computed stably with logsumexp.
    It scores with every generalized eigenvector (plain shrinkage LDA) and takes S_b = S_t - S_w
    after shrinking both; this uses the C-1 leading Fisher directions of the exact between-class
    scatter, which gives the same probabilities. N < D works in the row space of the centred data
    (exactly equivalent, the shrinkage target keeping trace/D of the full space).
    """
    f, y, n_classes = _features_and_labels(features, labels)
    n, d = f.shape
    f = f - f.mean(axis=0)
    if not np.any(f):
        raise ScoreInputError("features are constant, so SFDA has nothing to separate.")
    if n < d:
        _, s, vt = np.linalg.svd(f, full_matrices=False)
        f = f @ vt[s > s[0] * 1e-12].T
    return float(_sfda_stack(f[None], y, n_classes, d, self_challenging)[0])


def _stacks(feature_sets: Sequence[Any], labels: Any) -> tuple[dict[tuple[int, ...], list[int]], list[np.ndarray],
                                                                np.ndarray, int]:
    """Checked feature sets grouped by shape (the indices of each group), the sets, and the labels."""
    sets = [_matrix(f, "features") for f in feature_sets]
    y, n_classes = _labels(labels)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(sets):
        if len(f) != len(y):
            raise ScoreInputError(f"features have {len(f)} rows but labels has {len(y)} entries: the lengths must "
                                  "match.")
        groups.setdefault(f.shape, []).append(i)
    return groups, sets, y, n_classes


def sfda_many(feature_sets: Sequence[Any], labels: Any) -> list[float]:
    """:func:`sfda` of several feature sets of the same images (a ranking's taps), sets of one shape at once.

    Why: a ranking scores dozens of small sets per draw, and one SFDA is a handful of tiny matrix problems whose
    Python overhead outweighs their arithmetic; stacked, each step is one batched operation. Each value equals
    ``sfda(set, labels)``; a constant set, or one with fewer images than dimensions, goes through :func:`sfda`.
    """
    groups, sets, y, n_classes = _stacks(feature_sets, labels)
    out = [float("nan")] * len(sets)
    for (n, d), members in groups.items():
        stack = np.stack([sets[i] for i in members])
        stack = stack - stack.mean(axis=1, keepdims=True)
        plain = [j for j, _ in enumerate(members) if n >= d and np.any(stack[j])]
        for j, i in enumerate(members):
            if j not in plain:
                out[i] = sfda(sets[i], y)
        if plain:
            for j, v in zip(plain, _sfda_stack(stack[plain], y, n_classes, d, True), strict=True):
                out[members[j]] = float(v)
    return out


# ---- H-score --------------------------------------------------------------------------------------


def _ledoit_wolf_stack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shrunk covariances, shrinkages) of a stack of centred feature sets (sets x n x d)."""
    n, d = x.shape[1:]
    covariance = x.transpose(0, 2, 1) @ x / n
    if d == 1:
        return covariance, np.zeros(len(x))
    trace = np.trace(covariance, axis1=1, axis2=2)
    mu = trace / d
    beta_ = np.sum(np.sum(x**2, axis=2) ** 2, axis=1)
    delta_ = np.sum(covariance**2, axis=(1, 2))
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
    with np.errstate(divide="ignore", invalid="ignore"):
        shrinkage = np.where(beta == 0, 0.0, np.minimum(beta, delta) / delta)
    shrunk = (1.0 - shrinkage)[:, None, None] * covariance + (shrinkage * mu)[:, None, None] * np.eye(d)
    return shrunk, shrinkage


def ledoit_wolf(f: np.ndarray) -> tuple[np.ndarray, float]:
    """(shrunk covariance, shrinkage) of Ledoit & Wolf (2004), as scikit-learn's ``LedoitWolf().fit(f)`` gives them.

    Why not scikit-learn's estimator: its input checks cost ~3 ms per call, more than the estimate itself on a
    ranking's small blocks (thousands per ranking). The same formula, checked against it in the tests; the
    fourth-moment term uses sum_ij (X^2)^T X^2 = sum_k (sum_i x_ki^2)^2, which needs no D x D product.
    """
    shrunk, shrinkage = _ledoit_wolf_stack((f - f.mean(axis=0))[None])
    return shrunk[0], float(shrinkage[0])


def _hscore_stack(f: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """The H-score of each feature set of a stack (sets x n x d): one value per set."""
    n = f.shape[1]
    mean = f.mean(axis=1, keepdims=True)
    covariance, shrinkage = _ledoit_wolf_stack(f - mean)
    if not np.all(np.any(covariance, axis=(1, 2))):
        raise ScoreInputError("features are constant, so the H-score has nothing to measure.")
    counts = np.bincount(y, minlength=n_classes)
    means = (_class_sums(f, y, n_classes) / counts[:, None] - mean).transpose(0, 2, 1)  # (sets, d, classes)
    try:
        np.linalg.cholesky(covariance)  # positive definite: the solve is exact
        solved = np.linalg.solve(covariance, means)
    except np.linalg.LinAlgError:
        solved = np.stack([linalg.pinvh(c) @ m for c, m in zip(covariance, means, strict=True)])
    between = np.sum(counts / n * np.sum(means * solved, axis=1), axis=1)  # tr(Cov_a^-1 Cov(E[f|y]))
    return (1.0 - shrinkage) * between


def hscore(features: Any, labels: Any) -> float:
    """Regularised H-score (Bao et al. 2019; Ibrahim et al. 2022): (1 - a) tr(Cov_a(f)^-1 Cov(E[f|y])).

    Why: features transfer well when the class means spread far relative to the features' own
    covariance. The plain H-score inverts the sample covariance, which is singular when N < D and
    noisy otherwise; the Ledoit-Wolf shrunk covariance (:func:`ledoit_wolf`, shrinkage a) is always invertible.
    Both covariances are biased (1/N); public code takes 1/(N-1) for the class-mean one, a constant
    factor on the same labels that leaves every ranking unchanged.
    """
    f, y, n_classes = _features_and_labels(features, labels)
    return float(_hscore_stack(f[None], y, n_classes)[0])


def hscore_many(feature_sets: Sequence[Any], labels: Any) -> list[float]:
    """:func:`hscore` of several feature sets of the same images, sets of one shape at once (see
    :func:`sfda_many`); each value equals ``hscore(set, labels)``."""
    groups, sets, y, n_classes = _stacks(feature_sets, labels)
    out = [float("nan")] * len(sets)
    for members in groups.values():
        values = _hscore_stack(np.stack([sets[i] for i in members]), y, n_classes)
        for i, v in zip(members, values, strict=True):
            out[i] = float(v)
    return out


# ---- scores from the source head: LEEP, NCE --------------------------------------------------------


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP (Nguyen et al., ICML 2020): mean log-likelihood of the labels under the source head re-labelled.

    Why: the empirical P(y | z) between the source head's classes z and the target labels turns
    the source classifier into a target classifier for free; its log-likelihood says how much of
    the target the source head already knows. A uniform source scores -H(Y) (its floor for these
    labels). The SFDA reference code drops the log; this keeps it, as the paper does.
    """
    y, n_classes = _labels(labels)
    p = _probabilities(source_probs, len(y))
    n = len(y)
    joint = _class_sums(p / n, y, n_classes)  # P(y, z)
    p_z = joint.sum(axis=0)
    p_y_given_z = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    eep = np.sum(p * p_y_given_z[y], axis=1)  # P(y_i | x_i), > 0 whenever row i sums to 1
    return float(np.mean(np.log(eep)))


def nce(source_labels: Any, labels: Any) -> float:
    """NCE (Tran et al., ICCV 2019): the negative conditional entropy -H(Y | Z) of target labels given source labels.

    Why: if the source head's hard prediction z tells the target label, little uncertainty is left:
    0 for a perfectly informative source, -H(Y) for an independent one. ``source_labels`` is the
    source's hard predictions (1-D) or its probabilities (N x Z), whose argmax is taken, so it is
    called like :func:`leep`.
    """
    y, n_classes = _labels(labels)
    z_raw = np.asarray(source_labels)
    if z_raw.ndim == 2:
        z_raw = np.argmax(_probabilities(z_raw, len(y)), axis=1)
    z, n_source = _labels(z_raw, len(y), name="source_labels")
    joint = np.bincount(y * n_source + z, minlength=n_classes * n_source).reshape(n_classes, n_source) / len(y)
    p_z = joint.sum(axis=0)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / p_z)[nz])))


# ---- the table and the check against real training ------------------------------------------------


@dataclass(frozen=True)
class Score:
    """One score as tables and pages show it: what it needs, which way is better, what it means."""

    function: Callable[[Any, Any], float]
    needs: Literal["features", "source_probs"]
    higher_is_better: bool
    label: str
    description: str


#: Every score by name, in the order pages list them; each is called ``function(needs, labels)``.
SCORES: dict[str, Score] = {
    "logme": Score(logme, "features", True, "LogME",
                   "Evidence of a Bayesian linear model from the features to each class, per sample."),
    "sfda": Score(sfda, "features", True, "SFDA",
                  "Log-probability of the true class after a regularised Fisher projection of the features."),
    "hscore": Score(hscore, "features", True, "H-score (shrinkage)",
                    "Spread of the class means relative to the shrunk covariance of the features."),
    "leep": Score(leep, "source_probs", True, "LEEP",
                  "Log-likelihood of the labels under the source head's classes mapped to the target classes."),
    "nce": Score(nce, "source_probs", True, "NCE",
                 "Negative entropy of the label given the source head's predicted class."),
}


def rank_agreement(scores: Sequence[float], accuracies: Sequence[float]) -> dict[str, float | int | None]:
    """How well scores order backbones as their real accuracies do: Kendall's tau and weighted tau.

    The weighted tau (scipy's hyperbolic weights, the SFDA paper's measure) counts swaps near the
    top more, since picking the best backbone is what a ranking is for. With fewer than 3 items
    (a tau on 2 means nothing) or no order at all (all ties) the taus are None.
    """
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if s.ndim != 1 or a.ndim != 1 or len(s) != len(a):
        raise ScoreInputError(f"scores and accuracies must be two lists of equal length; got {s.shape} and {a.shape}.")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(a))):
        raise ScoreInputError("scores and accuracies must be finite numbers (no NaN).")
    n = len(s)
    if n < 3:
        return {"n": n, "kendall_tau": None, "weighted_tau": None}
    tau = float(stats.kendalltau(s, a).statistic)
    weighted = float(stats.weightedtau(s, a).statistic)
    return {
        "n": n,
        "kendall_tau": None if np.isnan(tau) else tau,
        "weighted_tau": None if np.isnan(weighted) else weighted,
    }
