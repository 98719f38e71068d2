"""The daily aggregate layer (DWS): silver rows summed per user and day, and read back as known on D.

The sub-profiles' tags are windows of business days over counts and sums
(orders and spend, app opens, reviews, signals per category, usage per line,
orders per address, events per hour). Summed once per user, business date
``dt`` and landing date ``landing_dt`` (the ``*_days`` transforms below, pure
``DataFrame -> DataFrame``), a window is a sum over at most one row per user
and day and landing day, instead of a rescan of every raw event and order.

Keeping ``landing_dt`` keeps "as known on D" (``portrait.clean.as_of``):
:class:`DailyAsOf` reads the rows with ``dt <= D`` that had landed by D, as
SilverAsOf does for raw rows. Two things cannot be summed ahead and are
summed at read time, the same way:

- anonymous events (``user_id`` null in silver): they belong to whoever logs
  in on the device next, which depends on the logins known on D
  (``read_attributed_events``), so they are attributed and summed per D;
- landing dates the aggregate stage has not built (not in ``dws.landings``:
  a lake cleaned before the layer existed, or silver written directly), whose
  silver rows are summed on the fly.

Line items of an order that counts are summed when they land; an order
cancelled by a row landing after its items would still count them here
(silver keeps one row per order_id, so this does not arise from the clean stage).
"""

from __future__ import annotations

from datetime import date, timedelta

from deltalake import DeltaTable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.clean.as_of import SilverAsOf
from portrait.clean.identity import read_attributed_events
from portrait.core import storage

ORDER_ITEM = "order_item"  # the signal of a line item of an order that counts (conf/tags.yaml interest_weights)

#: dws table -> (the source it sums, its grain beyond user, dt and landing_dt)
TABLES = {
    "dws.user_orders_daily": ("orders", ()),
    "dws.user_events_daily": ("events", ()),
    "dws.user_hours_daily": ("events", ("hour",)),
    "dws.user_categories_daily": ("events+items", ("category", "signal")),
    "dws.user_lines_daily": ("events+orders", ("product_line",)),
    "dws.user_addresses_daily": ("orders", ("address_id",)),
}
LANDINGS = "dws.landings"
#: the event columns :func:`event_days` reads, for raw rows that lack some (see :func:`with_missing`)
EVENT_COLUMNS = {"event_type": "string", "rating": "int", "wait_minutes": "double", "refund_amount": "double"}


def with_missing(df: DataFrame, columns: dict[str, str]) -> DataFrame:
    """``df`` with each of ``columns`` it lacks added as nulls of the given type."""
    return df.withColumns({name: F.lit(None).cast(kind) for name, kind in columns.items() if name not in df.columns})


def _day_keys(df: DataFrame, *extra: str) -> list[str]:
    """user_id, dt, the grain's own columns, and landing_dt when the rows carry one (raw fixtures may not)."""
    return ["user_id", "dt", *extra, *(["landing_dt"] if "landing_dt" in df.columns else [])]


def _with_user(df: DataFrame) -> DataFrame:
    return df.where(F.col("user_id").isNotNull())


def _count(condition: Column) -> Column:
    return F.count(F.when(condition, F.lit(1)))


def order_days(orders: DataFrame) -> DataFrame:
    """orders (user_id, dt, amount, coupon_amount; orders that count) -> orders, amount, coupon_orders per user and day."""
    return (
        _with_user(orders)
        .groupBy(*_day_keys(orders))
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.sum("amount").alias("amount"),
            _count(F.col("coupon_amount") > 0).alias("coupon_orders"),
        )
    )


def event_days(events: DataFrame, bad_review_max_rating: int) -> DataFrame:
    """events (user_id, dt, event_type, rating, wait_minutes, refund_amount) -> counts by kind per user and day."""

    def of_type(event_type: str) -> Column:
        return F.col("event_type") == event_type

    delivered = of_type("delivery") & F.col("wait_minutes").isNotNull()
    refund = of_type("refund")
    return (
        _with_user(events)
        .groupBy(*_day_keys(events))
        .agg(
            F.count(F.lit(1)).alias("events"),
            _count(of_type("app_open")).alias("app_opens"),
            _count(of_type("login")).alias("logins"),
            _count(of_type("review")).alias("reviews"),
            _count(of_type("review") & (F.col("rating") <= F.lit(bad_review_max_rating))).alias("bad_reviews"),
            _count(refund).alias("refunds"),
            F.sum(F.when(refund, F.col("refund_amount"))).alias("refund_amount"),
            _count(delivered).alias("deliveries"),
            F.sum(F.when(delivered, F.col("wait_minutes"))).alias("wait_minutes"),
        )
    )


def hour_days(events: DataFrame, time_zone: str) -> DataFrame:
    """events (user_id, dt, ts) -> events per user, day and hour of day in ``time_zone``."""
    hourly = _with_user(events).withColumn("hour", F.hour(F.from_utc_timestamp("ts", time_zone)).cast("int"))
    return hourly.groupBy(*_day_keys(events, "hour")).agg(F.count(F.lit(1)).alias("events"))


def category_days(events: DataFrame, order_items: DataFrame) -> DataFrame:
    """events (event_type, category) and order items (category) -> signals per user, day, category and signal."""
    keys = _day_keys(events, "category", "signal")
    from_events = events.select(*[F.col("event_type").alias("signal") if k == "signal" else k for k in keys])
    from_items = order_items.select(*[F.lit(ORDER_ITEM).alias("signal") if k == "signal" else k for k in keys])
    both = _with_user(from_events.unionByName(from_items)).where(F.col("category").isNotNull())
    return both.groupBy(*keys).agg(F.count(F.lit(1)).alias("signals"))


def line_days(events: DataFrame, orders: DataFrame) -> DataFrame:
    """events and orders (user_id, dt, product_line) -> usage per user, day and line: events and orders apart."""
    keys = _day_keys(events, "product_line")
    usage = events.select(*keys, F.lit(1).alias("_event")).unionByName(orders.select(*keys, F.lit(0).alias("_event")))
    return _with_user(usage).groupBy(*keys).agg(_count(F.col("_event") == 1).alias("events"), _count(F.col("_event") == 0).alias("orders"))


def address_days(orders: DataFrame) -> DataFrame:
    """orders (user_id, dt, address_id) -> orders per user, day and delivery address (orders without one left out)."""
    with_address = _with_user(orders).where(F.col("address_id").isNotNull())
    return with_address.groupBy(*_day_keys(orders, "address_id")).agg(F.count(F.lit(1)).alias("uses"))


def landing_days(ctx, tags) -> dict[str, DataFrame]:
    """The rows of every dws table for landing date ``ctx.dt``: that day's silver rows, summed (the aggregate stage).

    Events with a user_id only (anonymous ones are attributed and summed at
    read time); orders that count; their line items, without those of an
    order known by then as not counting. Rows of business date D+1 (within the
    clean stage's future tolerance) are kept: the snapshot of D+1 reads them.
    """
    silver = SilverAsOf(ctx)
    landed = F.col("landing_dt") == F.lit(ctx.dt)
    events = _with_user(ctx.catalog.read(ctx.spark, "silver.events").where(landed))
    all_orders = ctx.catalog.read(ctx.spark, "silver.orders")
    not_counting = F.col("status").isin(silver.excluded_statuses)
    orders = all_orders.where(landed & ~not_counting)
    items = ctx.catalog.read(ctx.spark, "silver.order_items").where(landed)
    item_days = [row["dt"] for row in items.select("dt").distinct().collect()]  # an item's dt is its order's
    excluded = all_orders.where((F.col("landing_dt") <= F.lit(ctx.dt)) & not_counting & F.col("dt").isin(*item_days))
    counted_items = items.join(excluded.select("order_id"), "order_id", "left_anti") if item_days else items
    return _all_days(events, orders, counted_items, tags, silver.time_zone)


def _all_days(events: DataFrame, orders: DataFrame, items: DataFrame, tags, time_zone: str) -> dict[str, DataFrame]:
    return {
        "dws.user_orders_daily": order_days(orders),
        **_event_grains(events, items, tags, time_zone),
        "dws.user_lines_daily": line_days(events, orders),
        "dws.user_addresses_daily": address_days(orders),
    }


def _event_grains(events: DataFrame, items: DataFrame, tags, time_zone: str) -> dict[str, DataFrame]:
    return {
        "dws.user_events_daily": event_days(events, int(tags.threshold("bad_reviews", "max_rating"))),
        "dws.user_hours_daily": hour_days(events, time_zone),
        "dws.user_categories_daily": category_days(events, items),
    }


class DailyAsOf:
    """The dws rows as known at the end of business day ``ctx.dt`` (landed by D, about days <= D).

    Each reader returns the rows of one dws table (with ``landing_dt``; a
    user and day may have one row per landing day) for business days
    ``since`` .. D: the built landing dates from the dws table, the others
    summed from silver, and for event tables the anonymous events attributed
    by the logins known on D.
    """

    def __init__(self, ctx, tags):
        self.ctx, self.tags, self.dt = ctx, tags, ctx.dt
        self.silver = SilverAsOf(ctx)
        self.spark, self.catalog = ctx.spark, ctx.catalog
        self.known_on = self.silver.known_on
        self.time_zone = self.silver.time_zone
        built = []
        if self.catalog.exists(LANDINGS):
            cutoff = max(self.dt, self.known_on)
            rows = self.catalog.read(self.spark, LANDINGS).where(F.col("landing_dt") <= F.lit(cutoff)).select("landing_dt").collect()
            built = sorted(row["landing_dt"] for row in rows)
        self.built = built
        self._landing_dates: dict[str, set[date]] = {}

    # ------------------------------------------------------------- which landing dates come from where

    def _built(self) -> Column | None:
        """True for the landing dates the dws tables hold (None: none)."""
        if not self.built:
            return None
        first, last = self.built[0], self.built[-1]
        have = set(self.built)
        gaps = [first + timedelta(days=n) for n in range((last - first).days + 1) if first + timedelta(days=n) not in have]
        condition = F.col("landing_dt").between(F.lit(first), F.lit(last))
        return condition & ~F.col("landing_dt").isin(*gaps) if gaps else condition

    def _not_built(self, df: DataFrame, silver_table: str, cutoff: date) -> DataFrame:
        """The rows of ``df`` (read from ``silver_table``) of landing dates <= cutoff that the dws tables lack.

        Which landing dates silver holds comes from its Delta log (no engine
        query); when the dws tables hold them all, an empty frame: the plan
        reads nothing of silver.
        """
        have = set(self.built)
        missing = sorted(day for day in self._landed(silver_table) if day <= cutoff and day not in have)
        if not missing:
            return _empty(self, silver_table).select(*df.columns)
        return df.where(F.col("landing_dt").isin(*missing))

    def _landed(self, silver_table: str) -> set[date]:
        if silver_table not in self._landing_dates:
            found = set()
            if self.catalog.exists(silver_table):
                path = self.catalog.spec(silver_table).path
                found = {
                    date.fromisoformat(p["landing_dt"]) for p in DeltaTable(path, storage_options=storage.delta_options(path)).partitions()
                }
            self._landing_dates[silver_table] = found
        return self._landing_dates[silver_table]

    def _stored(self, table: str, since: date | None, cutoff: date) -> DataFrame | None:
        built = self._built()
        if built is None:
            return None
        rows = self.catalog.read(self.spark, table).where(built & (F.col("dt") <= F.lit(self.dt)) & (F.col("landing_dt") <= F.lit(cutoff)))
        return rows if since is None else rows.where(F.col("dt") >= F.lit(since))

    def _combined(self, table: str, since: date | None, cutoff: date, computed: DataFrame) -> DataFrame:
        stored = self._stored(table, since, cutoff)
        columns = [c for c in self.catalog.spec(table).columns]
        computed = computed.select(*columns)
        return computed if stored is None else stored.select(*columns).unionByName(computed)

    # ------------------------------------------------------------- raw rows the dws tables do not hold

    def _orders(self, since: date | None) -> DataFrame:
        return self._not_built(self.silver.orders(since), "silver.orders", self.known_on)

    def _items(self, since: date | None) -> DataFrame:
        return self._not_built(self.silver.order_items(since), "silver.order_items", self.known_on)

    def _events(self, since: date | None) -> DataFrame:
        """Events of unbuilt landing dates with a user_id, and every anonymous event attributed as known on D."""
        known = self.catalog.read(self.spark, "silver.events").where(
            F.col("user_id").isNotNull() & (F.col("dt") <= F.lit(self.dt)) & (F.col("landing_dt") <= F.lit(self.dt))
        )
        known = self._not_built(known if since is None else known.where(F.col("dt") >= F.lit(since)), "silver.events", self.dt)
        silver = self.silver
        anonymous = read_attributed_events(
            self.spark, self.catalog, silver.stitch_lookback_hours, until=self.dt, since=since, anonymous_only=True
        )
        return known.unionByName(_with_user(anonymous))

    # ------------------------------------------------------------- the readers

    def orders(self, since: date | None = None) -> DataFrame:
        return self._combined("dws.user_orders_daily", since, self.known_on, order_days(self._orders(since)))

    def addresses(self, since: date | None = None) -> DataFrame:
        return self._combined("dws.user_addresses_daily", since, self.known_on, address_days(self._orders(since)))

    def events(self, since: date | None = None) -> DataFrame:
        computed = event_days(self._events(since), int(self.tags.threshold("bad_reviews", "max_rating")))
        return self._combined("dws.user_events_daily", since, self.dt, computed)

    def hours(self, since: date | None = None) -> DataFrame:
        return self._combined("dws.user_hours_daily", since, self.dt, hour_days(self._events(since), self.time_zone))

    def categories(self, since: date | None = None) -> DataFrame:
        """Signals per category; event rows cut at D, order-item rows at the orders' cut-off (as SilverAsOf)."""
        if self.known_on == self.dt:
            return self._combined("dws.user_categories_daily", since, self.dt, category_days(self._events(since), self._items(since)))
        from_events = self._combined("dws.user_categories_daily", since, self.dt, category_days(self._events(since), _no_items(self)))
        from_items = self._combined("dws.user_categories_daily", since, self.known_on, category_days(_no_events(self), self._items(since)))
        return from_events.where(F.col("signal") != ORDER_ITEM).unionByName(from_items.where(F.col("signal") == ORDER_ITEM))

    def lines(self, since: date | None = None) -> DataFrame:
        """Usage per line; event counts cut at D, order counts at the orders' cut-off (as SilverAsOf)."""
        if self.known_on == self.dt:
            return self._combined("dws.user_lines_daily", since, self.dt, line_days(self._events(since), self._orders(since)))
        from_events = self._combined("dws.user_lines_daily", since, self.dt, line_days(self._events(since), _no_orders(self)))
        from_orders = self._combined("dws.user_lines_daily", since, self.known_on, line_days(_no_events(self), self._orders(since)))
        return from_events.withColumn("orders", F.lit(0).cast("bigint")).unionByName(
            from_orders.withColumn("events", F.lit(0).cast("bigint"))
        )


def _empty(reader: DailyAsOf, table: str) -> DataFrame:
    spec = reader.catalog.spec(table)
    return reader.spark.createDataFrame([], spec.ddl)


def _no_events(reader: DailyAsOf) -> DataFrame:
    return _empty(reader, "silver.events")


def _no_items(reader: DailyAsOf) -> DataFrame:
    return _empty(reader, "silver.order_items")


def _no_orders(reader: DailyAsOf) -> DataFrame:
    return _empty(reader, "silver.orders")
