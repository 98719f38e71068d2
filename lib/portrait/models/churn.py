"""Churn probability (seed: 流失概率 > 距今消费天数 > 流失标签): P(no order in the next N days).

Supervised, from the sub-profiles: the features of a user at snapshot date S
are the sub-profile columns listed in conf/models.yaml (the sliced windows
30-20, 20-10 and last 10 days show a decline better than one 30-day window,
plus bad reviews, refunds, app opens, delivery waits and, with a year of
snapshots, the season); the label is 1 when the user, a customer at S,
places no order that counts in (S, S + N]. Past snapshots give (features,
label) pairs; the model is trained on earlier snapshots and judged on a later
one whose label it could not have seen, as it will be used. Gradient
boosting on the driver, calibrated so the output reads as a probability;
scoring is pure pandas, and distributed over a Spark DataFrame with
mapInPandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from portrait.models.distributed import map_in_pandas

LABEL = "churned"
CALENDAR_FEATURES = ("season_sin", "season_cos")  # derived from the snapshot date by add_calendar
SCORE_SCHEMA = "user_id string, dt date, churn_probability double"


def feature_columns(settings: dict, snapshots=()) -> list[str]:
    """The model's inputs: sub-profile columns (per table in conf), then the calendar features if they can help.

    The season is used once the training ``snapshots`` span
    ``calendar_min_span_days`` (a year): then every season has been seen with
    its labels. With fewer months a tree can only carry the last season seen
    over to the next, which misleads more than it tells.
    """
    columns = [column for table_columns in settings["features"].values() for column in table_columns]
    unknown = set(settings["calendar_features"]) - set(CALENDAR_FEATURES)
    if unknown:
        raise ValueError(f"unknown calendar features {sorted(unknown)}; known: {', '.join(CALENDAR_FEATURES)}")
    days = pd.to_datetime(pd.Series(list(snapshots), dtype=object))
    span = (days.max() - days.min()).days if len(days) else 0
    return columns + (list(settings["calendar_features"]) if span >= settings["calendar_min_span_days"] else [])


def add_calendar(features: pd.DataFrame) -> pd.DataFrame:
    """Season of the snapshot date ``dt`` as a point on the year's circle (salads sell more in summer)."""
    angle = 2 * np.pi * (pd.to_datetime(features["dt"]).dt.dayofyear.to_numpy() - 1) / 365.25
    return features.assign(season_sin=np.sin(angle), season_cos=np.cos(angle))


def labels(snapshots: pd.DataFrame, purchases: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """``churned`` per (user_id, dt) of ``snapshots`` for users who were customers on dt.

    ``purchases``: user_id, dt of every order that counts, as known now (late
    arrivals included). A user is a customer at S with a purchase on or
    before S, and churned when their next purchase is not within N days.
    """

    def by_day(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        # one key dtype on both sides whatever came in (object from an empty frame, str from Spark): issue 14's
        # MergeError was an empty left side (object) against the purchases (str)
        return pd.DataFrame(
            {
                "user_id": pd.Series(frame["user_id"].to_numpy(), dtype=object).astype("str").to_numpy(),
                column: pd.to_datetime(frame["dt"]).to_numpy(dtype="datetime64[ns]"),
            }
        ).astype({"user_id": "str"})

    left = by_day(snapshots, "snapshot").assign(dt=snapshots["dt"].to_numpy()).sort_values("snapshot")
    bought = by_day(purchases, "bought").sort_values("bought")
    previous = pd.merge_asof(left, bought, left_on="snapshot", right_on="bought", by="user_id", direction="backward")
    customers = previous[previous["bought"].notna()].drop(columns="bought")
    following = pd.merge_asof(
        customers, bought, left_on="snapshot", right_on="bought", by="user_id", direction="forward", allow_exact_matches=False
    )
    churned = following["bought"].isna() | (following["bought"] > following["snapshot"] + pd.Timedelta(days=horizon_days))
    return following[["user_id", "dt"]].assign(**{LABEL: churned.astype(int)}).reset_index(drop=True)


def training_set(features: pd.DataFrame, purchases: pd.DataFrame, horizon_days: int, known_until: date) -> pd.DataFrame:
    """Feature rows of customers at snapshots whose whole label window lies on or before ``known_until``."""
    complete = pd.to_datetime(features["dt"]) <= pd.Timestamp(known_until - timedelta(days=horizon_days))
    rows = features[complete]
    labelled = labels(rows[["user_id", "dt"]], purchases, horizon_days)
    return rows.assign(user_id=rows["user_id"].astype(str)).merge(labelled, on=["user_id", "dt"])


def training_set_spark(features, purchases, horizon_days: int, known_until: date):
    """:func:`training_set` on the engine: the feature rows (Spark) of customers at complete snapshots, with ``churned``.

    ``purchases`` (Spark): user_id, dt of every order that counts as known
    now. Each purchase day is set beside every snapshot (a handful) and
    aggregated per (user, snapshot): a purchase on or before S makes a
    customer, one in (S, S + N] means not churned.
    """
    from pyspark.sql import functions as F

    rows = features.where(F.col("dt") <= F.lit(known_until - timedelta(days=horizon_days)))
    snapshots = rows.select(F.col("dt").alias("snapshot")).distinct()
    days = purchases.select(F.col("user_id").cast("string").alias("user_id"), F.col("dt").alias("day")).distinct()
    day, snapshot = F.col("day"), F.col("snapshot")
    marks = (
        days.crossJoin(F.broadcast(snapshots))
        .groupBy("user_id", "snapshot")
        .agg(
            F.max((day <= snapshot).cast("int")).alias("_customer"),
            F.max(((day > snapshot) & (day <= F.date_add(snapshot, horizon_days))).cast("int")).alias("_back"),
        )
        .where(F.col("_customer") == 1)
        .select("user_id", snapshot.alias("dt"), (1 - F.col("_back")).alias(LABEL))
    )
    return rows.withColumn("user_id", F.col("user_id").cast("string")).join(marks, ["user_id", "dt"])


def time_split(training: pd.DataFrame, horizon_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate on the latest snapshot; train on snapshots whose labels were complete by then."""
    snapshot = pd.to_datetime(training["dt"])
    latest = snapshot.max()
    train = training[snapshot <= latest - pd.Timedelta(days=horizon_days)]
    if train.empty:
        raise ValueError(f"no snapshot at least {horizon_days} days before the evaluation snapshot {latest.date()}")
    return train, training[snapshot == latest]


@dataclass
class ChurnModel:
    """A fitted, calibrated classifier, the columns it reads and the OpenMP threads it may use."""

    estimator: CalibratedClassifierCV
    features: list[str]
    horizon_days: int
    threads: int = 1

    def params(self) -> dict:
        """What the registry stores beside the pickle: inputs, horizon and the classifier's settings."""
        classifier = self.estimator.estimator.get_params()
        return {
            "features": self.features,
            "horizon_days": self.horizon_days,
            "calibration": self.estimator.method,
            "classifier": {k: v for k, v in sorted(classifier.items()) if v is None or np.isscalar(v)},
        }


def training_sample(rows: pd.DataFrame, max_rows: int, random_state: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows, drawn at random: training runs on the driver's memory."""
    return rows.sample(max_rows, random_state=random_state) if len(rows) > max_rows else rows


def train(rows: pd.DataFrame, features: list[str], horizon_days: int, settings: dict, random_state: int = 0) -> ChurnModel:
    """Fit on a sample of at most ``settings['max_training_rows']`` rows."""
    rows = training_sample(rows, settings["max_training_rows"], random_state)
    if rows[LABEL].nunique() < 2:
        raise ValueError("the training rows hold only one class; churn cannot be learnt from them")
    # a feature no training row has (an order export has no app events: every behaviour column null) teaches
    # nothing, and sklearn's binning fails on a column without one value ("window shape cannot be larger ...")
    known = add_calendar(rows)[list(features)].notna().any()
    features = [c for c in features if known[c]]
    if not features:
        raise ValueError("every churn feature is missing in the training rows")
    classifier = HistGradientBoostingClassifier(random_state=random_state, **settings["classifier"])
    estimator = CalibratedClassifierCV(classifier, method=settings["calibration"], cv=calibration_folds(rows, settings, random_state))
    with threadpool_limits(settings["threads"]):
        estimator.fit(_matrix(rows, features), rows[LABEL].to_numpy())
    return ChurnModel(estimator, list(features), horizon_days, settings["threads"])


def calibration_folds(rows: pd.DataFrame, settings: dict, random_state: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds by user, shuffled: each fold holds every snapshot of its users.

    Rows come ordered by snapshot, so unshuffled folds would be blocks of
    time: each fold's model would then be calibrated on months (seasons) it
    never saw. Keeping a user's snapshots together stops the calibration from
    seeing the same customer on both sides.
    """
    folds = StratifiedGroupKFold(settings["calibration_folds"], shuffle=True, random_state=random_state)
    return list(folds.split(rows, rows[LABEL].to_numpy(), groups=rows["user_id"].to_numpy()))


def _matrix(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return add_calendar(features)[columns].to_numpy(dtype=float, na_value=np.nan)


def score(model: ChurnModel, features: pd.DataFrame) -> np.ndarray:
    """P(churn within the horizon) per row of ``features``, in [0, 1]."""
    if features.empty:
        return np.empty(0)
    with threadpool_limits(model.threads):
        probability = model.estimator.predict_proba(_matrix(features, model.features))[:, 1]
    return np.clip(probability, 0.0, 1.0)


def score_spark(model: ChurnModel, features):
    """``churn_probability`` per (user_id, dt) of a Spark DataFrame of features, scored on the executors."""

    def score_batch(batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"user_id": batch["user_id"], "dt": batch["dt"], "churn_probability": score(model, batch)})

    read = [column for column in model.features if column not in CALENDAR_FEATURES]
    return map_in_pandas(features.select("user_id", "dt", *read), score_batch, SCORE_SCHEMA)
