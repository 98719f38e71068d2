"""The engine-side statistics of the models stage against the pure pandas functions, on small hand-made frames."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from portrait.models import churn, gender, sensitivity, threshold


def test_labels_on_the_engine_equal_the_pandas_labels(spark):
    features = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "a", "b", "d"],
            "dt": [date(2026, 5, 1)] * 3 + [date(2026, 5, 15)] * 2 + [date(2026, 8, 30)],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    purchases = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "c", "d"],
            "dt": [date(2026, 4, 1), date(2026, 5, 20), date(2026, 4, 2), date(2026, 6, 30), date(2026, 5, 2), date(2026, 8, 1)],
        }
    )
    expected = churn.training_set(features, purchases, 30, date(2026, 7, 1)).sort_values(["dt", "user_id"], ignore_index=True)
    got = churn.training_set_spark(
        spark.createDataFrame(features, "user_id string, dt date, x double"),
        spark.createDataFrame(purchases, "user_id string, dt date"),
        30,
        date(2026, 7, 1),
    ).toPandas()
    got = got.sort_values(["dt", "user_id"], ignore_index=True)[list(expected.columns)]
    # c bought after S only: not a customer on 2026-05-01; d's snapshot has no complete label window
    assert expected[["user_id", churn.LABEL]].values.tolist() == [["a", 0], ["b", 1], ["a", 0], ["b", 1]]
    pd.testing.assert_frame_equal(
        got.astype({churn.LABEL: int, "user_id": object}), expected.astype({"user_id": object}), check_dtype=False
    )


def test_labels_of_no_snapshot_rows_are_empty_not_a_merge_error():
    """Issue 14: an export landed at once had no customer at any past snapshot; the empty left side broke merge_asof."""
    empty = pd.DataFrame({"user_id": pd.Series([], dtype=object), "dt": pd.Series([], dtype=object)})
    purchases = pd.DataFrame({"user_id": ["100001"], "dt": [date(2026, 4, 1)]}).astype({"user_id": "str"})
    assert churn.labels(empty, purchases, 30).empty


def test_gender_from_counts_equals_gender_from_users():
    names = pd.Series(["王国庆", "李国庆", "张婷婷", "赵婷婷", "欧阳娜娜", "刘爱华", "陈爱华", "周明"])
    genders = pd.Series(["M", "M", "F", "F", "F", "M", "F", None])
    surnames = frozenset(["欧阳"])
    direct = gender.train(names, genders, surnames, smoothing=1.0, prior=None, prior_weight=0.0, name_weight=5.0, min_name_users=2)
    counts = gender.given_name_counts(pd.DataFrame({"name": names, "gender": genders}), surnames)
    halves = pd.concat([counts.iloc[:2], counts.iloc[2:]]).groupby(["given", "gender"], as_index=False)["users"].sum()
    assert gender.train_on_counts(halves, 1.0, None, 0.0, 5.0, 2) == direct


def test_shrinkage_from_moments_equals_the_fit_on_totals():
    totals = pd.DataFrame({"n": [1.0, 3.0, 5.0, 2.0, 0.0], "total": [1.0, 1.0, 4.0, 0.0, 0.0], "total_sq": [1.0, 1.0, 4.0, 0.0, 0.0]})
    m = sensitivity.moments(totals)
    assert sensitivity.fit_shrinkage_from_moments(m) == pytest.approx(sensitivity.fit_shrinkage(totals))
    with pytest.raises(ValueError, match="no user"):
        sensitivity.fit_shrinkage_from_moments(sensitivity.moments(totals.iloc[4:]))


def test_profit_curve_from_bins_equals_the_curve_on_every_user():
    p = np.array([0.0, 0.005, 0.01, 0.27, 0.27, 0.5, 0.999, 1.0, 0.07])
    step = 0.01
    grid = threshold.grid(step)
    k = np.searchsorted(grid, p, side="right") - 1
    bins = pd.DataFrame({"bin": k, "users": 1, "p_sum": p}).groupby("bin", as_index=False).sum()
    expected = threshold.profit_curve(p, 8.0, 0.25, 120.0, step)
    got = threshold.profit_curve_from_bins(bins, 8.0, 0.25, 120.0, step)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
