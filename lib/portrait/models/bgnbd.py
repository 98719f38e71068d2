"""BG/NBD (Fader, Hardie & Lee 2005): P(alive) and expected purchases from order history alone.

A shop with no labels still knows when each customer bought. The BG/NBD model
reads that as: while alive, a customer buys as a Poisson process with rate
lambda ~ Gamma(r, alpha); after each repeat purchase they drop out for good
with probability p ~ Beta(a, b). Per customer it needs three numbers at a
snapshot (units: days): ``frequency`` x = repeat purchase days, ``recency``
t_x = days from the first to the last purchase day, ``age`` T = days from the
first purchase day to the snapshot. Fitted by maximum likelihood; the four
parameters are the whole model (stored as a dict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import optimize, special

SUMMARY_COLUMNS = ("frequency", "recency", "age")


@dataclass(frozen=True)
class BGNBDParams:
    """Gamma(r, alpha) purchase rates (alpha in days) and Beta(a, b) drop-out probabilities."""

    r: float
    alpha: float
    a: float
    b: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> BGNBDParams:
        return cls(**{k: float(values[k]) for k in ("r", "alpha", "a", "b")})


def _arrays(frequency, recency, age) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype=float) for v in (frequency, recency, age))
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T) or np.any((x == 0) & (t_x != 0)):
        raise ValueError("need frequency >= 0, 0 <= recency <= age, and recency 0 when frequency is 0")
    return x, t_x, T


def log_likelihood(params: BGNBDParams, frequency, recency, age) -> np.ndarray:
    """Per-customer log-likelihood (FHL 2005, eq. 6), in logs throughout so large histories do not overflow."""
    x, t_x, T = _arrays(frequency, recency, age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    still_alive = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
    repeat = x > 0
    dropped = np.full_like(x, -np.inf)
    dropped[repeat] = special.betaln(a + 1, b + x[repeat] - 1) - special.betaln(a, b) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    return head + np.logaddexp(still_alive, dropped)


def p_alive(params: BGNBDParams, frequency, recency, age) -> np.ndarray:
    """P(still a customer at the snapshot | history); 1 for customers without a repeat purchase."""
    x, t_x, T = _arrays(frequency, recency, age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_odds_dropped = np.full_like(x, -np.inf)
    repeat = x > 0
    log_odds_dropped[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1) + (r + x[repeat]) * (np.log(alpha + T[repeat]) - np.log(alpha + t_x[repeat]))
    )
    return special.expit(-log_odds_dropped)


def expected_purchases(params: BGNBDParams, days: float, frequency, recency, age) -> np.ndarray:
    """Expected purchase days in the next ``days`` days given the history (FHL 2005, eq. 10).

    The Gaussian hypergeometric term is taken through Euler's transformation,
    ((1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)),
    whose series stays well-conditioned for customers with many purchases.
    """
    x, t_x, T = _arrays(frequency, recency, age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = days / (alpha + T + days)
    tail = (1 - z) ** (a - 1) * special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
    return (a + b + x - 1) / (a - 1) * (1 - tail) * p_alive(params, x, t_x, T)


def fit(frequency, recency, age, penalty: float = 0.0, counts=None) -> tuple[BGNBDParams, float]:
    """Maximum-likelihood parameters and the total log-likelihood at them (without the penalty).

    Customers with the same (x, t_x, T) are counted once with a weight, and
    the optimiser works on log-parameters so every candidate is positive.
    ``counts`` (customers per row) lets the caller pass those distinct triples
    directly: the job counts them on the engine, so the driver holds at most
    one row per (x, t_x, T), however many customers there are.

    ``penalty`` > 0 adds ``penalty * sum(log(param / centre)^2)`` to the mean
    negative log-likelihood, the centre being r = a = b = 1 and alpha = the
    mean age (a rate of one purchase per mean age: scale-free). On a short
    history few customers have had time to drop out, so the likelihood is
    flat in the drop-out parameters and the pure maximum runs off to a -> 0,
    b -> infinity (on a few days r, alpha -> infinity too), where the closed
    forms lose their meaning (expected purchases NaN or negative). The penalty is a weak Gaussian prior on the
    log-parameters (like the lifetimes library's ``penalizer_coef``): with a
    few months of orders the data outweigh it, on a few weeks it keeps the
    parameters where the model still means something.
    """
    triples = np.column_stack(_arrays(frequency, recency, age))
    weights_in = np.ones(len(triples)) if counts is None else np.asarray(counts, dtype=float)
    if len(triples) == 0 or weights_in.sum() <= 0:
        raise ValueError("no customers to fit")
    unique, inverse = np.unique(triples, axis=0, return_inverse=True)
    weights = np.bincount(inverse.ravel(), weights=weights_in, minlength=len(unique))
    x, t_x, T = unique.T
    centre = np.log([1.0, max(float(np.average(T, weights=weights)), 1.0), 1.0, 1.0])

    def objective(log_params: np.ndarray) -> float:
        value = np.dot(weights, log_likelihood(BGNBDParams(*np.exp(log_params)), x, t_x, T)) / weights.sum()
        return -value + penalty * float(np.sum((log_params - centre) ** 2)) if np.isfinite(value) else np.inf

    result = optimize.minimize(objective, centre, method="Nelder-Mead", options={"maxiter": 20_000, "xatol": 1e-8, "fatol": 1e-12})
    result = optimize.minimize(objective, result.x, method="L-BFGS-B")
    params = BGNBDParams(*(float(v) for v in np.exp(result.x)))
    return params, float(np.dot(weights, log_likelihood(params, x, t_x, T)))


def customer_summary(orders: pd.DataFrame, snapshot: date, user_col: str = "user_id", date_col: str = "dt") -> pd.DataFrame:
    """(frequency, recency, age) in days per customer at the end of ``snapshot``.

    ``orders`` holds the purchases that count (the caller drops cancelled
    ones); several orders on one day are one purchase day, and orders after
    the snapshot are ignored so a past snapshot never sees its future.
    """
    days = pd.to_datetime(orders[date_col]).dt.normalize()
    snapshot_day = pd.Timestamp(snapshot)
    known = pd.DataFrame({user_col: orders[user_col].to_numpy(), "day": days.to_numpy()})
    known = known[known["day"] <= snapshot_day].drop_duplicates()
    per_user = known.groupby(user_col)["day"].agg(["min", "max", "count"])
    return pd.DataFrame(
        {
            user_col: per_user.index,
            "frequency": (per_user["count"] - 1).to_numpy(dtype=np.int64),
            "recency": (per_user["max"] - per_user["min"]).dt.days.to_numpy(dtype=np.int64),
            "age": (snapshot_day - per_user["min"]).dt.days.to_numpy(dtype=np.int64),
        }
    ).reset_index(drop=True)


def score(params: BGNBDParams, summary: pd.DataFrame, horizon_days: float) -> pd.DataFrame:
    """P(alive) and expected purchase days in the next ``horizon_days`` for each row of ``summary``."""
    values = [summary[c] for c in SUMMARY_COLUMNS]
    return summary.drop(columns=list(SUMMARY_COLUMNS)).assign(
        p_alive=p_alive(params, *values),
        expected_purchases=expected_purchases(params, horizon_days, *values),
    )
