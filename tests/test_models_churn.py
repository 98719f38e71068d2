"""Churn: labels by hand, the time split, training and scoring on simulated histories, mapInPandas on the engine."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from portrait.core.config import Conf
from portrait.core.tables import Catalog
from portrait.models import churn, load_settings, registry

CONF_SETTINGS = load_settings(Conf())["churn"]
FEATURES = ["orders_30_20d", "orders_20_10d", "orders_10d", "days_since_last_order"]
SETTINGS = {**CONF_SETTINGS, "features": {"profile.consumption": FEATURES}, "calendar_features": []}
DAY0 = date(2026, 3, 1)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def test_conf_features_are_declared_sub_profile_columns():
    catalog = Catalog(".", Conf())
    for table, columns in CONF_SETTINGS["features"].items():
        missing = set(columns) - set(catalog.spec(table).columns)
        assert not missing, f"conf/models.yaml churn.features names {sorted(missing)}, which {table} does not declare"


def test_the_season_joins_the_features_once_the_snapshots_span_a_year():
    settings = {"features": {"t": ["a", "b"]}, "calendar_features": ["season_sin"], "calendar_min_span_days": 364}
    weekly = [day(7 * n) for n in range(53)]
    assert churn.feature_columns(settings, weekly) == ["a", "b", "season_sin"]
    assert churn.feature_columns(settings, weekly[:-1]) == ["a", "b"]  # 357 days: one week of the year unseen
    assert churn.feature_columns(settings) == ["a", "b"]
    assert CONF_SETTINGS["snapshot_every_days"] * (CONF_SETTINGS["training_snapshots"] - 1) >= CONF_SETTINGS["calendar_min_span_days"]
    with pytest.raises(ValueError, match="unknown calendar"):
        churn.feature_columns({**settings, "calendar_features": ["moon_phase"]})
    seasons = churn.add_calendar(pd.DataFrame({"dt": [date(2026, 1, 1), date(2026, 7, 2)]}))
    assert seasons["season_cos"].tolist() == pytest.approx([1.0, -1.0], abs=1e-3)  # new year vs mid-summer


def test_labels_by_hand():
    purchases = pd.DataFrame({"user_id": ["a", "a", "a", "b", "c"], "dt": [day(1), day(20), day(70), day(10), day(40)]})
    snapshots = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "c"], "dt": [day(10), day(20), day(40), day(10), day(11), day(30)]})
    labelled = churn.labels(snapshots, purchases, horizon_days=30).set_index(["user_id", "dt"])["churned"]
    assert labelled.to_dict() == {
        ("a", day(10)): 0,  # buys again on day 20
        ("a", day(20)): 1,  # the day-20 purchase is not "next"; day 70 is 50 days later
        ("a", day(40)): 0,  # day 70 is exactly 30 days later: still within the horizon
        ("b", day(10)): 1,  # bought on the snapshot day, never again
        ("b", day(11)): 1,
    }  # c was not yet a customer on day 30: no label


def simulate(users: int, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Purchase days of users who buy at their own rate and slow down over the 20 days before they leave."""
    rate = rng.gamma(2.0, 0.12, users)
    leave = rng.integers(20, days + 90, users)
    rows = []
    for user in range(users):
        for d in range(days):
            left = leave[user] - d
            factor = 0.0 if left <= 0 else min(1.0, left / 20)
            if rng.random() < 1 - np.exp(-rate[user] * factor):
                rows.append((f"u{user:03d}", day(d)))
    return pd.DataFrame(rows, columns=["user_id", "dt"])


def features_at(purchases: pd.DataFrame, snapshot: date, users: list[str]) -> pd.DataFrame:
    """The consumption sub-profile columns the test model reads, as jobs/subprofiles.py defines them."""
    known = purchases[purchases["dt"] <= snapshot]
    ago = known["dt"].map(lambda d: (snapshot - d).days)
    frame = pd.DataFrame(index=pd.Index(users, name="user_id"))
    for column, oldest, newest in (("orders_30_20d", 29, 20), ("orders_20_10d", 19, 10), ("orders_10d", 9, 0)):
        frame[column] = known[(ago <= oldest) & (ago >= newest)].groupby("user_id").size()
    frame = frame.fillna(0).astype("int64")
    frame["days_since_last_order"] = ago.groupby(known["user_id"]).min().reindex(frame.index)  # NaN: never ordered
    return frame.reset_index().assign(dt=snapshot)


@pytest.fixture(scope="module")
def history():
    purchases = simulate(400, 160, np.random.default_rng(8))
    users = sorted(set(purchases["user_id"]))
    snapshots = [day(d) for d in range(30, 160, 7)]
    features = pd.concat([features_at(purchases, s, users) for s in snapshots], ignore_index=True)
    return purchases, features


def test_training_set_keeps_only_complete_labels_and_splits_by_time(history):
    purchases, features = history
    known_until = day(159)
    training = churn.training_set(features, purchases, SETTINGS["horizon_days"], known_until)
    assert pd.to_datetime(training["dt"]).max() <= pd.Timestamp(known_until - timedelta(days=30))
    assert training["days_since_last_order"].notna().all()  # customers only
    train, evaluation = churn.time_split(training, SETTINGS["horizon_days"])
    latest = evaluation["dt"].max()
    assert evaluation["dt"].nunique() == 1 and train["dt"].max() <= latest - timedelta(days=30)
    with pytest.raises(ValueError, match="no snapshot"):
        churn.time_split(evaluation, SETTINGS["horizon_days"])


@pytest.fixture(scope="module")
def trained(history):
    purchases, features = history
    training = churn.training_set(features, purchases, SETTINGS["horizon_days"], day(159))
    train, evaluation = churn.time_split(training, SETTINGS["horizon_days"])
    model = churn.train(train, churn.feature_columns(SETTINGS), SETTINGS["horizon_days"], SETTINGS)
    return model, evaluation


def test_model_ranks_a_later_snapshot_well_and_outputs_probabilities(trained):
    model, evaluation = trained
    p = churn.score(model, evaluation)
    assert ((p >= 0) & (p <= 1)).all() and len(p) == len(evaluation)
    assert roc_auc_score(evaluation["churned"], p) > 0.8
    assert abs(p.mean() - evaluation["churned"].mean()) < 0.1  # calibrated: the mean probability is the rate
    assert set(model.params()) == {"features", "horizon_days", "calibration", "classifier"}


def test_training_samples_large_sets_and_refuses_a_single_class(history):
    purchases, features = history
    training = churn.training_set(features, purchases, SETTINGS["horizon_days"], day(159))
    sample = churn.training_sample(training, 300)
    assert len(sample) == 300 and sample.index.isin(training.index).all()
    assert churn.training_sample(training, 300).equals(sample)  # the same sample every run
    assert churn.training_sample(training, len(training) + 1) is training
    with pytest.raises(ValueError, match="one class"):
        churn.train(training.assign(churned=1), FEATURES, 30, SETTINGS)


def test_scoring_users_without_history_still_gives_probabilities(trained):
    model, _ = trained
    newcomers = pd.DataFrame(
        {
            "user_id": ["n1"],
            "dt": [day(150)],
            "orders_30_20d": [0],
            "orders_20_10d": [0],
            "orders_10d": [0],
            "days_since_last_order": [np.nan],
        }
    )
    p = churn.score(model, newcomers)
    assert 0 <= p[0] <= 1


def test_spark_scoring_with_map_in_pandas_matches_pandas(spark, trained):
    model, evaluation = trained
    rows = evaluation[["user_id", "dt", *FEATURES]].head(200)
    ddl = "user_id string, dt date, orders_30_20d bigint, orders_20_10d bigint, orders_10d bigint, days_since_last_order int"
    records = [
        (r.user_id, r.dt, int(r.orders_30_20d), int(r.orders_20_10d), int(r.orders_10d), int(r.days_since_last_order))
        for r in rows.itertuples()
    ]
    records.append(("never", day(150), 0, 0, 0, None))  # a null feature, as the sub-profile writes it
    frame = spark.createDataFrame(records, ddl).repartition(3)
    scored = churn.score_spark(model, frame)
    assert [(f.name, f.dataType.simpleString()) for f in scored.schema.fields] == [
        ("user_id", "string"),
        ("dt", "date"),
        ("churn_probability", "double"),
    ]
    result = scored.toPandas().set_index("user_id")
    expected = churn.score(model, pd.DataFrame(records, columns=["user_id", "dt", *FEATURES]))
    np.testing.assert_allclose(result.loc[[r[0] for r in records], "churn_probability"].to_numpy(), expected, atol=1e-12)
    assert (result["dt"] == pd.Series([r[1] for r in records], index=[r[0] for r in records])[result.index]).all()


def test_trained_model_round_trips_through_the_registry_artefact(tmp_path, trained):
    model, evaluation = trained
    registry.save(str(tmp_path), "churn", "20260807", model.params(), fitted=model)
    again = registry.load_fitted(str(tmp_path), "churn", "20260807")
    np.testing.assert_array_equal(churn.score(again, evaluation), churn.score(model, evaluation))
    assert (
        json.loads((Path(registry.artifact_dir(str(tmp_path), "churn", "20260807")) / registry.PARAMS_FILE).read_text(encoding="utf-8"))[
            "features"
        ]
        == FEATURES
    )


def seasonal_shop(users: int, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Purchase days as in ``simulate``, with the rate 1.8x at mid-July and 0.2x at mid-January."""
    rate = rng.gamma(2.0, 0.12, users)[:, None]
    left = rng.integers(20, days + 200, users)[:, None] - np.arange(days)[None, :]
    day_of_year = np.array([day(d).timetuple().tm_yday for d in range(days)])[None, :]
    season = 1 + 0.8 * np.cos(2 * np.pi * (day_of_year - 196) / 365.25)
    bought = rng.random((users, days)) < 1 - np.exp(-rate * np.clip(left / 20, 0, 1) * season)
    user, on = np.nonzero(bought)
    return pd.DataFrame({"user_id": [f"u{u:03d}" for u in user], "dt": [day(int(d)) for d in on]})


def test_with_a_year_of_snapshots_the_season_improves_calibration_on_later_ones():
    """A seasonal shop: going quiet in winter is not leaving. Trained on a year, judged on the months after it."""
    days = 600
    purchases = seasonal_shop(300, days, np.random.default_rng(4))
    users = sorted(set(purchases["user_id"]))
    features = pd.concat([features_at(purchases, day(d), users) for d in range(30, days - 30, 7)], ignore_index=True)
    rows = churn.training_set(features, purchases, 30, day(days - 1))
    snapshot = pd.to_datetime(rows["dt"])
    later = rows[snapshot > pd.Timestamp(day(days - 170))]
    train = rows[snapshot <= pd.Timestamp(day(days - 200))]  # 370 days of snapshots, labels closed before `later`
    seasonal = {**SETTINGS, "calendar_features": list(churn.CALENDAR_FEATURES)}
    columns = churn.feature_columns(seasonal, train["dt"].unique())
    assert columns == FEATURES + list(churn.CALENDAR_FEATURES)
    brier = {}
    for name, used in (("season", columns), ("none", FEATURES)):
        p = churn.score(churn.train(train, used, 30, seasonal), later)
        brier[name] = np.mean((p - later[churn.LABEL]) ** 2)
        assert roc_auc_score(later[churn.LABEL], p) > 0.95
    assert brier["season"] < 0.95 * brier["none"]
