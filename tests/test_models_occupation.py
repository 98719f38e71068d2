"""Occupation from delivery places and times: cells, the mixture fitted without labels, the summer drop."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from portrait.core.config import Conf
from portrait.models import load_settings, occupation
from portrait.models.occupation import OccupationModel

SETTINGS = load_settings(Conf())["occupation"]
POI = SETTINGS["poi_types"]
ADDRESSES = pd.DataFrame({"address_id": ["home", "office", "school", "gym"], "poi_type": ["residential", "office", "school", "other"]})


def test_delivery_counts_file_each_order_in_its_cell():
    purchases = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "v"],
            "address_id": ["office", "home", "school", "school", None],  # v's order has no address: no evidence
            "dt": [date(2026, 6, 1), date(2026, 6, 6), date(2026, 7, 15), date(2026, 9, 1), date(2026, 6, 1)],
        }
    )  # Mon 1 June, Sat 6 June, Wed 15 July, Tue 1 Sept
    counts = occupation.delivery_counts(purchases, ADDRESSES, POI, SETTINGS["summer_months"])
    assert list(counts.index) == ["u"]
    assert counts.columns.tolist() == occupation.cells(POI)
    filed = counts.loc["u"][counts.loc["u"] > 0].to_dict()
    assert filed == {"residential|weekend|term": 1, "office|weekday|term": 1, "school|weekday|summer": 1, "school|weekday|term": 1}


def orders_of(kind: str, user: str, rng: np.random.Generator) -> list[dict]:
    """About 25 orders over a year in the generator's spirit: offices on weekday lunches, schools in term."""
    rows = []
    for day in rng.choice(365, size=rng.integers(3, 40), replace=False):
        dt = date(2026, 1, 1) + timedelta(days=int(day))
        weekday, summer = dt.weekday() < 5, dt.month in (7, 8)
        if kind == "student" and summer and rng.random() < 0.8:
            continue  # students go home for the summer: fewer orders, and from home
        place = {
            "white_collar": "office" if weekday and rng.random() < 0.8 else "home",
            "student": "home" if summer else "school",
            "other": "gym" if rng.random() < 0.1 else "home",
        }[kind]
        rows.append({"user_id": user, "address_id": place, "dt": dt})
    return rows


@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(11)
    kinds = rng.choice(["white_collar", "student", "other"], size=400, p=[0.5, 0.2, 0.3])
    rows = [row for i, kind in enumerate(kinds) for row in orders_of(kind, f"u{i:03d}", rng)]
    truth = pd.Series(kinds, index=[f"u{i:03d}" for i in range(len(kinds))])
    return pd.DataFrame(rows), truth


def test_unsupervised_mixture_finds_white_collar_and_students(population):
    purchases, truth = population
    counts = occupation.delivery_counts(purchases, ADDRESSES, POI, SETTINGS["summer_months"])
    model = occupation.fit(counts, SETTINGS["classes"], SETTINGS["prior_strength"], SETTINGS["max_iterations"])
    scored = occupation.score(model, counts).set_index("user_id")
    assert scored.columns.tolist() == ["p_white_collar", "p_student", "p_other"]
    assert ((scored >= 0) & (scored <= 1)).all().all()
    np.testing.assert_allclose(scored.sum(axis=1), 1.0)
    predicted = scored.idxmax(axis=1).str.removeprefix("p_")
    assert (predicted == truth[scored.index]).mean() > 0.95
    assert model.shares == pytest.approx([0.5, 0.2, 0.3], abs=0.06)


def test_school_addresses_go_quiet_in_summer(population):
    purchases, _ = population
    counts = occupation.delivery_counts(purchases, ADDRESSES, POI, SETTINGS["summer_months"])
    model = occupation.fit(counts, SETTINGS["classes"], SETTINGS["prior_strength"])
    student = pd.Series(model.profiles[model.classes.index("student")], index=model.cells)
    school_term = student[[c for c in model.cells if c.startswith("school|") and c.endswith("|term")]].sum()
    school_summer = student[[c for c in model.cells if c.startswith("school|") and c.endswith("|summer")]].sum()
    assert school_summer < 0.05 * school_term
    # a summer of home deliveries after a term of school ones reads as a student
    one = pd.DataFrame(
        {
            "user_id": "s",
            "address_id": ["school", "school", "home", "home"],
            "dt": [date(2026, 6, 2), date(2026, 6, 9), date(2026, 7, 14), date(2026, 8, 4)],
        }
    )
    p = occupation.score(model, occupation.delivery_counts(one, ADDRESSES, POI, SETTINGS["summer_months"])).iloc[0]
    assert p["p_student"] > 0.9


def test_users_without_deliveries_get_the_class_shares(population):
    purchases, _ = population
    counts = occupation.delivery_counts(purchases, ADDRESSES, POI, SETTINGS["summer_months"])
    model = occupation.fit(counts, SETTINGS["classes"], SETTINGS["prior_strength"])
    nobody = pd.DataFrame(0.0, index=pd.Index(["new"], name="user_id"), columns=model.cells)
    row = occupation.score(model, nobody).iloc[0]
    assert [row["p_white_collar"], row["p_student"], row["p_other"]] == pytest.approx(model.shares)


def test_model_round_trips_through_json(population):
    purchases, _ = population
    counts = occupation.delivery_counts(purchases, ADDRESSES, POI, SETTINGS["summer_months"])
    model = occupation.fit(counts, SETTINGS["classes"], SETTINGS["prior_strength"])
    again = OccupationModel.from_dict(json.loads(json.dumps(model.to_dict())))
    pd.testing.assert_frame_equal(occupation.score(again, counts), occupation.score(model, counts))


def test_a_zero_poi_weight_is_refused():
    classes = {**SETTINGS["classes"], "student": {"share": 0.2, "poi": {"school": 6, "residential": 3, "office": 0, "other": 0.5}}}
    counts = pd.DataFrame(1.0, index=pd.Index(["u"], name="user_id"), columns=occupation.cells(POI))
    with pytest.raises(ValueError, match="positive"):
        occupation.fit(counts, classes, 50)
