"""Model stage: silver and sub-profiles as known on D -> profile.model_tags (模型标签), one partition per D.

No look-ahead: every input is read as known at the end of D (``SilverAsOf``,
the same reader the sub-profile stages use), so a rerun of D gives the same rows.

No per-user data on the driver (issue 14): what grows with users is computed
on the engine - per-customer (frequency, recency, age) for BG/NBD, labelled
users per given name for gender, deliveries per user and cell for occupation,
the user x (signal, category) matrix for taste, per-user price and coupon
totals for sensitivity, churn labels. The driver fits on sufficient statistics
(BG/NBD's distinct (x, t_x, T) triples with their counts, given-name counts,
sensitivity's moments, the churn threshold curve's bins) or on a bounded,
seeded sample of users (occupation, taste: ``driver.fit_sample_customers``;
churn training rows: ``churn.max_training_rows``), recorded in the registry
with its size; every per-user score is computed on the engine (mapInPandas
with the fitted parameters, or SQL). docs/models.md says what the driver holds.

* Daily models - BG/NBD, gender, occupation, taste, sensitivity - are small and
  unsupervised (or self-labelled), so they are fitted on D's data every run,
  versioned D (YYYYMMDD) in the registry.
* Churn is supervised and needs labels that only time gives, so it is trained
  on past snapshots only when due (no model yet, or the newest one at least
  ``churn.retrain_every_days`` old), then reused. Training snapshots are read
  from the published sub-profile partitions and, where a date has none (the
  pipeline started later than the history), computed with the same
  sub-profile job functions over silver: the rows of business date <= S as
  landed by D (``RunContext.known_on``), so a history landed at once (an
  order export) still has its past. When the history is too short for a time
  split (a snapshot whose label window has closed, and an older one to train
  on), churn_probability is null with the reason in the stage notes; an
  earlier model is used if any.

A model that cannot be fitted or scored on D's data (e.g. an order-only export
has no items or events for taste), or fails in any other way, leaves its
columns null with the reason in the notes (``models_skipped``) and the other
models still publish; ``model_versions`` names the models that did run, and
the gate checks that a tag is present exactly when its model ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from threadpoolctl import threadpool_limits

from portrait.clean.as_of import SilverAsOf
from portrait.core.columns import rounded
from portrait.core.pipeline import Output, RunContext
from portrait.models import bgnbd, churn, evaluate, gammagamma, gender, load_settings, occupation, registry, sensitivity, taste, threshold
from portrait.models.distributed import map_in_pandas
from portrait.subprofiles.snapshots import BUILDERS

log = logging.getLogger(__name__)

MODEL_TAGS, THRESHOLD_CURVE, CAMPAIGN_RESULTS = "profile.model_tags", "ops.threshold_curve", "ops.campaign_results"


@dataclass
class Inputs:
    """What the daily models read, as engine DataFrames known on D (nothing is collected here)."""

    users: DataFrame  # user_id, name, gender
    purchases: DataFrame  # user_id, dt, address_id, coupon_amount, amount: orders that count, all history
    items: DataFrame  # user_id, category, price, qty, dt: salad lines of the last taste/sensitivity window
    events: DataFrame  # user_id, event_type, category, n: salad browsing of the taste window, counted per kind
    addresses: DataFrame  # address_id, poi_type

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
            users=silver.users().select("user_id", "name", "gender"),
            purchases=silver.orders().select("user_id", "dt", "address_id", "coupon_amount", "amount"),
            items=silver.order_items(since=dt - timedelta(days=item_days - 1))
            .where(F.col("category").isin(*categories))
            .select("user_id", "category", "price", "qty", "dt"),
            events=events.groupBy("user_id", "event_type", "category").agg(F.count(F.lit(1)).alias("n")),
            addresses=silver.addresses().select("address_id", "poi_type"),
        )


def run(ctx: RunContext) -> list[Output]:
    """Fit the daily models, load or retrain churn, score every user known on D (on the engine)."""
    settings = load_settings(ctx.conf)
    inputs = Inputs.read(ctx, settings)
    scores: list[DataFrame] = []
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, fit_and_score in DAILY_MODELS.items():
        try:
            with threadpool_limits(settings["driver_threads"]):
                # written here, so an error while scoring on the engine is this model's, not the table write's
                scores.append(ctx.materialize(fit_and_score(ctx, settings, inputs), f"scores_{name}"))
        except Exception as exc:  # noqa: BLE001 - one model's failure must not take the others down
            skipped[name] = _reason(name, exc)
            log.warning("model %s skipped for %s: %s", name, ctx.dt, skipped[name])
            continue
        versions[name] = registry.version_for(ctx.dt)

    outputs = []
    try:
        model, churn_version, note = churn_model(ctx, settings, inputs.purchases)
        if note:
            skipped["churn"] = note
        if model is not None:
            scored = churn.score_spark(model, customer_features(ctx, settings["churn"], ctx.dt)).select("user_id", "churn_probability")
            scored = ctx.materialize(scored, "scores_churn")
            values = next((frame for frame in scores if "clv_90d" in frame.columns), None)
            curve = threshold_curve(ctx, settings, scored, churn_version, values)
            scores.append(scored)
            versions["churn"] = churn_version
            outputs.append(Output(THRESHOLD_CURVE, curve, "partition", ctx.dt))
    except Exception as exc:  # noqa: BLE001 - churn null with the reason, the daily models still publish
        skipped["churn"] = _reason("churn", exc)
        log.warning("model churn skipped for %s: %s", ctx.dt, skipped["churn"])
    ctx.notes["model_versions"] = versions
    ctx.notes["models_skipped"] = skipped
    outputs.insert(0, Output(MODEL_TAGS, model_tags_frame(ctx, inputs.users, scores, versions), "partition", ctx.dt))
    return outputs + collected_outputs(ctx)


def _reason(model: str, exc: Exception) -> str:
    """The note for a model that did not run: the library's own words for "nothing to learn from", else the error's kind too."""
    text = " ".join(str(exc).split())[:400]
    return text if type(exc) is ValueError else f"{model} failed ({type(exc).__name__}): {text}"


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
    """Save the artefact of ``model`` version D; collect its registry row and its metrics (on ``metrics_dt``, default D).

    The rows publish with the stage's outputs (:func:`collected_outputs`), after
    its gate: a models run that fails its gate registers nothing.
    """
    version = registry.version_for(ctx.dt)
    folder = registry.save(ctx.lake, model, version, params, fitted)
    entry = registry.ModelVersion(model, version, datetime.now(UTC), train_start, train_end or ctx.dt, params, metrics or {}, str(folder))
    ctx.collected.setdefault(registry.REGISTRY, []).extend(registry.registry_rows(entry))
    if metrics:
        ctx.collected.setdefault(registry.METRICS, []).extend(registry.metric_rows(model, version, metrics_dt or ctx.dt, metrics))


def collected_outputs(ctx: RunContext) -> list[Output]:
    """The registry and metric rows this run collected, as upserts (one row per key: the last collected)."""
    outputs = []
    for table in (registry.REGISTRY, registry.METRICS):
        rows = ctx.collected.get(table) or []
        if not rows:
            continue
        spec = ctx.catalog.spec(table)
        at = [list(spec.columns).index(k) for k in spec.key]
        latest = {tuple(row[i] for i in at): row for row in rows}
        outputs.append(Output(table, ctx.spark.createDataFrame(list(latest.values()), spec.ddl), "upsert"))
    return outputs


def _window_start(ctx: RunContext, days: int) -> date:
    return ctx.dt - timedelta(days=days - 1)


def fit_sample(df: DataFrame, limit: int, seed: int, *keys: str) -> tuple[pd.DataFrame, int]:
    """(at most ``limit`` rows of ``df`` on the driver, how many there were): a seeded hash sample beyond the limit.

    The same rows for the same data and seed whatever the partitioning, so a rerun fits the same model.
    """
    total = df.count()
    if total <= limit:
        return df.toPandas(), total
    order = F.xxhash64(*(F.col(k) for k in keys), F.lit(seed))
    return df.orderBy(order, *keys).limit(limit).toPandas(), total


def _sample_note(rows: int, total: int) -> dict:
    return {"fit_sample": {"rows": int(rows), "of": int(total)}}


def fit_bgnbd(ctx: RunContext, settings: dict, inputs: Inputs) -> DataFrame:
    """P(alive) and expected purchases from every customer's purchase days up to D.

    Per customer (frequency, recency, age) on the engine; the fit reads only the
    distinct triples with their counts (at most one per (x, t_x, T) of the history's days).
    """
    day = F.col("dt")
    days = (
        inputs.purchases.where(day <= F.lit(ctx.dt)).groupBy("user_id", day.alias("day")).agg(F.sum("amount").alias("spend"))
    )  # one row per purchase day, with its spend (the Gamma-Gamma model's transaction value)
    first = F.min("day").over(Window.partitionBy("user_id"))
    repeat_spend = F.when(F.col("day") > F.col("first"), F.col("spend"))
    summary = ctx.materialize(
        days.withColumn("first", first)
        .groupBy("user_id")
        .agg(
            F.count(F.lit(1)).alias("days"),
            F.min("day").alias("first"),
            F.max("day").alias("last"),
            F.coalesce(F.avg(repeat_spend), F.lit(0.0)).alias("monetary"),
        )
        .select(
            "user_id",
            (F.col("days") - 1).cast("bigint").alias("frequency"),
            F.datediff("last", "first").cast("bigint").alias("recency"),
            F.datediff(F.lit(ctx.dt), "first").cast("bigint").alias("age"),
            rounded(F.col("monetary").cast("double"), 6).alias("monetary"),  # no float-summation order in the fit
        ),
        "bgnbd_summary",
    )
    triples = summary.groupBy(*bgnbd.SUMMARY_COLUMNS).agg(F.count(F.lit(1)).alias("customers")).toPandas()
    penalty, horizon = settings["bgnbd"]["penalty"], settings["bgnbd"]["horizon_days"]
    params, log_likelihood = bgnbd.fit(triples["frequency"], triples["recency"], triples["age"], penalty, counts=triples["customers"])
    check = bgnbd.score(params, triples, horizon)
    customers = int(triples["customers"].sum())
    if not (check["p_alive"].between(0, 1).all() and (check["expected_purchases"] >= 0).all()):  # NaN fails too
        raise ValueError(f"the BG/NBD fit on {customers} customers is degenerate ({params}): too little order history")
    _register(
        ctx,
        "bgnbd",
        {**params.to_dict(), "penalty": penalty, "distinct_histories": len(triples)},
        ctx.dt - timedelta(days=int(triples["age"].max())),
        {"log_likelihood": log_likelihood, "customers": float(customers)},
    )
    spend = fit_spend(ctx, settings, summary)
    clv_days, margin = settings["gammagamma"]["clv_horizon_days"], settings["gammagamma"]["margin"]

    def score_batch(batch: pd.DataFrame) -> pd.DataFrame:
        scored = bgnbd.score(params, batch.drop(columns=["monetary"]), horizon).rename(
            columns={"expected_purchases": "expected_purchases_30d"}
        )
        if spend is None:
            return scored.assign(clv_90d=np.nan)
        values = [batch[c] for c in bgnbd.SUMMARY_COLUMNS]
        purchases = bgnbd.expected_purchases(params, clv_days, *values)
        per_purchase = gammagamma.expected_spend(spend, batch["frequency"], batch["monetary"])
        return scored.assign(clv_90d=gammagamma.clv(purchases, per_purchase, margin))

    return map_in_pandas(summary, score_batch, "user_id string, p_alive double, expected_purchases_30d double, clv_90d double")


def fit_spend(ctx: RunContext, settings: dict, summary: DataFrame) -> gammagamma.GammaGammaParams | None:
    """The Gamma-Gamma spend model on the repeat customers (a sample on the driver); None (clv_90d null) if it cannot fit."""
    repeat = summary.where(F.col("frequency") > 0).select("user_id", "frequency", "monetary")
    rows, available = fit_sample(repeat, settings["driver"]["fit_sample_customers"], settings["driver"]["sample_seed"], "user_id")
    rows = rows.sort_values("user_id", ignore_index=True)  # the engine hands rows over in no fixed order: a rerun fits the same
    try:
        params, log_likelihood = gammagamma.fit(rows["frequency"], rows["monetary"])
        if params.q <= 1:
            raise ValueError(f"q = {params.q:.3f} <= 1: the fitted spend has no finite mean")
    except ValueError as exc:
        log.warning("gamma-gamma spend model not fitted on %s: %s; clv_90d stays null", ctx.dt, exc)
        ctx.notes["gammagamma_skipped"] = str(exc)
        return None
    ctx.notes["gammagamma"] = {**params.to_dict(), "population_mean": params.population_mean, **_sample_note(len(rows), int(available))}
    _register(
        ctx,
        "gammagamma",
        {**params.to_dict(), "margin": settings["gammagamma"]["margin"], "clv_horizon_days": settings["gammagamma"]["clv_horizon_days"]},
        ctx.dt,
        {"log_likelihood": log_likelihood, "customers": float(len(rows))},
    )
    return params


def fit_gender(ctx: RunContext, settings: dict, inputs: Inputs) -> DataFrame:
    """P(male) from the given name, learnt from the users who reported a gender (plus the name register).

    Labelled users per (given name, gender) are counted on the engine; the driver holds those counts only.
    """
    conf = settings["gender"]
    surnames = frozenset(conf["compound_surnames"])
    labelled = inputs.users.where(F.col("gender").isin(gender.MALE, gender.FEMALE)).select("name", "gender")

    def count_batch(batch: pd.DataFrame) -> pd.DataFrame:
        return gender.given_name_counts(batch, surnames)

    counts = (
        map_in_pandas(labelled, count_batch, "given string, gender string, users bigint")
        .groupBy("given", "gender")
        .agg(F.sum("users").alias("users"))
        .toPandas()
    )
    model = gender.train_on_counts(
        counts, conf["smoothing"], gender.charfreq_prior(), conf["prior_weight"], conf["name_weight"], conf["min_name_users"]
    )
    _register(ctx, "gender", {**model.to_dict(), "labelled_users": int(counts["users"].sum()), "given_name_rows": len(counts)}, ctx.dt)

    def score_batch(batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"user_id": batch["user_id"], "p_male": gender.p_male(model, batch["name"], surnames)})

    return map_in_pandas(inputs.users.select("user_id", "name"), score_batch, "user_id string, p_male double")


def _wide(columns: list[str]) -> list[str]:
    """Engine-safe names for the model's columns (``office|weekday|term``, ``view:fruit``): c0, c1, ..."""
    return [f"c{n}" for n in range(len(columns))]


def _named(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A wide frame from the engine (user_id, c0..) as the pure functions take it: indexed by user, the model's column names."""
    return frame.set_index("user_id")[_wide(columns)].set_axis(columns, axis=1).astype(float)


def fit_occupation(ctx: RunContext, settings: dict, inputs: Inputs) -> DataFrame:
    """P(white_collar), P(student) from where and when the last window's orders were delivered.

    Orders per user and cell on the engine; EM on a bounded seeded sample of
    the users with deliveries; every user scored on the engine.
    """
    conf, bounds = settings["occupation"], settings["driver"]
    cell_names = occupation.cells(conf["poi_types"])
    wide = _wide(cell_names)
    placed = (
        inputs.purchases.where(F.col("dt") >= F.lit(_window_start(ctx, conf["window_days"])))
        .join(inputs.addresses, "address_id")
        .select("user_id", "address_id", "dt", "poi_type")
    )

    def count_batch(batch: pd.DataFrame) -> pd.DataFrame:
        counts = occupation.delivery_counts(
            batch, batch[["address_id", "poi_type"]].drop_duplicates(), conf["poi_types"], conf["summer_months"]
        )
        return counts.set_axis(wide, axis=1).reset_index()

    schema = "user_id string, " + ", ".join(f"{c} double" for c in wide)
    counts = ctx.materialize(
        map_in_pandas(placed, count_batch, schema).groupBy("user_id").agg(*(F.sum(c).alias(c) for c in wide)), "occupation_counts"
    )
    sample, total = fit_sample(counts, bounds["fit_sample_customers"], bounds["sample_seed"], "user_id")
    model = occupation.fit(_named(sample, cell_names), conf["classes"], conf["prior_strength"], conf["max_iterations"])
    _register(ctx, "occupation", {**model.to_dict(), **_sample_note(len(sample), total)}, _window_start(ctx, conf["window_days"]))

    def score_batch(batch: pd.DataFrame) -> pd.DataFrame:
        return occupation.score(model, _named(batch, cell_names))[["user_id", "p_white_collar", "p_student"]]

    everyone = inputs.users.select("user_id").join(counts, "user_id", "left").fillna(0.0, subset=wide)
    return map_in_pandas(everyone, score_batch, "user_id string, p_white_collar double, p_student double")


def fit_taste(ctx: RunContext, settings: dict, inputs: Inputs) -> DataFrame:
    """Preference per salad category by NMF over orders, add-to-carts and views of the window.

    The user x (signal, category) matrix is summed on the engine; NMF learns
    its tastes from a bounded seeded sample of the users with any signal; every user scored on the engine.
    """
    conf, bounds = settings["taste"], settings["driver"]
    since = _window_start(ctx, conf["window_days"])
    categories = ctx.conf.landing["categories"][conf["product_line"]]
    weights = conf["signals"]
    columns = [f"{s}:{c}" for s in weights for c in categories]
    wide = _wide(columns)

    def summed(units: DataFrame) -> DataFrame:
        """Per user, a column per (signal, category) of ``units`` (user_id, column, units); 0 where it has none."""
        return units.groupBy("user_id").agg(
            *(F.sum(F.when(F.col("column") == c, F.col("units")).otherwise(0.0)).alias(w) for c, w in zip(columns, wide, strict=True))
        )

    bought = inputs.items.where((F.col("dt") >= F.lit(since)) & F.col("user_id").isNotNull()).select(
        "user_id",
        F.concat(F.lit(f"{taste.ORDER}:"), F.col("category")).alias("column"),
        (F.col("qty").cast("double") * float(weights[taste.ORDER])).alias("units"),
    )
    weight_of = F.create_map(*(F.lit(v) for s, w in weights.items() for v in (s, float(w))))
    browsed = inputs.events.where(F.col("category").isin(*categories)).select(
        "user_id",
        F.concat(F.col("event_type"), F.lit(":"), F.col("category")).alias("column"),
        (F.col("n").cast("double") * weight_of[F.col("event_type")]).alias("units"),
    )
    # two sums joined, not one sum over a union: Sail 0.7.2 refuses the union of these two plans
    # ("Physical input schema should be the same ...": field metadata of the events side)
    left, right = summed(bought), summed(browsed)
    matrix = left.join(right.select("user_id", *(F.col(w).alias(f"b_{w}") for w in wide)), "user_id", "full").select(
        "user_id", *((F.coalesce(F.col(w), F.lit(0.0)) + F.coalesce(F.col(f"b_{w}"), F.lit(0.0))).alias(w) for w in wide)
    )
    matrix = ctx.materialize(matrix, "taste_matrix")
    active = matrix.where(sum((F.col(w) for w in wide), F.lit(0.0)) > 0)
    sample, total = fit_sample(active, bounds["fit_sample_customers"], bounds["sample_seed"], "user_id")
    model = taste.fit(_named(sample, columns), categories, conf["n_components"])
    _register(ctx, "taste", {**model.to_dict(), **_sample_note(len(sample), total)}, since)

    def score_batch(batch: pd.DataFrame) -> pd.DataFrame:
        return taste.score(model, _named(batch, columns))

    everyone = inputs.users.select("user_id").join(matrix, "user_id", "left").fillna(0.0, subset=wide)
    return map_in_pandas(everyone, score_batch, "user_id string, " + ", ".join(f"taste_{c} double" for c in categories))


def _totals_moments(totals: DataFrame) -> dict[str, float]:
    """:func:`sensitivity.moments` of per-user (n, total, total_sq) rows, summed on the engine."""
    n, total, mean = F.col("n"), F.col("total"), F.col("total") / F.col("n")
    repeat = n > 1
    row = (
        totals.where(n > 0)
        .agg(
            F.count(F.lit(1)).alias("users"),
            F.sum(n).alias("n"),
            F.sum(total).alias("total"),
            F.sum(mean).alias("mean_sum"),
            F.sum(mean * mean).alias("mean_sq_sum"),
            F.sum(1 / n).alias("inverse_n_sum"),
            F.sum(F.when(repeat, F.col("total_sq") - total * total / n).otherwise(0.0)).alias("within_squares"),
            F.sum(F.when(repeat, n - 1).otherwise(0.0)).alias("within_dof"),
        )
        .first()
    )
    return {k: float(v or 0.0) for k, v in row.asDict().items()}


def fit_sensitivity(ctx: RunContext, settings: dict, inputs: Inputs) -> DataFrame:
    """Price and discount sensitivity, shrunk towards the population by empirical Bayes.

    Units per (category, price) and the shrinkage's moments are summed on the
    engine; the driver holds the price list and a handful of sums.
    """
    since = _window_start(ctx, settings["sensitivity"]["window_days"])
    items = inputs.items.where(F.col("dt") >= F.lit(since)).withColumn("price", F.col("price").cast("double"))
    units = items.groupBy("category", "price").agg(F.sum("qty").cast("double").alias("units")).toPandas()
    table = sensitivity.cheapness_table(units)[["category", "price", "cheapness"]]
    cheapness = ctx.spark.createDataFrame(table.astype({"category": object}), "category string, price double, cheapness double")
    qty, cheap = F.col("qty").cast("double"), F.col("cheapness")
    priced = (
        items.join(F.broadcast(cheapness), ["category", "price"])
        .groupBy("user_id")
        .agg(F.sum(qty).alias("n"), F.sum(qty * cheap).alias("total"), F.sum(qty * cheap * cheap).alias("total_sq"))
    )
    with_coupon = F.when(F.coalesce(F.col("coupon_amount"), F.lit(0.0)) > 0, 1.0).otherwise(0.0)
    couponed = (
        inputs.purchases.where(F.col("dt") >= F.lit(since))
        .groupBy("user_id")
        .agg(
            F.count(F.lit(1)).cast("double").alias("n"),
            F.sum(with_coupon).alias("total"),
            F.sum(with_coupon * with_coupon).alias("total_sq"),
        )
    )
    result, fitted = inputs.users.select("user_id"), {}
    for column, totals in (("price_sensitivity", priced), ("discount_sensitivity", couponed)):
        totals = ctx.materialize(totals, f"sensitivity_{column}")
        shrinkage = fitted[column] = sensitivity.fit_shrinkage_from_moments(_totals_moments(totals))
        shrunk = (F.coalesce(F.col("total"), F.lit(0.0)) + shrinkage.strength * shrinkage.mean) / (
            F.coalesce(F.col("n"), F.lit(0.0)) + shrinkage.strength
        )
        result = result.join(totals.select("user_id", shrunk.alias(column)), "user_id", "left")
    # a user without a row in totals (no events) gets the population mean, as shrink() gives
    result = result.fillna({column: s.mean for column, s in fitted.items()})
    _register(ctx, "sensitivity", {column: s.to_dict() for column, s in fitted.items()}, since)
    return result


DAILY_MODELS = {"bgnbd": fit_bgnbd, "gender": fit_gender, "occupation": fit_occupation, "taste": fit_taste, "sensitivity": fit_sensitivity}


# --------------------------------------------------------------------------- churn


def customer_features(ctx: RunContext, settings: dict, snapshot: date) -> DataFrame:
    """The churn model's inputs at ``snapshot`` for users with a purchase by then.

    From the published sub-profile partitions, or, for a date that has none,
    computed by the same sub-profile job functions over silver: the rows of
    business date <= ``snapshot`` as landed by D (an export landed on D has its past).
    """
    features = None
    for table, columns in settings["features"].items():
        rows = ctx.catalog.read(ctx.spark, table).where(F.col("dt") == F.lit(snapshot))
        if rows.select("user_id").limit(1).count() == 0:
            rows = BUILDERS[table](replace(ctx, dt=snapshot, known_on=ctx.dt))  # as landed by D: RunContext.known_on
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


def churn_model(ctx: RunContext, settings: dict, purchases: DataFrame) -> tuple[churn.ChurnModel | None, str | None, str | None]:
    """(model, version, note): the current model, retrained first when due; note says why there is none or why it is old."""
    conf = settings["churn"]
    newest = registry.latest(ctx.spark, ctx.catalog, "churn", on_or_before=ctx.dt)
    current = None if newest is None else newest.version
    if current is not None and (ctx.dt - datetime.strptime(current, "%Y%m%d").date()).days < conf["retrain_every_days"]:
        return registry.load_fitted(ctx.lake, "churn", current), current, None
    first_order_day = purchases.agg(F.min("dt").alias("first")).first()["first"]
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


def train_churn(ctx: RunContext, settings: dict, purchases: DataFrame, snapshots: list[date]) -> churn.ChurnModel:
    """Measure the recipe on the newest snapshot (trained on older ones), then fit it on all of them.

    Feature rows and labels stay on the engine; the driver trains on at most
    ``churn.max_training_rows`` of them (a seeded hash sample), recorded in the registry.
    """
    conf, seed = settings["churn"], settings["driver"]["sample_seed"]
    features = None
    for snapshot in snapshots:  # each snapshot's plan is cut on its own: the union of 53 builder plans would not plan
        rows = ctx.materialize(customer_features(ctx, conf, snapshot), f"churn_features_{snapshot}")
        features = rows if features is None else features.unionByName(rows)
    labelled = churn.training_set_spark(features, purchases.select("user_id", "dt"), conf["horizon_days"], ctx.dt)
    rows, available = fit_sample(labelled, conf["max_training_rows"], seed, "user_id", "dt")
    if rows.empty:
        raise ValueError(
            f"no customer at any of the {len(snapshots)} training snapshots {min(snapshots)}..{max(snapshots)}: churn has nothing to learn from"
        )
    rows = rows.assign(dt=pd.to_datetime(rows["dt"]).dt.date).sort_values(["dt", "user_id"], ignore_index=True)
    train, holdout = churn.time_split(rows, conf["horizon_days"])
    trial = churn.train(train, churn.feature_columns(conf, train["dt"].unique()), conf["horizon_days"], conf)
    metrics = evaluate.binary_metrics(holdout[churn.LABEL], churn.score(trial, holdout), conf["label_threshold"])
    model = churn.train(rows, churn.feature_columns(conf, rows["dt"].unique()), conf["horizon_days"], conf)
    holdout_dt = holdout["dt"].iloc[0]
    params = {
        **model.params(),
        "snapshots": [str(s) for s in snapshots],
        "training_rows": len(rows),
        "training_rows_available": int(available),
        "holdout_snapshot": str(holdout_dt),
    }
    _register(ctx, "churn", params, min(snapshots), metrics, fitted=model, train_end=max(snapshots), metrics_dt=holdout_dt)
    return model


def measured_success_rate(ctx: RunContext, settings: dict) -> tuple[float, str]:
    """(success rate, where it came from): the retention campaign's pooled uplift measured before D, else conf.

    ops.campaign_results of the newest measuring date before D (a rerun of D reads what it read the first
    time), all its send dates together; conf/models.yaml retention.success_rate until one is measured.
    """
    from portrait.campaigns.declarations import load_campaigns

    fallback = (float(settings["retention"]["success_rate"]), "conf")
    retention = [c.name for c in load_campaigns(ctx.conf).campaigns.values() if c.retention]
    if not retention or not ctx.catalog.exists(CAMPAIGN_RESULTS):
        return fallback
    rows = ctx.catalog.read(ctx.spark, CAMPAIGN_RESULTS).where((F.col("campaign") == retention[0]) & (F.col("measured_dt") < F.lit(ctx.dt)))
    latest = rows.agg(F.max("measured_dt").alias("day")).collect()[0]["day"]
    if latest is None:
        return fallback
    sums = (
        rows.where(F.col("measured_dt") == F.lit(latest))
        .agg(*(F.sum(c).alias(c) for c in ("treated", "holdout", "treated_converted", "holdout_converted")))
        .collect()[0]
    )
    if not sums["treated"] or not sums["holdout"]:
        return fallback
    uplift = sums["treated_converted"] / sums["treated"] - sums["holdout_converted"] / sums["holdout"]
    rate = threshold.success_rate_from_uplift(uplift, sums["holdout_converted"] / sums["holdout"])
    return rate, f"campaign:{retention[0]} measured {latest}"


def threshold_curve(ctx: RunContext, settings: dict, scored: DataFrame, version: str, values: DataFrame | None = None) -> DataFrame:
    """Expected retention profit per threshold on D's churn probabilities; the best one flagged and recorded.

    The success rate is the retention campaign's measured one (conf until measured); each user's value is
    their clv_90d (conf value_per_user where it is null or the spend model did not run). The users per
    threshold bin are counted on the engine; the driver holds one row per threshold.
    """
    economics = settings["retention"]
    step = economics["threshold_step"]
    last = len(threshold.grid(step)) - 1
    p = F.col("churn_probability")
    k = F.floor(p / step).cast("int")
    at = lambda n: rounded(n.cast("double") * step, 10)  # noqa: E731 - grid()'s thresholds in SQL (no F.round: Sail clusters)
    k = F.least(F.greatest(F.when(p < at(k), k - 1).when(p >= at(k + 1), k + 1).otherwise(k), F.lit(0)), F.lit(last))
    flat = F.lit(float(economics["value_per_user"]))
    if values is not None:
        scored = scored.join(values.select("user_id", "clv_90d"), "user_id", "left")
        value, value_from = F.coalesce(F.col("clv_90d"), flat), "clv_90d"
    else:
        value, value_from = flat, "conf"
    bins = (
        scored.where(p.isNotNull())
        .groupBy(k.alias("bin"))
        .agg(F.count(F.lit(1)).alias("users"), F.sum(p).alias("p_sum"), F.sum(p * value).alias("pv_sum"), F.sum(value).alias("v_sum"))
        .toPandas()
    )
    success_rate, success_from = measured_success_rate(ctx, settings)
    curve = threshold.profit_curve_from_bins(bins, economics["retention_cost"], success_rate, economics["value_per_user"], step)
    users = float(bins["users"].sum())
    curve = curve.assign(
        success_rate=success_rate,
        success_rate_from=success_from,
        value_from=value_from,
        mean_value=float(bins["v_sum"].sum()) / users if users else float("nan"),
    )
    ctx.notes["threshold_figures"] = {"success_rate": success_rate, "from": success_from, "value_from": value_from}
    best = threshold.best_threshold(curve)
    at_best = curve[np.isclose(curve["threshold"], best)].iloc[0]
    ctx.collected.setdefault(registry.METRICS, []).extend(
        registry.metric_rows(
            "churn",
            version,
            ctx.dt,
            {
                "best_threshold": best,
                "best_expected_profit": float(at_best["expected_profit"]),
                "targeted_at_best": float(at_best["targeted"]),
            },
        )
    )
    spec = ctx.catalog.spec(THRESHOLD_CURVE)
    curve = curve.assign(model="churn", version=version, best=np.isclose(curve["threshold"], best), dt=ctx.dt)
    return ctx.spark.createDataFrame(curve[list(spec.columns)].astype({"targeted": "int64"}), spec.ddl)


# --------------------------------------------------------------------------- the table


def model_tags_frame(ctx: RunContext, users: DataFrame, scores: list[DataFrame], versions: dict[str, str]) -> DataFrame:
    """The declared profile.model_tags columns, joined on the engine: a null column for every model that did not run."""
    spec = ctx.catalog.spec(MODEL_TAGS)
    tag_columns = [c for c in spec.columns if c not in ("user_id", "gender_reported", "churn_model_version", "model_versions", "dt")]
    df = users.select("user_id", F.col("gender").cast("string").alias("gender_reported"))
    for frame in scores:
        df = df.join(frame, "user_id", "left")
    present = set(df.columns)
    pairs = [F.lit(v) for name, version in sorted(versions.items()) for v in (name, version)]
    df = df.withColumns(
        {
            **{c: (F.col(c) if c in present else F.lit(None)).cast("double") for c in tag_columns},
            "churn_model_version": F.lit(versions.get("churn")).cast("string"),
            "model_versions": F.create_map(*pairs) if pairs else F.create_map().cast("map<string,string>"),
            "dt": F.lit(ctx.dt).cast("date"),
        }
    )
    return df.select(*spec.columns)
