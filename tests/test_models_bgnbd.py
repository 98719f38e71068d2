"""BG/NBD against values computed independently of its closed forms.

The reference values integrate the model's definition numerically: a
customer's purchase rate lambda ~ Gamma(r, alpha) and drop-out probability
p ~ Beta(a, b) are integrated out with scipy.integrate, using the individual
likelihood (1-p)^x lambda^x e^(-lambda T) [+ p (1-p)^(x-1) lambda^x e^(-lambda t_x)]
(FHL 2005, eq. 3), Bayes for P(alive), and E[purchases in t | alive, lambda, p]
= (1 - e^(-lambda p t)) / p (FHL 2005, eq. 7) for the expectation. No
hypergeometric function or Beta/Gamma closed form is involved.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special

from portrait.core.config import Conf
from portrait.models import bgnbd, load_settings
from portrait.models.bgnbd import BGNBDParams

CDNOW = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # FHL 2005, Table 1 (weeks)
STEADY = BGNBDParams(r=0.8, alpha=12.0, a=2.1, b=5.0)  # a > 1 and r > 1/2: the other regime of the integrands
PENALTY = load_settings(Conf())["bgnbd"]["penalty"]  # the strength the model stage fits with


def mixed(params: BGNBDParams, integrand, peak: float) -> float:
    """E over lambda ~ Gamma(r, alpha), p ~ Beta(a, b) of integrand(lambda, p).

    Substituting lambda = v^(1/r) and p = u^(1/a) removes the densities'
    singularities at 0; the v range is split at the integrand's peak.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    const = alpha**r / special.gamma(r) / r / (a * special.beta(a, b))

    def f(v, u):
        lam, p = v ** (1 / r), u ** (1 / a)
        return const * np.exp(-alpha * lam) * (1 - p) ** (b - 1) * integrand(lam, p)

    v_peak = peak**r
    opts = {"epsabs": 0, "epsrel": 1e-10, "limit": 200}
    return sum(
        integrate.nquad(f, [piece, (0, 1)], opts=[opts, opts])[0] for piece in [(0, v_peak), (v_peak, 2 * v_peak), (2 * v_peak, np.inf)]
    )


def reference(params: BGNBDParams, x: int, t_x: float, T: float, t: float) -> tuple[float, float, float]:
    """(log-likelihood, P(alive), expected purchases in the next t) by numerical integration."""
    peak = max(x, 0.5) / (params.alpha + T)
    alive = mixed(params, lambda lam, p: (1 - p) ** x * lam**x * np.exp(-lam * T), peak)
    dropped = (
        mixed(params, lambda lam, p: p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x), max(x, 0.5) / (params.alpha + t_x))
        if x > 0
        else 0.0
    )
    future = mixed(params, lambda lam, p: (1 - np.exp(-lam * p * t)) / p * (1 - p) ** x * lam**x * np.exp(-lam * T), peak)
    likelihood = alive + dropped
    return float(np.log(likelihood)), alive / likelihood, future / likelihood


CUSTOMERS = [  # (x, t_x, T): no repeat, one early repeat, the FHL example, a regular, a heavy buyer who stopped
    (0, 0.0, 38.86),
    (1, 1.71, 38.86),
    (2, 30.43, 38.86),
    (7, 29.43, 35.0),
    (26, 30.86, 31.0),
    (12, 5.0, 60.0),
]


@pytest.mark.parametrize("params", [CDNOW, STEADY], ids=["cdnow", "steady"])
@pytest.mark.parametrize("x, t_x, T", CUSTOMERS)
def test_closed_forms_match_the_integrated_model_definition(params, x, t_x, T):
    log_likelihood, alive, expected = reference(params, x, t_x, T, t=39.0)
    assert bgnbd.log_likelihood(params, [x], [t_x], [T])[0] == pytest.approx(log_likelihood, abs=1e-6)
    assert bgnbd.p_alive(params, [x], [t_x], [T])[0] == pytest.approx(alive, abs=1e-6)
    assert bgnbd.expected_purchases(params, 39.0, [x], [t_x], [T])[0] == pytest.approx(expected, abs=1e-6)


def test_hand_derived_values_for_customers_without_repeat_purchases():
    """x = 0: L = E[e^(-lambda T)] = (alpha / (alpha + T))^r, and nothing says they dropped out."""
    T = np.array([0.0, 10.0, 38.86])
    expected = CDNOW.r * np.log(CDNOW.alpha / (CDNOW.alpha + T))
    np.testing.assert_allclose(bgnbd.log_likelihood(CDNOW, [0, 0, 0], [0, 0, 0], T), expected, atol=1e-12)
    np.testing.assert_array_equal(bgnbd.p_alive(CDNOW, [0, 0, 0], [0, 0, 0], T), 1.0)


def test_published_cdnow_example():
    """FHL 2005: 2 repeat purchases, the last in week 30.43 of 38.86 -> 1.226 expected in the next 39 weeks."""
    assert bgnbd.expected_purchases(CDNOW, 39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=5e-4)


def test_p_alive_falls_with_the_silence_since_the_last_purchase():
    alive = bgnbd.p_alive(CDNOW, [5, 5, 5], [10.0, 20.0, 30.0], [31.0, 31.0, 31.0])
    assert list(alive) == sorted(alive) and 0 < alive[0] < alive[-1] <= 1


def simulate(params: BGNBDParams, customers: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers following the BG/NBD story: buy at rate lambda, drop out after a repeat purchase with p."""
    lam = rng.gamma(params.r, 1 / params.alpha, customers)
    p = rng.beta(params.a, params.b, customers)
    T = rng.integers(60, 365, customers).astype(float)
    x, t_x = np.zeros(customers), np.zeros(customers)
    for i in range(customers):
        t = rng.exponential(1 / lam[i])
        while t <= T[i]:
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < p[i]:
                break
            t += rng.exponential(1 / lam[i])
    return x, t_x, T


def test_fit_recovers_the_parameters_of_simulated_customers():
    true = BGNBDParams(r=0.5, alpha=10.0, a=0.8, b=3.0)
    x, t_x, T = simulate(true, 8000, np.random.default_rng(5))
    fitted, total = bgnbd.fit(x, t_x, T)
    assert total >= bgnbd.log_likelihood(true, x, t_x, T).sum()  # it is the maximum
    assert total == pytest.approx(bgnbd.log_likelihood(fitted, x, t_x, T).sum())
    assert fitted.r == pytest.approx(true.r, rel=0.15)
    assert fitted.alpha == pytest.approx(true.alpha, rel=0.2)
    assert fitted.a == pytest.approx(true.a, rel=0.3)
    assert fitted.b == pytest.approx(true.b, rel=0.3)
    assert fitted.r / fitted.alpha == pytest.approx(true.r / true.alpha, rel=0.1)  # the mean purchase rate


def test_params_round_trip_through_json():
    stored = json.loads(json.dumps(CDNOW.to_dict()))
    assert BGNBDParams.from_dict(stored) == CDNOW


def test_inconsistent_histories_are_refused():
    with pytest.raises(ValueError, match="recency"):
        bgnbd.p_alive(CDNOW, [1], [40.0], [30.0])
    with pytest.raises(ValueError, match="recency"):
        bgnbd.log_likelihood(CDNOW, [0], [3.0], [30.0])


def test_customer_summary_counts_repeat_purchase_days_up_to_the_snapshot():
    orders = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "c", "c"],
            "dt": [
                date(2026, 9, 1),
                date(2026, 9, 1),
                date(2026, 9, 5),
                date(2026, 9, 20),
                date(2026, 9, 10),
                date(2026, 9, 12),
                date(2026, 10, 2),
            ],
        }
    )
    summary = bgnbd.customer_summary(orders, date(2026, 9, 30)).set_index("user_id")
    # a: days 1, 5, 20 (two orders on the 1st are one purchase day); c's October order is after the snapshot
    assert summary.loc["a"].tolist() == [2, 19, 29]
    assert summary.loc["b"].tolist() == [0, 0, 20]
    assert summary.loc["c"].tolist() == [0, 0, 18]


def test_score_gives_probabilities_and_expectations_per_customer():
    summary = pd.DataFrame({"user_id": ["a", "b"], "frequency": [2, 0], "recency": [19, 0], "age": [29, 20]})
    scored = bgnbd.score(BGNBDParams(0.5, 10.0, 0.8, 3.0), summary, horizon_days=30)
    assert list(scored.columns) == ["user_id", "p_alive", "expected_purchases"]
    assert scored["p_alive"].between(0, 1).all() and (scored["expected_purchases"] > 0).all()


def regulars_of_one_month(customers: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shop's first month: weekly-ish buyers (daily purchase chance ~ Gamma(4, 1/28)), nobody has left yet."""
    rate = rng.gamma(4.0, 1 / 28.0, customers)
    T = rng.integers(1, 31, customers).astype(float)
    x, t_x = np.zeros(customers), np.zeros(customers)
    for i in range(customers):
        days = np.flatnonzero(rng.random(int(T[i])) < rate[i]) + 1.0
        if len(days):
            x[i], t_x[i] = len(days) - 1, days[-1] - days[0]
    return x, t_x, T


def test_a_short_history_runs_off_unpenalised_and_stays_valid_with_the_penalty():
    """30 days without a drop-out: the pure maximum sends a, b to infinity; the conf penalty keeps them finite."""
    x, t_x, T = regulars_of_one_month(1500, np.random.default_rng(2))
    pure, _ = bgnbd.fit(x, t_x, T)
    assert pure.a > 1e3 and pure.b > 1e3  # the degenerate boundary the penalty is for
    fitted, total = bgnbd.fit(x, t_x, T, penalty=PENALTY)
    assert all(1e-3 < v < 1e3 for v in fitted.to_dict().values())
    assert total == pytest.approx(bgnbd.log_likelihood(fitted, x, t_x, T).sum())  # reported without the penalty
    alive, expected = bgnbd.p_alive(fitted, x, t_x, T), bgnbd.expected_purchases(fitted, 30, x, t_x, T)
    assert np.isfinite(alive).all() and ((alive >= 0) & (alive <= 1)).all()
    assert np.isfinite(expected).all() and (expected >= 0).all()
    # the simulated regulars buy on about 30 x 4 / 28 = 4.3 days a month; the fit expects fewer, as it must
    # allow for drop-outs that a month cannot show yet, but still the same order of magnitude
    assert 1.5 < np.mean(expected[x > 0]) < 30 * 4 / 28


def test_the_penalty_barely_moves_a_fit_on_a_long_history():
    true = BGNBDParams(r=0.5, alpha=10.0, a=0.8, b=3.0)
    x, t_x, T = simulate(true, 8000, np.random.default_rng(5))
    pure, _ = bgnbd.fit(x, t_x, T)
    penalised, _ = bgnbd.fit(x, t_x, T, penalty=PENALTY)
    for name, value in pure.to_dict().items():
        assert getattr(penalised, name) == pytest.approx(value, rel=0.1), name
