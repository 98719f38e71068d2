"""A shop's own order export as landing data: profile an existing order history without the app logs.

``portrait run --date D --orders PATH`` calls :func:`land_export` before the
run: the export (CSV or Parquet, columns mapped in conf/pipeline.yaml
``external_orders``) is written into the landing zone as D's orders, in the
landing contract, and the clean stage takes it in like any landing file. So an
export gets the same checks, quarantine with reasons, reconciliation and gates
as the app's own orders, and nothing here decides what is valid: a row with an
unreadable time or amount is landed as it is and quarantined by the contract.

The mapping only translates: order times without an offset are local times of
the configured zone; missing fields get their conf defaults (an export has no
line items: ``items`` is empty); an order id, when the export has none, is
derived from user, time, amount and the repeat number, so re-exporting the same
history gives the same ids. Orders that an earlier run already landed are left
out (the clean job's duplicate check looks back only a week); a rerun of D
lands the same file again. Customers the lake does not know yet get a user
record (registered at their first order, no name), since every profile starts
from the users known on D.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow.compute as pc

from portrait.clean.landing import landing_dir
from portrait.core import storage
from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog

REQUIRED = ("user_id", "ts", "amount")
ORDERS_FILE, USERS_FILE = "external-orders.jsonl", "external-users.jsonl"


# What landing an export did: its rows, the orders landed, those landed by an earlier run, new customers.
class Landed(NamedTuple):
    rows: int
    orders: int
    already_landed: int
    new_users: int
    orders_file: str  # where the orders landed: the clean stage reads them from there

    def __str__(self) -> str:
        return (
            f"export: {self.rows:,} rows -> {self.orders:,} orders landed in {self.orders_file} "
            f"({self.already_landed:,} already landed earlier, {self.new_users:,} new customers)"
        )


def read_export(path: str | Path) -> pd.DataFrame:
    """The export as text and native values: CSV cells as strings (parsing is the mapping's job), Parquet as typed."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _time(value, zone: ZoneInfo):
    """ISO-8601 with an offset (naive times are ``zone``'s), epoch milliseconds as they are, else the raw text."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None if value in ("", None) else str(value)
    if pd.isna(stamp):
        return None
    return (stamp.tz_localize(zone) if stamp.tzinfo is None else stamp).isoformat()


def _number(value):
    """A number, or the raw text for the contract to reject; None when empty."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _text(value):
    return None if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "" else str(value).strip()


def landing_orders(export: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The export as landing-contract order records (one per row), before any de-duplication."""
    columns = settings["columns"]
    missing = [f for f in REQUIRED if not columns.get(f)]
    absent = [f"{columns[f]} ({f})" for f in columns if columns.get(f) and columns[f] not in export.columns]
    if missing or absent:
        raise ConfError(
            "conf/pipeline.yaml external_orders.columns: "
            + "; ".join(
                [f"{f} must name an export column" for f in missing]
                + [f"no export column {a}; the export has {', '.join(map(str, export.columns))}" for a in absent]
            )
        )
    zone = ZoneInfo(settings["time_zone"])

    def field(name: str, convert) -> pd.Series:
        source = columns.get(name)
        if not source:
            return pd.Series([settings["defaults"][name]] * len(export), index=export.index, dtype=object)
        return export[source].map(convert).astype(object)

    orders = pd.DataFrame(
        {
            "user_id": field("user_id", _text),
            "ts": field("ts", lambda v: _time(v, zone)),
            "amount": field("amount", _number),
            "coupon_amount": field("coupon_amount", _number),
            "status": field("status", _text),
            "product_line": field("product_line", _text),
        },
        index=export.index,
    )
    if columns.get("order_id"):
        orders.insert(0, "order_id", field("order_id", _text))
    else:
        orders.insert(0, "order_id", _derived_ids(orders))
    return orders.reset_index(drop=True)


def _derived_ids(orders: pd.DataFrame) -> pd.Series:
    """``x`` + a hash of user, time, amount and how many identical rows came before (two equal orders stay two)."""
    key = orders["user_id"].map(str) + "|" + orders["ts"].map(str) + "|" + orders["amount"].map(str)
    repeat = key.groupby(key).cumcount().astype(str)
    return (key + "|" + repeat).map(lambda text: "x" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20])


def _known(catalog: Catalog, table: str, column: str, date_column: str, before: date) -> set[str]:
    """Values of ``column`` in rows of ``table`` landed before ``before`` (read with delta-rs: no engine needed)."""
    if not catalog.exists(table):
        return set()
    from deltalake import DeltaTable

    rows = DeltaTable(catalog.spec(table).path, storage_options=storage.delta_options(catalog.spec(table).path)).to_pyarrow_table(
        columns=[column, date_column]
    )
    return set(rows.filter(pc.less(rows[date_column], before))[column].to_pylist())


def new_user_records(orders: pd.DataFrame, known: set[str], run_date: date, settings: dict) -> list[dict]:
    """A user record for each customer of ``orders`` not in ``known``: registered at the first order, by end of D."""
    end_of_day = pd.Timestamp(datetime.combine(run_date + timedelta(days=1), time(), ZoneInfo(settings["time_zone"])))
    customers = orders[orders["user_id"].notna() & ~orders["user_id"].isin(known)]
    first = customers.assign(_at=customers["ts"].map(_instant)).groupby("user_id", sort=True)["_at"].min()
    return [
        {
            "user_id": user_id,
            "name": "",
            "registered_at": (end_of_day if pd.isna(at) else min(at, end_of_day)).isoformat(),
            "channel": settings["channel"],
        }
        for user_id, at in first.items()
    ]


def _instant(ts) -> pd.Timestamp:
    """The instant of a landed ``ts`` (epoch milliseconds or ISO with an offset); NaT for text the contract will reject."""
    if isinstance(ts, int):
        return pd.Timestamp(ts, unit="ms", tz="UTC")
    try:
        stamp = pd.Timestamp(ts)
    except (ValueError, TypeError):
        return pd.NaT
    return stamp.tz_convert("UTC") if stamp.tzinfo is not None else pd.NaT


def _write_lines(path: str, records: list[dict]) -> None:
    storage.write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def land_export(path: str | Path, lake: str, run_date: date, conf: Conf | None = None) -> Landed:
    """Write the export at ``path`` into the landing zone as ``run_date``'s orders (and new customers)."""
    conf = conf or Conf()
    settings = conf.pipeline["external_orders"]
    export = read_export(path)
    orders = landing_orders(export, settings)
    catalog = Catalog(lake, conf)
    earlier = _known(catalog, "silver.orders", "order_id", "landing_dt", run_date)
    fresh = orders[~orders["order_id"].isin(earlier)]
    records = [{**{k: v for k, v in row.items() if _text(v) is not None}, "items": []} for row in fresh.to_dict("records")]
    orders_file = storage.join(landing_dir(lake, "orders", run_date), ORDERS_FILE)
    _write_lines(orders_file, records)
    users = new_user_records(fresh, _known(catalog, "silver.users_history", "user_id", "dt", run_date), run_date, settings)
    users_file = storage.join(landing_dir(lake, "users", run_date), USERS_FILE)
    _write_lines(users_file, users)  # no new customer: an empty file, "nothing today" (a missing feed fails clean)
    return Landed(len(export), len(records), len(orders) - len(fresh), len(users), orders_file)
