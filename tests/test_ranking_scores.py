"""Training-free transferability scores (tlcore.methods.ranking.scores): what a user ranking backbones relies on.

Expected values come from independent routes written here: the closed-form evidence maximised by
scipy.optimize, the D x D eigen-decomposition, sklearn's shrinkage LDA, and hand-worked tables.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy import optimize
from sklearn.covariance import LedoitWolf
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from tlcore.errors import TLError
from tlcore.methods.ranking.scores import (
    LOGME_EPSILON,
    SCORES,
    hscore,
    hscore_many,
    ledoit_wolf,
    leep,
    logme,
    logme_many,
    nce,
    rank_agreement,
    sfda,
    sfda_many,
    standardize_features,
    thin_svd,
)

FEATURE_SCORES = [logme, sfda, hscore]


def one_hot_features(noise: float, n: int = 200, n_classes: int = 4, dim: int = 8, seed: int = 1):
    """Features whose first n_classes dimensions are the one-hot label, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    f = np.zeros((n, dim))
    f[np.arange(n), y] = 1.0
    return f + noise * rng.standard_normal((n, dim)), y


def informative_wide(n: int = 20, dim: int = 200, n_classes: int = 4, seed: int = 2):
    """N < D: a random class centre per class in D dimensions, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.standard_normal((n_classes, dim))
    return centres[y] + 0.5 * rng.standard_normal((n, dim)), y


# ---- what the scores say about good and bad features ---------------------------------------------


@pytest.mark.parametrize("score", FEATURE_SCORES, ids=lambda f: f.__name__)
def test_label_features_score_far_above_noise_and_fall_as_noise_grows(score):
    clean, y = one_hot_features(0.05)
    random = np.random.default_rng(3).standard_normal(clean.shape)
    levels = [score(one_hot_features(noise)[0], y) for noise in (0.05, 0.3, 1.0)]
    assert levels[0] > levels[1] > levels[2], levels
    assert levels[2] > score(random, y)
    gap = levels[0] - score(random, y)
    assert gap > 1.0, f"{score.__name__}: one-hot {levels[0]:.3f} is not far above noise"


@pytest.mark.parametrize("score", FEATURE_SCORES, ids=lambda f: f.__name__)
def test_more_dimensions_than_samples_gives_finite_scores(score):
    f, y = informative_wide()
    value = score(f, y)
    assert np.isfinite(value)


# ---- LogME against independent computations -------------------------------------------------------


def closed_form_evidence(f: np.ndarray, y: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """log p(y | F, alpha, beta) of the Bayesian linear model, straight from its formula (np.linalg)."""
    n, d = f.shape
    alpha, beta = np.exp(log_alpha), np.exp(log_beta)
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, log_det = np.linalg.slogdet(a)
    return (
        d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * m @ m - log_det / 2
    )


def test_logme_equals_the_evidence_maximised_by_scipy():
    rng = np.random.default_rng(4)
    n, n_classes = 40, 3
    y = np.arange(n) % n_classes
    f = rng.standard_normal((n_classes, 3))[y] * 0.8 + rng.standard_normal((n, 3)) * 1.5  # overlapping classes
    best = []
    for c in range(n_classes):
        target = (y == c).astype(np.float64)
        result = optimize.minimize(
            lambda p, t=target: -closed_form_evidence(f, t, p[0], p[1]), x0=[0.0, 0.0], method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
        )
        assert result.success and result.x[0] < 10  # an interior maximum (alpha ~ 1e2), not alpha -> inf
        best.append(-result.fun)
    score, info = logme(f, y, return_info=True)
    assert info["converged"]
    assert score == pytest.approx(np.mean(best) / n, abs=1e-6)  # measured: 1e-9


def logme_dxd(f: np.ndarray, y: np.ndarray, tol: float = 1e-3, max_iter: int = 100) -> float:
    """The same recipe (unit spectral norm, start 1/1, same epsilon and stop rule) through eigh of F^T F, D x D."""
    f = f / np.linalg.norm(f, 2)
    n, d = f.shape
    lam, v = np.linalg.eigh(f.T @ f)
    lam = np.clip(lam, 0.0, None)
    evidences = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        alpha = beta = 1.0
        ft_t = v.T @ (f.T @ t)  # F^T y in the eigenbasis of F^T F
        for _ in range(max_iter):
            m = beta * v @ (ft_t / (alpha + beta * lam))  # beta A^-1 F^T y, A = alpha I + beta F^T F (D x D)
            gamma = np.sum(beta * lam / (alpha + beta * lam))
            new_alpha = gamma / (m @ m + LOGME_EPSILON)
            new_beta = (n - gamma) / (np.sum((t - f @ m) ** 2) + LOGME_EPSILON)
            done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m = beta * v @ (ft_t / (alpha + beta * lam))
        evidences.append(
            d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((t - f @ m) ** 2) - alpha / 2 * m @ m - np.sum(np.log(alpha + beta * lam)) / 2
        )
    return float(np.mean(evidences) / n)


def test_logme_with_fewer_samples_than_dimensions_matches_the_dxd_route():
    f, y = informative_wide()
    score, info = logme(f, y, return_info=True)
    assert info["converged"]
    assert score == pytest.approx(logme_dxd(f, y), rel=1e-6)


@pytest.mark.parametrize("shape", [(60, 6), (20, 200)], ids=["N>D", "N<D"])
def test_logme_ignores_the_scale_of_the_features(shape):
    rng = np.random.default_rng(5)
    y = np.arange(shape[0]) % 3
    f = rng.standard_normal((3, shape[1]))[y] + rng.standard_normal(shape)
    base = logme(f, y)
    for factor in (100.0, 0.01):
        assert logme(f * factor, y) == pytest.approx(base, rel=1e-6)


def test_logme_of_a_perfectly_fit_class_is_finite():
    rng = np.random.default_rng(6)
    y = np.arange(50) % 2
    f = np.column_stack([y.astype(np.float64), rng.standard_normal((50, 4))])  # feature 0 IS the label
    score, info = logme(f, y, return_info=True)
    assert np.isfinite(score)
    assert all(np.isfinite(info["beta"]))
    assert score > logme(f[:, 1:], y) + 1.0


def test_logme_says_when_the_cap_stopped_it():
    f, y = one_hot_features(0.3)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, info = logme(f, y, return_info=True, max_iter=1)
    assert info["converged"] is False
    assert info["iterations"] == [1, 1, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert logme(f, y, return_info=True)[1]["converged"]


def test_logme_accepts_float32_and_any_label_values():
    f, y = one_hot_features(0.3)
    names = np.array(["cat", "dog", "eel", "fox"])[y]
    assert logme(f.astype(np.float32), names) == pytest.approx(logme(f, y), rel=1e-6)


# ---- SFDA and H-score against independent computations ---------------------------------------------


def test_sfda_without_self_challenging_is_sklearns_shrinkage_lda_log_probability():
    rng = np.random.default_rng(7)
    n, d = 90, 5
    y = np.arange(n) % 3
    f = rng.standard_normal((3, d))[y] + 0.9 * rng.standard_normal((n, d))
    within = f - np.array([f[y == c].mean(axis=0) for c in range(3)])[y]
    lam = max(np.exp(-5 * np.linalg.eigvalsh(within.T @ within / n)[-1]), 1e-10)  # the paper's lambda
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=lam).fit(f, y)
    expected = np.mean(lda.predict_log_proba(f)[np.arange(n), y])
    assert sfda(f, y, self_challenging=False) == pytest.approx(expected, rel=1e-6)


def test_sfda_self_challenging_is_harder_on_overlapping_classes():
    f, y = one_hot_features(1.0)
    assert sfda(f, y) < sfda(f, y, self_challenging=False)


def test_hscore_is_the_shrunk_covariance_trace_formula():
    f, y = one_hot_features(0.5, dim=6)
    lw = LedoitWolf().fit(f)
    g = np.array([f[y == c].mean(axis=0) for c in range(4)])[y]  # E[f | y] per sample
    cov_g = np.cov(g, rowvar=False, bias=True)
    expected = (1 - lw.shrinkage_) * np.trace(np.linalg.inv(lw.covariance_) @ cov_g)
    assert hscore(f, y) == pytest.approx(expected, rel=1e-9)


def test_standardize_features_zscores_each_dimension_and_zeroes_constant_ones():
    rng = np.random.default_rng(8)
    f = np.column_stack([rng.normal(5, 100, 30), np.full(30, 7.0), rng.normal(0, 1e-3, 30)]).astype(np.float32)
    z = standardize_features(f)
    assert z.dtype == np.float64
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), [1.0, 0.0, 1.0], atol=1e-12)
    assert np.all(z[:, 1] == 0.0)


# ---- LEEP and NCE: hand-worked ---------------------------------------------------------------------


def entropy(labels) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def test_leep_of_a_hand_worked_table():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 0, 1])
    # P(y,z) = [[1.4, 0.6], [0.2, 0.8]] / 3; P(z) = [1.6, 1.4] / 3; P(y|z) = [[7/8, 3/7], [1/8, 4/7]]
    # EEP of each sample: 0.8*7/8 + 0.2*3/7 = 5.5/7, 0.6*7/8 + 0.4*3/7 = 4.875/7, 0.2/8 + 0.8*4/7 = 3.375/7
    expected = np.mean(np.log([5.5 / 7, 4.875 / 7, 3.375 / 7]))
    assert leep(probs, y) == pytest.approx(expected, rel=1e-12)


def test_leep_of_a_uniform_source_is_minus_the_label_entropy_and_a_matching_source_scores_higher():
    y = np.array([0, 0, 0, 1, 2, 2])
    uniform = np.full((6, 5), 0.2)
    # every P(y|x) is sum_z P(y|z)/5 with P(y|z) = P(y): LEEP = mean log P(y_i) = -H(Y)
    assert leep(uniform, y) == pytest.approx(-entropy(y), rel=1e-12)
    matching = np.full((6, 3), 0.05)
    matching[np.arange(6), [2, 2, 2, 0, 1, 1]] = 0.9  # source class k <-> target class, one to one
    assert leep(matching, y) > leep(uniform, y) + 0.5
    assert leep(matching, y) < 0.0


def test_nce_is_zero_for_an_informative_source_and_minus_entropy_for_an_independent_one():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert nce(np.array([5, 4, 7, 7, 1, 1]), y) == pytest.approx(0.0, abs=1e-12)  # each source class -> one label
    y2 = np.array([0, 0, 1, 1])
    independent = np.array([0, 1, 0, 1])  # P(y, z) = P(y) P(z)
    assert nce(independent, y2) == pytest.approx(-np.log(2), rel=1e-12)
    assert nce(independent, y2) == pytest.approx(-entropy(y2), rel=1e-12)


def test_nce_takes_the_argmax_of_source_probabilities():
    rng = np.random.default_rng(9)
    probs = rng.dirichlet(np.ones(6), size=40)
    y = rng.integers(0, 3, 40)
    assert nce(probs, y) == pytest.approx(nce(probs.argmax(axis=1), y), rel=1e-12)


# ---- the table and rank agreement --------------------------------------------------------------------


def test_scores_table_names_inputs_and_direction():
    assert list(SCORES) == ["logme", "sfda", "hscore", "leep", "nce"]
    f, y = one_hot_features(0.3, n=40)
    probs = np.random.default_rng(10).dirichlet(np.ones(5), size=40)
    for name, entry in SCORES.items():
        assert entry.higher_is_better and entry.label and entry.description.endswith(".")
        value = entry.function(f if entry.needs == "features" else probs, y)
        assert np.isfinite(value), name


def test_rank_agreement_identical_reversed_and_too_few():
    same = rank_agreement([1, 2, 3, 4], [10, 20, 30, 40])
    assert same["n"] == 4
    assert same["kendall_tau"] == pytest.approx(1.0) and same["weighted_tau"] == pytest.approx(1.0)
    reversed_ = rank_agreement([1, 2, 3, 4], [40, 30, 20, 10])
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)
    assert reversed_["weighted_tau"] == pytest.approx(-1.0)
    assert rank_agreement([1, 2], [2, 1]) == {"n": 2, "kendall_tau": None, "weighted_tau": None}


def test_rank_agreement_weighs_a_swap_at_the_top_more_hand_worked():
    # Both lists swap one adjacent pair: 5 concordant, 1 discordant of 6 pairs, so Kendall's tau = 4/6.
    # Weighted tau: item at rank r weighs 1/(r+1); a pair weighs the sum; all 6 pairs weigh 3*(1+1/2+1/3+1/4) = 25/4.
    top = rank_agreement([1, 2, 3, 4], [1, 2, 4, 3])  # swap of ranks 0 and 1: 1 + 1/2 = 3/2
    bottom = rank_agreement([1, 2, 3, 4], [2, 1, 3, 4])  # swap of ranks 2 and 3: 1/3 + 1/4 = 7/12
    assert top["kendall_tau"] == pytest.approx(2 / 3) and bottom["kendall_tau"] == pytest.approx(2 / 3)
    assert top["weighted_tau"] == pytest.approx((25 / 4 - 2 * 3 / 2) / (25 / 4))  # 0.52
    assert bottom["weighted_tau"] == pytest.approx((25 / 4 - 2 * 7 / 12) / (25 / 4))  # 0.8133


# ---- bad input: one sentence, ValueError -------------------------------------------------------------


def one_sentence(message: str) -> bool:
    return message.endswith(".") and "\n" not in message and not re.search(r"[.:]\s+[A-Z]", message)


def bad_inputs():
    f, y = one_hot_features(0.3, n=12)
    nan = f.copy()
    nan[3, 2] = np.nan
    probs = np.full((12, 3), 1 / 3)
    cases = []
    for fn in FEATURE_SCORES:
        cases += [
            (fn, (f, y[:-1]), "lengths must match"),
            (fn, (f, np.zeros(12, dtype=int)), "single class"),
            (fn, (nan, y), "NaN"),
            (fn, (f[:1], y[:1]), "at least 2 samples"),
        ]
    for fn in (leep, nce):
        cases += [
            (fn, (probs, y[:-1]), "lengths must match"),
            (fn, (probs, np.zeros(12, dtype=int)), "single class"),
            (fn, (probs[:1], y[:1]), "at least 2 samples"),
        ]
    cases += [
        (logme, (np.zeros((12, 8)), y), "features are all zero, so LogME has nothing to fit."),
        (hscore, (np.ones((12, 8)), y), "features are constant, so the H-score has nothing to measure."),
        (sfda, (np.ones((12, 8)), y), "features are constant, so SFDA has nothing to separate."),
        (leep, (np.log(probs), y), "not its logits"),
        (standardize_features, (nan,), "NaN"),
        (rank_agreement, ([1, 2, 3], [1, 2]), "equal length"),
        (rank_agreement, ([1, np.nan, 3], [1, 2, 3]), "NaN"),
    ]
    return [pytest.param(fn, args, says, id=f"{fn.__name__}: {says}") for fn, args, says in cases]


@pytest.mark.parametrize(("fn", "args", "says"), bad_inputs())
def test_bad_input_is_refused_in_one_sentence(fn, args, says):
    with pytest.raises(ValueError) as caught:
        fn(*args)
    message = str(caught.value)
    assert says in message
    assert one_sentence(message), message


def test_logme_stops_at_its_cap_of_100_iterations_by_default_and_counts_them():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((20, 200)), np.arange(20) % 2  # no signal: the maximum lies at alpha -> inf
    with pytest.warns(RuntimeWarning, match="1 of 2|2 of 2"):
        _, info = logme(f, y, return_info=True)
    assert max(info["iterations"]) == 100 and info["converged"] is False
    _, settled = logme(*one_hot_features(0.3), return_info=True)
    assert settled["converged"] and all(1 < i < 100 for i in settled["iterations"])  # each class counts its own


def test_probabilities_within_the_tolerance_are_renormalised_and_a_zero_probability_is_allowed():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(4), size=40)
    y = np.arange(40) % 3
    assert leep(p * 1.0005, y) == pytest.approx(leep(p, y), rel=1e-12)  # rows summing to 1.0005: divided back
    p[0] = [1.0, 0.0, 0.0, 0.0]
    assert np.isfinite(leep(p, y)) and np.isfinite(nce(p, y))


def test_nce_ignores_source_classes_the_head_never_predicts():
    # source predictions use classes 0 and 1 of 5 columns: P(y | z) of the empty ones must not be 0/0
    y = np.array([0, 0, 1, 1, 0, 1])
    probs = np.zeros((6, 5))
    probs[np.arange(6), [0, 0, 1, 1, 1, 1]] = 1.0
    # by hand: z=0 -> y=(0,0): H=0; z=1 -> y=(1,1,0,1): H=-(1/4 log 1/4 + 3/4 log 3/4); P(z=1)=4/6
    expected = -(4 / 6) * -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    assert nce(probs, y) == pytest.approx(expected, rel=1e-12)


def test_thin_svd_of_small_values_keeps_them():
    from tlcore.methods.ranking.scores import thin_svd

    f = np.random.default_rng(3).normal(size=(200, 30)) * 1e-3  # every eigenvalue of F^T F below 1
    np.testing.assert_allclose(thin_svd(f)[1], np.linalg.svd(f, compute_uv=False), rtol=1e-9)
    np.testing.assert_allclose(thin_svd(f.T)[1], np.linalg.svd(f.T, compute_uv=False), rtol=1e-9)


@pytest.mark.parametrize("shape", [(30, 200), (200, 30)])
def test_thin_svd_matches_lapack_and_logme_reads_it_unchanged(shape):
    from tlcore.methods.ranking.scores import thin_svd

    rng = np.random.default_rng(5)
    f = rng.normal(size=shape)
    y = np.arange(shape[0]) % 3
    u, s = thin_svd(f)
    u_ref, s_ref, _ = np.linalg.svd(f, full_matrices=False)
    np.testing.assert_allclose(s, s_ref, rtol=1e-9)
    np.testing.assert_allclose(np.abs(u.T @ u_ref), np.eye(len(s)), atol=1e-6)  # the same directions, up to sign
    assert logme(f, y, svd=(u, s)) == pytest.approx(logme(f, y), rel=1e-9)


def test_logme_of_many_sets_side_by_side_equals_each_alone():
    """The whole embedding and the taps of a ranking are iterated side by side, zero-padded to a common rank;
    each must get exactly what it gets alone (sets of rank 3 to 80, N < D and N > D, a barely explained one)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 10)
    onehot = np.eye(10)[y]
    blocks = [rng.normal(size=(100, d)) + y[:, None] * 0.1 for d in (3, 12, 40, 80, 200)]  # d=80: a class crawls
    blocks += [np.hstack([onehot, rng.normal(size=(100, 20))]),
               rng.normal(size=(100, 40)) * 1e3 + onehot @ rng.normal(size=(10, 40))]
    sets = [(*thin_svd(b - b.mean(axis=0)), b.shape[1]) for b in blocks]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        alone = [logme(b - b.mean(axis=0), y) for b in blocks]
        n_alone = len(caught)
        together = logme_many(sets, y)
    assert n_alone >= 1 and len(caught) == 2 * n_alone  # a set that does not converge warns as it does alone
    np.testing.assert_allclose(together, alone, rtol=1e-9)
    assert len({round(v, 6) for v in together}) == len(blocks)  # distinct sets, distinct scores


@pytest.mark.parametrize("shape", [(50, 1), (40, 7), (12, 30), (200, 64)])
def test_ledoit_wolf_equals_scikit_learns_estimator(shape):
    rng = np.random.default_rng(sum(shape))
    f = rng.normal(size=shape) * rng.uniform(0.1, 10, size=shape[1]) + 3.0  # uneven scales, not centred
    covariance, shrinkage = ledoit_wolf(f)
    reference = LedoitWolf().fit(f)
    assert shrinkage == pytest.approx(reference.shrinkage_, abs=1e-12)
    np.testing.assert_allclose(covariance, reference.covariance_, rtol=1e-10, atol=1e-12)


def test_sfda_and_hscore_of_many_sets_at_once_equal_each_alone():
    """A ranking's taps are scored stacked by shape; each set must get what it gets alone: sets of three shapes
    (one with fewer images than dimensions, which SFDA reads in its row space), in mixed order."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 8)
    onehot = np.eye(5)[y]
    sets = [rng.normal(size=(40, 6)) + onehot @ rng.normal(size=(5, 6)) * s for s in (0.0, 0.5, 2.0)]
    sets += [rng.normal(size=(40, 10)) * 3 + 1, rng.normal(size=(40, 60)) + onehot @ rng.normal(size=(5, 60))]
    sets += [rng.normal(size=(40, 10)) + onehot @ rng.normal(size=(5, 10))]
    for many, one in ((sfda_many, sfda), (hscore_many, hscore)):
        np.testing.assert_allclose(many(sets, y), [one(f, y) for f in sets], rtol=1e-9)
    assert sfda_many(sets[:3], y) == sorted(sfda_many(sets[:3], y))  # more class signal, higher score
    with pytest.raises(TLError, match="constant"):
        sfda_many([sets[0], np.ones((40, 6))], y)
    with pytest.raises(TLError, match="constant"):
        hscore_many([sets[0], np.ones((40, 6))], y)
