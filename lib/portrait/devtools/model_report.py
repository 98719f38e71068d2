"""``portrait evaluate``: the model tags of one snapshot against the generator's ground truth.

Only a generated lake has a truth (lib/portrait/devtools/generate.py ``read_truth``); there the
evaluation says whether each tag means what it claims:

* churn: the tag is P(no order in the next ``churn.horizon_days`` days); a
  customer at D truly churns when their churn date (the day they leave) lies
  on or before D + horizon. AUC, Brier, calibration bins, and the realised
  retention profit per threshold beside the expected one. ``auc_alive_at_dt``
  repeats the AUC on customers still alive on D: the harder question of who
  is about to leave, without the already-gone.
* p_alive: AUC for "not yet churned on D" among customers.
* gender and occupation: AUC and accuracy at the conf threshold against the
  true gender and occupation.
* taste, price and discount sensitivity: Pearson correlation with the true traits.

Figures go to ops.model_metrics (metric names prefixed ``truth_``, dt = the
snapshot, version = the model's) and a PNG under ``{lake}/ops/reports/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from portrait.core import storage
from portrait.core.config import Conf
from portrait.core.tables import Catalog
from portrait.devtools.generate import read_truth
from portrait.models import evaluate, load_settings, registry, threshold

PREFIX = "truth_"


@dataclass
class Evaluation:
    dt: date
    metrics: dict[str, dict[str, float]]  # model -> metric -> value
    versions: dict[str, str]
    plot: Path | None


def _auc(outcomes, scores) -> float:
    return evaluate.binary_metrics(outcomes, scores)["auc"]


def score_against_truth(
    tags: pd.DataFrame, truth: pd.DataFrame, dt: date, settings: dict
) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
    """Metrics per model, and (for churn) the reliability bins and the profit curve with realised profit."""
    rows = tags.merge(truth, on="user_id", how="inner", suffixes=("", "_true"))
    metrics: dict[str, dict[str, float]] = {}
    bins = curve = None
    churn_date = pd.to_datetime(rows["churn_date"])
    horizon = settings["churn"]["horizon_days"]
    churns = churn_date.notna() & (churn_date <= pd.Timestamp(dt + timedelta(days=horizon)))
    alive_at_dt = churn_date.isna() | (churn_date > pd.Timestamp(dt))

    scored = rows["churn_probability"].notna()
    if scored.any():
        y, p = churns[scored].astype(int), rows.loc[scored, "churn_probability"]
        metrics["churn"] = evaluate.binary_metrics(y, p, settings["churn"]["label_threshold"])
        alive = alive_at_dt[scored]
        metrics["churn"]["auc_alive_at_dt"] = _auc(y[alive], p[alive])
        bins = evaluate.reliability_bins(y, p)
        economics = settings["retention"]
        curve = threshold.profit_curve(
            p, economics["retention_cost"], economics["success_rate"], economics["value_per_user"], economics["threshold_step"], churned=y
        )
        metrics["churn"]["best_threshold_realised"] = threshold.best_threshold(curve, "realised_profit")
    customers = rows["p_alive"].notna()
    if customers.any():
        metrics["bgnbd"] = {
            "auc_alive": _auc(alive_at_dt[customers].astype(int), rows.loc[customers, "p_alive"]),
            "customers": float(customers.sum()),
        }
    if rows["p_male"].notna().any():
        male = (rows["true_gender"] == "M").astype(int)
        unreported = rows["gender_reported"].isna()
        metrics["gender"] = {
            **evaluate.binary_metrics(male, rows["p_male"], settings["gender"]["label_threshold"]),
            "auc_unreported": _auc(male[unreported], rows.loc[unreported, "p_male"]),
        }
    if rows["p_white_collar"].notna().any():
        metrics["occupation"] = {}
        for name in ("white_collar", "student"):
            figures = evaluate.binary_metrics(
                (rows["occupation"] == name).astype(int), rows[f"p_{name}"], settings["occupation"]["label_threshold"]
            )
            metrics["occupation"] |= {f"auc_{name}": figures["auc"], f"accuracy_{name}": figures["accuracy"]}
    tastes = [c for c in tags.columns if c.startswith("taste_") and f"{c}_true" in rows]
    if tastes and rows[tastes[0]].notna().any():
        correlations = {f"pearson_{c[len('taste_') :]}": float(np.corrcoef(rows[c], rows[f"{c}_true"])[0, 1]) for c in tastes}
        metrics["taste"] = {**correlations, "pearson_mean": float(np.mean(list(correlations.values())))}
    if rows["price_sensitivity"].notna().any():
        metrics["sensitivity"] = {
            f"pearson_{c}": float(np.corrcoef(rows[c], rows[f"{c}_true"])[0, 1]) for c in ("price_sensitivity", "discount_sensitivity")
        }
    return metrics, bins, curve


def run_evaluation(spark, lake: str, conf: Conf, dt: date) -> Evaluation:
    """Score profile.model_tags of ``dt`` against the truth; record the metrics and draw the plot."""
    catalog = Catalog(lake, conf)
    tags = catalog.read(spark, "profile.model_tags").where(F.col("dt") == F.lit(dt)).toPandas()
    if tags.empty:
        raise LookupError(f"profile.model_tags has no snapshot for {dt} in {lake}; run the models stage first")
    versions = dict(tags["model_versions"].iloc[0])
    metrics, bins, curve = score_against_truth(tags.drop(columns=["model_versions"]), read_truth(lake), dt, load_settings(conf))
    for model, values in metrics.items():
        registry.record_metrics(spark, catalog, model, versions[model], dt, {PREFIX + k: v for k, v in values.items()})
    plot = None
    if bins is not None:
        plot = evaluate.plot_report(
            bins, curve, storage.join(lake, "ops", "reports", f"churn_{dt}.png"), f"churn model {versions['churn']} on {dt}"
        )
    return Evaluation(dt, metrics, versions, plot)


def render(evaluation: Evaluation) -> str:
    lines = [f"model tags of {evaluation.dt} against the ground truth"]
    for model, values in evaluation.metrics.items():
        figures = "  ".join(f"{k}={v:.3f}" if isinstance(v, float) and abs(v) < 1000 else f"{k}={v:,.0f}" for k, v in values.items())
        lines.append(f"  {model:<12} v{evaluation.versions[model]}  {figures}")
    if evaluation.plot:
        lines.append(f"  plot: {evaluation.plot}")
    return "\n".join(lines)
