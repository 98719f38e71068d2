"""Model stage: silver and sub-profiles as known on D -> profile.model_tags (模型标签), one partition per D.

No look-ahead: every input is read as known at the end of D (``SilverAsOf``,
the same reader the sub-profile stages use), so a rerun of D gives the same rows.

* Daily models - BG/NBD, gender, occupation, taste, sensitivity - are small and
  unsupervised (or self-labelled), so they are fitted on D's data every run,
  versioned D (YYYYMMDD) in the registry. They run in pandas on the driver:
  their inputs are one row per order, item or salad event of a 90-180 day
  window, a few million rows at most at this shop's scale (a much larger shop
  would aggregate to (user, signal) counts in Spark first).
* Churn is supervised and needs labels that only time gives, so it is trained
  on past snapshots only when due (no model yet, or the newest one at least
  ``churn.retrain_every_days`` old), then reused; it is scored distributed
  with mapInPandas. Training snapshots are read from the published
  sub-profile partitions and, where a date has none (the pipeline started
  later than the history), computed with the same sub-profile job functions
  over silver as known on that date - the features are identical either way.
  When the history is too short for a time split (a snapshot whose label
  window has closed, and an older one to train on), churn_probability is
  null with the reason in the stage notes; an earlier model is used if any.

A model that cannot be fitted on D's data (e.g. an order-only export has no
items or events for taste) leaves its columns null with the reason in the
notes; ``model_versions`` names the models that did run, and the gate checks
that a tag is present exactly when its model ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from threadpoolctl import threadpool_limits

from portrait.clean.as_of import SilverAsOf
from portrait.core.pipeline import Output, RunContext
from portrait.models import bgnbd, churn, evaluate, gender, load_settings, occupation, registry, sensitivity, taste, threshold
from portrait.subprofiles.snapshots import BUILDERS

log = logging.getLogger(__name__)

MODEL_TAGS, THRESHOLD_CURVE = "profile.model_tags", "ops.threshold_curve"


@dataclass
class Inputs:
    """What the daily models read, as pandas frames known on D."""

    users: pd.DataFrame  # user_id, name, gender
    purchases: pd.DataFrame  # user_id, dt, address_id, coupon_amount: orders that count, all history
    items: pd.DataFrame  # user_id, category, price, qty: salad lines of the last taste/sensitivity window
    events: pd.DataFrame  # user_id, event_type, category, n: salad browsing of the taste window, counted per kind
    addresses: pd.DataFrame  # address_id, poi_type

    @classmethod
    def read(cls, ctx: RunContext, settings: dict) -> Inputs:
        silver, dt = SilverAsOf(ctx), ctx.dt
        categories = ctx.conf.landing["categories"][settings["taste"]["product_line"]]
        item_days = max(settings["taste"]["window_days"], settings["sensitivity"]["window_days"])
        signals = [s for s in settings["taste"]["signals"] if s != taste.ORDER]
        events = silver.events(since=dt - timedelta(days=settings["taste"]["window_days"] - 1)).where(
            (F.col("product_line") == settings["taste"]["product_line"]) & F.col("event_type").isin(*signals) & F.col("user_id").isNotNull()
        )
        return cls(
            users=silver.users().select("user_id", "name", "gender").toPandas(),
            purchases=silver.orders().select("user_id", "dt", "address_id", "coupon_amount").toPandas(),
            items=silver.order_items(since=dt - timedelta(days=item_days - 1))
            .where(F.col("category").isin(*categories))
            .select("user_id", "category", "price", "qty", "dt")
            .toPandas(),
            # counted on the engine: millions of views become a row per user, kind and category
            events=events.groupBy("user_id", "event_type", "category").agg(F.count(F.lit(1)).alias("n")).toPandas(),
            addresses=silver.addresses().select("address_id", "poi_type").toPandas(),
        )


def run(ctx: RunContext) -> list[Output]:
    """Fit the daily models, load or retrain churn, score every user known on D."""
    settings = load_settings(ctx.conf)
    inputs = Inputs.read(ctx, settings)
    tags = inputs.users[["user_id"]].assign(gender_reported=inputs.users["gender"].astype(object))
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, fit_and_score in DAILY_MODELS.items():
        try:
            with threadpool_limits(settings["driver_threads"]):
                scores = fit_and_score(ctx, settings, inputs)
        except ValueError as exc:  # the library's "nothing to learn from": the tags stay null
            skipped[name] = str(exc)
            log.warning("model %s skipped for %s: %s", name, ctx.dt, exc)
            continue
        tags = tags.merge(scores, on="user_id", how="left")
        versions[name] = registry.version_for(ctx.dt)

    outputs = []
    model, churn_version, note = churn_model(ctx, settings, inputs.purchases)
    if note:
        skipped["churn"] = note
    if model is not None:
        scored = churn.score_spark(model, customer_features(ctx, settings["churn"], ctx.dt)).toPandas()
        tags = tags.merge(scored[["user_id", "churn_probability"]], on="user_id", how="left")
        versions["churn"] = churn_version
        outputs.append(
            Output(THRESHOLD_CURVE, threshold_curve(ctx, settings, tags["churn_probability"].dropna(), churn_version), "partition", ctx.dt)
        )
    ctx.notes["model_versions"] = versions
    ctx.notes["models_skipped"] = skipped
    outputs.insert(0, Output(MODEL_TAGS, model_tags_frame(ctx, tags, versions), "partition", ctx.dt))
    return outputs


# --------------------------------------------------------------------------- daily models


def _register(
    ctx: RunContext,
    model: str,
    params: dict,
    train_start: date,
    metrics: dict | None = None,
    fitted=None,
    train_end: date | None = None,
    metrics_dt: date | None = None,
) -> None:
    """Save the artefact of ``model`` version D, upsert its registry row and record its metrics (on ``metrics_dt``, default D).

    Written when the model is trained, not through the stage's gate: the
    registry records what was trained; the tags still publish only if they pass.
    """
    version = registry.version_for(ctx.dt)
    folder = registry.save(ctx.lake, model, version, params, fitted)
    registry.register(
        ctx.spark,
        ctx.catalog,
        registry.ModelVersion(model, version, datetime.now(UTC), train_start, train_end or ctx.dt, params, metrics or {}, str(folder)),
    )
    if metrics:
        registry.record_metrics(ctx.spark, ctx.catalog, model, version, metrics_dt or ctx.dt, metrics)


def _window_start(ctx: RunContext, days: int) -> date:
    return ctx.dt - timedelta(days=days - 1)


def fit_bgnbd(ctx: RunContext, settings: dict, inputs: Inputs) -> pd.DataFrame:
    """P(alive) and expected purchases from every customer's purchase days up to D."""
    summary = bgnbd.customer_summary(inputs.purchases, ctx.dt)
    penalty = settings["bgnbd"]["penalty"]
    params, log_likelihood = bgnbd.fit(summary["frequency"], summary["recency"], summary["age"], penalty)
    scores = bgnbd.score(params, summary, settings["bgnbd"]["horizon_days"])
    if not (scores["p_alive"].between(0, 1).all() and (scores["expected_purchases"] >= 0).all()):  # NaN fails too
        raise ValueError(f"the BG/NBD fit on {len(summary)} customers is degenerate ({params}): too little order history")
    _register(
        ctx,
        "bgnbd",
        {**params.to_dict(), "penalty": penalty},
        min(inputs.purchases["dt"]),
        {"log_likelihood": log_likelihood, "customers": float(len(summary))},
    )
    return scores.rename(columns={"expected_purchases": "expected_purchases_30d"})


def fit_gender(ctx: RunContext, settings: dict, inputs: Inputs) -> pd.DataFrame:
    """P(male) from the given name, learnt from the users who reported a gender (plus the name register)."""
    conf = settings["gender"]
    surnames = frozenset(conf["compound_surnames"])
    model = gender.train(
        inputs.users["name"],
        inputs.users["gender"],
        surnames,
        conf["smoothing"],
        gender.charfreq_prior(),
        conf["prior_weight"],
        conf["name_weight"],
        conf["min_name_users"],
    )
    labelled = int(inputs.users["gender"].isin([gender.MALE, gender.FEMALE]).sum())
    _register(ctx, "gender", {**model.to_dict(), "labelled_users": labelled}, ctx.dt)
    return pd.DataFrame({"user_id": inputs.users["user_id"], "p_male": gender.p_male(model, inputs.users["name"], surnames)})


def fit_occupation(ctx: RunContext, settings: dict, inputs: Inputs) -> pd.DataFrame:
    """P(white_collar), P(student) from where and when the last window's orders were delivered."""
    conf = settings["occupation"]
    recent = inputs.purchases[pd.to_datetime(inputs.purchases["dt"]) >= pd.Timestamp(_window_start(ctx, conf["window_days"]))]
    counts = occupation.delivery_counts(recent, inputs.addresses, conf["poi_types"], conf["summer_months"])
    model = occupation.fit(counts, conf["classes"], conf["prior_strength"], conf["max_iterations"])
    _register(ctx, "occupation", model.to_dict(), _window_start(ctx, conf["window_days"]))
    everyone = counts.reindex(pd.Index(inputs.users["user_id"], name="user_id"), fill_value=0.0)
    return occupation.score(model, everyone)[["user_id", "p_white_collar", "p_student"]]


def fit_taste(ctx: RunContext, settings: dict, inputs: Inputs) -> pd.DataFrame:
    """Preference per salad category by NMF over orders, add-to-carts and views of the window."""
    conf = settings["taste"]
    since = pd.Timestamp(_window_start(ctx, conf["window_days"]))
    items = inputs.items[pd.to_datetime(inputs.items["dt"]) >= since]
    categories = ctx.conf.landing["categories"][conf["product_line"]]
    matrix = taste.signal_matrix(items, inputs.events, categories, conf["signals"])
    model = taste.fit(matrix, categories, conf["n_components"])
    _register(ctx, "taste", model.to_dict(), since.date())
    everyone = matrix.reindex(pd.Index(inputs.users["user_id"], name="user_id"), fill_value=0.0)
    return taste.score(model, everyone)


def fit_sensitivity(ctx: RunContext, settings: dict, inputs: Inputs) -> pd.DataFrame:
    """Price and discount sensitivity, shrunk towards the population by empirical Bayes."""
    since = _window_start(ctx, settings["sensitivity"]["window_days"])
    items = inputs.items[pd.to_datetime(inputs.items["dt"]) >= pd.Timestamp(since)]
    recent = inputs.purchases[pd.to_datetime(inputs.purchases["dt"]) >= pd.Timestamp(since)]
    scores, fitted = sensitivity.score(items, recent, inputs.users["user_id"])
    _register(ctx, "sensitivity", fitted, since)
    return scores


DAILY_MODELS = {"bgnbd": fit_bgnbd, "gender": fit_gender, "occupation": fit_occupation, "taste": fit_taste, "sensitivity": fit_sensitivity}


# --------------------------------------------------------------------------- churn


def customer_features(ctx: RunContext, settings: dict, snapshot: date) -> DataFrame:
    """The churn model's inputs at ``snapshot`` for users with a purchase by then.

    From the published sub-profile partitions, or, for a date that has none,
    computed by the same sub-profile job functions over silver as known then.
    """
    features = None
    for table, columns in settings["features"].items():
        rows = ctx.catalog.read(ctx.spark, table).where(F.col("dt") == F.lit(snapshot))
        if rows.select("user_id").limit(1).count() == 0:
            rows = BUILDERS[table](replace(ctx, dt=snapshot))
        if table == "profile.consumption":
            rows = rows.where(F.col("orders_total") > 0)  # the customers: labels and scores are for them
        rows = rows.select("user_id", *columns)
        features = rows if features is None else features.join(rows, "user_id")
    return features.withColumn("dt", F.lit(snapshot).cast("date"))


def training_snapshots(ctx: RunContext, settings: dict, first_order_day: date | None) -> list[date]:
    """Snapshots whose label window closed by D, every ``snapshot_every_days`` back, each with enough history before it."""
    newest = ctx.dt - timedelta(days=settings["horizon_days"])
    earliest = None if first_order_day is None else first_order_day + timedelta(days=settings["min_history_days"])
    snapshots = [newest - timedelta(days=n * settings["snapshot_every_days"]) for n in range(settings["training_snapshots"])]
    return [s for s in snapshots if earliest is not None and s >= earliest]


def churn_model(ctx: RunContext, settings: dict, purchases: pd.DataFrame) -> tuple[churn.ChurnModel | None, str | None, str | None]:
    """(model, version, note): the current model, retrained first when due; note says why there is none or why it is old."""
    conf = settings["churn"]
    newest = registry.latest(ctx.spark, ctx.catalog, "churn", on_or_before=ctx.dt)
    current = None if newest is None else newest.version
    if current is not None and (ctx.dt - datetime.strptime(current, "%Y%m%d").date()).days < conf["retrain_every_days"]:
        return registry.load_fitted(ctx.lake, "churn", current), current, None
    first_order_day = min(purchases["dt"]) if len(purchases) else None
    snapshots = training_snapshots(ctx, conf, first_order_day)
    if len(snapshots) < 2 or snapshots[-1] > snapshots[0] - timedelta(days=conf["horizon_days"]):
        note = (
            f"not enough history to train churn on {ctx.dt}: a time split needs a labelled snapshot on "
            f"{snapshots[0] if snapshots else ctx.dt - timedelta(days=conf['horizon_days'])} and one at least "
            f"{conf['horizon_days']} days earlier, each with {conf['min_history_days']} days of orders before it "
            f"(orders since {first_order_day})"
        )
        if current is None:
            return None, None, note
        return registry.load_fitted(ctx.lake, "churn", current), current, f"{note}; using version {current}"
    return train_churn(ctx, settings, purchases, snapshots), registry.version_for(ctx.dt), None


def train_churn(ctx: RunContext, settings: dict, purchases: pd.DataFrame, snapshots: list[date]) -> churn.ChurnModel:
    """Measure the recipe on the newest snapshot (trained on older ones), then fit it on all of them."""
    conf = settings["churn"]
    features = pd.concat([customer_features(ctx, conf, s).toPandas() for s in snapshots], ignore_index=True)
    rows = churn.training_set(features, purchases[["user_id", "dt"]], conf["horizon_days"], ctx.dt)
    train, holdout = churn.time_split(rows, conf["horizon_days"])
    trial = churn.train(train, churn.feature_columns(conf, train["dt"].unique()), conf["horizon_days"], conf)
    metrics = evaluate.binary_metrics(holdout[churn.LABEL], churn.score(trial, holdout), conf["label_threshold"])
    model = churn.train(rows, churn.feature_columns(conf, rows["dt"].unique()), conf["horizon_days"], conf)
    holdout_dt = holdout["dt"].iloc[0]
    params = {**model.params(), "snapshots": [str(s) for s in snapshots], "training_rows": len(rows), "holdout_snapshot": str(holdout_dt)}
    _register(ctx, "churn", params, min(snapshots), metrics, fitted=model, train_end=max(snapshots), metrics_dt=holdout_dt)
    return model


def threshold_curve(ctx: RunContext, settings: dict, probabilities: pd.Series, version: str) -> DataFrame:
    """Expected retention profit per threshold on D's churn probabilities; the best one flagged and recorded."""
    economics = settings["retention"]
    curve = threshold.profit_curve(
        probabilities.to_numpy(),
        economics["retention_cost"],
        economics["success_rate"],
        economics["value_per_user"],
        economics["threshold_step"],
    )
    best = threshold.best_threshold(curve)
    at_best = curve[np.isclose(curve["threshold"], best)].iloc[0]
    registry.record_metrics(
        ctx.spark,
        ctx.catalog,
        "churn",
        version,
        ctx.dt,
        {"best_threshold": best, "best_expected_profit": float(at_best["expected_profit"]), "targeted_at_best": float(at_best["targeted"])},
    )
    spec = ctx.catalog.spec(THRESHOLD_CURVE)
    curve = curve.assign(model="churn", version=version, best=np.isclose(curve["threshold"], best), dt=ctx.dt)
    return ctx.spark.createDataFrame(curve[list(spec.columns)].astype({"targeted": "int64"}), spec.ddl)


# --------------------------------------------------------------------------- the table


def model_tags_frame(ctx: RunContext, tags: pd.DataFrame, versions: dict[str, str]) -> DataFrame:
    """The declared profile.model_tags columns: a null column for every model that did not run."""
    spec = ctx.catalog.spec(MODEL_TAGS)
    tag_columns = [c for c in spec.columns if c not in ("user_id", "gender_reported", "churn_model_version", "model_versions", "dt")]
    frame = tags.reindex(columns=["user_id", "gender_reported", *tag_columns])
    frame[tag_columns] = frame[tag_columns].astype(float)
    schema = "user_id string, gender_reported string, " + ", ".join(f"{c} double" for c in tag_columns)
    df = ctx.spark.createDataFrame(frame.astype({"user_id": object, "gender_reported": object}).replace({np.nan: None}), schema)
    pairs = [F.lit(v) for name, version in sorted(versions.items()) for v in (name, version)]
    df = df.withColumns(
        {
            "churn_model_version": F.lit(versions.get("churn")).cast("string"),
            "model_versions": F.create_map(*pairs) if pairs else F.create_map().cast("map<string,string>"),
            "dt": F.lit(ctx.dt).cast("date"),
        }
    )
    return df.select(*spec.columns)
