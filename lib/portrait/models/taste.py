"""Taste: per user and salad category a preference in [0, 1] by matrix factorisation (seed: 矩阵分解).

A user's purchases alone say little when there are two of them. Browsing says
more: what they view and put in the cart. The model factorises one
non-negative matrix, users x (signal, category) with signal in order / add_cart
/ view, into a few latent tastes (sklearn NMF). The latent factors learn how
browsing a category goes with buying it, so a light buyer's preference is
estimated from everything they did, including categories they rarely buy.
The reconstructed *order* block is the preference, scaled per user so the
favourite category is 1; a user with no signal at all gets the population's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import NMF, non_negative_factorization

ORDER = "order"
SOLVER, LOSS = "cd", "frobenius"  # least squares: heavy users inform the factors most


def signal_matrix(order_items: pd.DataFrame, events: pd.DataFrame, categories: list[str], weights: dict[str, float]) -> pd.DataFrame:
    """Weighted counts per user (index) and ``signal:category`` column.

    ``order_items``: user_id, category, qty of the purchases that count;
    ``events``: user_id, event_type, category, one row per event or, with a
    count column ``n``, per kind of event. ``weights`` names the signals
    (``order`` and event types such as ``add_cart``, ``view``) and what one
    unit of each counts for.
    """
    bought = pd.DataFrame(
        {"user_id": order_items["user_id"], "category": order_items["category"], "signal": ORDER, "units": order_items["qty"].astype(float)}
    )
    browsed = events[events["event_type"].isin([s for s in weights if s != ORDER])]
    browsed = pd.DataFrame(
        {
            "user_id": browsed["user_id"],
            "category": browsed["category"],
            "signal": browsed["event_type"],
            "units": browsed["n"].astype(float) if "n" in browsed else 1.0,
        }
    )
    units = pd.concat([bought, browsed], ignore_index=True)
    units = units[units["category"].isin(categories) & units["user_id"].notna()]
    units = units.assign(
        units=units["units"] * units["signal"].map(weights).astype(float),
        column=units["signal"].astype(str) + ":" + units["category"].astype(str),
    )
    matrix = units.groupby(["user_id", "column"])["units"].sum().unstack(fill_value=0.0)
    return matrix.reindex(columns=[f"{s}:{c}" for s in weights for c in categories], fill_value=0.0).astype(float)


@dataclass(frozen=True)
class TasteModel:
    """The latent tastes (components over the matrix columns) and the population's preference."""

    columns: list[str]
    categories: list[str]
    components: list[list[float]]
    population: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TasteModel:
        return cls(**{k: list(values[k]) for k in ("columns", "categories", "components", "population")})


def _order_block(columns: list[str], categories: list[str]) -> list[int]:
    return [columns.index(f"{ORDER}:{c}") for c in categories]


def _scaled(reconstructed: np.ndarray) -> np.ndarray:
    top = reconstructed.max(axis=1, keepdims=True)
    return np.divide(reconstructed, top, out=np.zeros_like(reconstructed), where=top > 0)


def fit(matrix: pd.DataFrame, categories: list[str], n_components: int, random_state: int = 0) -> TasteModel:
    """Factorise the users with any signal into ``n_components`` latent tastes."""
    active = matrix[matrix.sum(axis=1) > 0]
    if active.empty:
        raise ValueError("no user with any order, add_cart or view in the taste categories")
    nmf = NMF(n_components=n_components, init="nndsvda", solver=SOLVER, beta_loss=LOSS, max_iter=2000, random_state=random_state)
    weights = nmf.fit_transform(active.to_numpy())
    block = _order_block(list(matrix.columns), categories)
    population = _scaled((weights @ nmf.components_)[:, block].mean(axis=0, keepdims=True))[0]
    return TasteModel(list(matrix.columns), list(categories), nmf.components_.tolist(), population.tolist())


def score(model: TasteModel, matrix: pd.DataFrame) -> pd.DataFrame:
    """``taste_{category}`` in [0, 1] per user of ``matrix``: 1 for the favourite, the rest relative to it."""
    components = np.asarray(model.components)
    x = matrix.reindex(columns=model.columns, fill_value=0.0).to_numpy(dtype=float)
    weights, _, _ = non_negative_factorization(
        x, H=components, n_components=len(components), update_H=False, solver=SOLVER, beta_loss=LOSS, max_iter=2000
    )
    preference = _scaled((weights @ components)[:, _order_block(model.columns, model.categories)])
    no_signal = preference.max(axis=1) == 0
    preference[no_signal] = model.population
    return pd.DataFrame(preference, index=matrix.index, columns=[f"taste_{c}" for c in model.categories]).reset_index()
