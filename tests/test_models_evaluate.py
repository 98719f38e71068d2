"""Evaluation figures by hand, and the report plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portrait.models import evaluate, threshold


def test_binary_metrics_by_hand():
    metrics = evaluate.binary_metrics([1, 0, 1, 0], [0.8, 0.4, 0.6, 0.1])
    assert metrics["auc"] == 1.0  # every positive above every negative
    assert metrics["brier"] == pytest.approx((0.04 + 0.16 + 0.16 + 0.01) / 4)
    assert metrics["accuracy"] == 1.0
    assert metrics["users"] == 4 and metrics["observed_rate"] == 0.5
    assert metrics["mean_predicted"] == pytest.approx(0.475)
    # bins [0.1,0.2): 0.1 vs 0; [0.4,0.5): 0.4 vs 0; [0.6,0.7): 0.6 vs 1; [0.8,0.9): 0.8 vs 1
    assert metrics["calibration_error"] == pytest.approx((0.1 + 0.4 + 0.4 + 0.2) / 4)


def test_auc_is_nan_with_one_outcome_only():
    metrics = evaluate.binary_metrics([0, 0], [0.2, 0.3])
    assert math.isnan(metrics["auc"]) and metrics["accuracy"] == 1.0


def test_reliability_bins_by_hand():
    bins = evaluate.reliability_bins([0, 1, 1, 0, 1], [0.05, 0.15, 0.95, 0.12, 1.0], bins=10)
    assert bins["bin_low"].tolist() == pytest.approx([0.0, 0.1, 0.9])
    assert bins["users"].tolist() == [1, 2, 2]
    assert bins["mean_predicted"].tolist() == pytest.approx([0.05, 0.135, 0.975])
    assert bins["observed_rate"].tolist() == [0.0, 0.5, 1.0]


def test_report_plot_is_a_png(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 500)
    y = rng.uniform(0, 1, 500) < p
    curve = threshold.profit_curve(p, 8, 0.25, 120, churned=y)
    path = evaluate.plot_report(evaluate.reliability_bins(y, p), curve, tmp_path / "report" / "churn.png", "churn 2026-08-31")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    alone = evaluate.plot_report(evaluate.reliability_bins(y, p), None, tmp_path / "gender.png", "gender")
    assert alone.stat().st_size > 5_000
