"""Taste by matrix factorisation: the signal matrix, estimates for rarely bought categories, scaling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from portrait.core.config import Conf
from portrait.models import load_settings, taste
from portrait.models.taste import TasteModel

CATEGORIES = Conf().landing["categories"]["salad"]
SETTINGS = load_settings(Conf())["taste"]


def test_signal_matrix_weights_each_signal_per_category():
    items = pd.DataFrame({"user_id": ["u", "u", "v"], "category": ["fruit", "fitness", "seafood"], "qty": [2, 1, 1]})
    events = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", None, "v"],
            "event_type": ["view", "view", "add_cart", "view", "search"],
            "category": ["fruit", "chicken", "fruit", "fruit", "seafood"],
        }
    )  # fitness is not a salad category; the anonymous view and the search are not signals
    matrix = taste.signal_matrix(items, events, CATEGORIES, {"order": 1.0, "add_cart": 0.5, "view": 0.2})
    assert matrix.columns.tolist() == [f"{s}:{c}" for s in ("order", "add_cart", "view") for c in CATEGORIES]
    assert matrix.loc["u"][matrix.loc["u"] > 0].to_dict() == {
        "order:fruit": 2.0,
        "add_cart:fruit": 0.5,
        "view:fruit": 0.2,
        "view:chicken": 0.2,
    }
    assert matrix.loc["v"][matrix.loc["v"] > 0].to_dict() == {"order:seafood": 1.0}


def test_events_counted_per_kind_give_the_same_matrix_as_one_row_per_event():
    """The stage counts browsing on the engine (a row per user, kind and category) before it reaches pandas."""
    items, events, _ = simulate(60, np.random.default_rng(5))
    counted = events.groupby(["user_id", "event_type", "category"]).size().rename("n").reset_index()
    one_per_event = taste.signal_matrix(items, events, CATEGORIES, SETTINGS["signals"])
    assert len(counted) < len(events)
    pd.testing.assert_frame_equal(taste.signal_matrix(items, counted, CATEGORIES, SETTINGS["signals"]), one_per_event)


def simulate(users: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users with a true taste (Dirichlet): orders follow it closely, browsing loosely, as in the generator."""
    true = pd.DataFrame(rng.dirichlet(np.full(len(CATEGORIES), 0.7), users), columns=CATEGORIES, index=[f"u{i:03d}" for i in range(users)])
    items, events = [], []
    for user, t in true.iterrows():
        for _ in range(rng.poisson(4)):
            items.append({"user_id": user, "category": rng.choice(CATEGORIES, p=0.9 * t + 0.025), "qty": 1})
        for kind, mean in (("view", 12), ("add_cart", 3)):
            for _ in range(rng.poisson(mean)):
                events.append({"user_id": user, "event_type": kind, "category": rng.choice(CATEGORIES, p=0.75 * t + 0.0625)})
    return pd.DataFrame(items), pd.DataFrame(events), true


@pytest.fixture(scope="module")
def fitted():
    items, events, true = simulate(400, np.random.default_rng(2))
    matrix = taste.signal_matrix(items, events, CATEGORIES, SETTINGS["signals"])
    return matrix, taste.fit(matrix, CATEGORIES, SETTINGS["n_components"]), true


def test_preferences_follow_the_true_taste_better_than_order_shares(fitted):
    matrix, model, true = fitted
    scored = taste.score(model, matrix).set_index("user_id")
    assert scored.columns.tolist() == [f"taste_{c}" for c in CATEGORIES]
    assert ((scored >= 0) & (scored <= 1)).all().all()
    np.testing.assert_allclose(scored.max(axis=1), 1.0)  # the favourite category is 1
    orders = matrix[[f"order:{c}" for c in CATEGORIES]].to_numpy()
    truth = true.loc[scored.index].to_numpy()

    def agreement(estimate: np.ndarray) -> float:
        return float(np.mean([np.corrcoef(estimate[:, k], truth[:, k])[0, 1] for k in range(len(CATEGORIES))]))

    assert agreement(scored.to_numpy()) > agreement(orders / np.maximum(orders.sum(axis=1, keepdims=True), 1)) + 0.1
    assert agreement(scored.to_numpy()) > 0.7


def test_a_light_buyer_gets_a_preference_for_what_they_browse(fitted):
    _, model, _ = fitted
    light = taste.signal_matrix(
        pd.DataFrame({"user_id": ["new"], "category": ["vegetable"], "qty": [1]}),
        pd.DataFrame({"user_id": ["new"] * 8, "event_type": ["view"] * 6 + ["add_cart"] * 2, "category": ["seafood"] * 8}),
        CATEGORIES,
        SETTINGS["signals"],
    )
    row = taste.score(model, light).iloc[0]
    assert row["taste_seafood"] > 0.5  # never bought, but browsed and carted
    assert row["taste_seafood"] > row["taste_fruit"] and row["taste_seafood"] > row["taste_chicken"]


def test_users_without_signal_get_the_population_preference(fitted):
    matrix, model, _ = fitted
    nobody = pd.DataFrame(0.0, index=pd.Index(["quiet"], name="user_id"), columns=matrix.columns)
    assert taste.score(model, nobody).iloc[0, 1:].tolist() == pytest.approx(model.population)
    assert max(model.population) == pytest.approx(1.0)


def test_model_round_trips_through_json(fitted):
    matrix, model, _ = fitted
    again = TasteModel.from_dict(json.loads(json.dumps(model.to_dict())))
    pd.testing.assert_frame_equal(taste.score(again, matrix.head(20)), taste.score(model, matrix.head(20)))


def test_fit_refuses_an_empty_matrix():
    empty = pd.DataFrame(0.0, index=pd.Index(["a"], name="user_id"), columns=["order:vegetable"])
    with pytest.raises(ValueError, match="no user"):
        taste.fit(empty, ["vegetable"], 1)
