"""Social / demographic sub-profile (社会属性): reported gender, age band and city; common addresses.

Demographics are taken as the user reported them (the modelled gender and
occupation are model tags). A delivery address is common when enough recent
non-cancelled orders went to it (seed: 某个地址出现X次的话，则可以将其认为常用地址);
its POI type (office / school / residential) is what the occupation models read.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.subprofiles.common import days_between, first_match, first_n, snapshot_date, sorted_by, with_days_ago
from portrait.subprofiles.daily import address_days

if TYPE_CHECKING:  # imported for annotations only: the dictionary imports this package's DayWindow
    from portrait.tags.dictionary import TagDictionary

ADDRESS_FIELDS = ("address_id", "place_name", "lat", "lon", "poi_type", "uses", "last_used_dt")
ADDRESS_TYPE = "array<struct<address_id:string,place_name:string,lat:double,lon:double,poi_type:string,uses:bigint,last_used_dt:date>>"


def social(users: DataFrame, orders: DataFrame, addresses: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from raw rows.

    users:     user_id, gender, birth_year, city - latest record known on D
    orders:    user_id, dt, address_id - non-cancelled orders known on D
    addresses: address_id, place_name, lat, lon, poi_type - address records known on D
    """
    return social_from_days(users, address_days(orders), addresses, snapshot_dt, tags)


def social_from_days(users: DataFrame, address_uses: DataFrame, addresses: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from daily aggregates.

    users:        user_id, gender, birth_year, city - latest record known on D
    address_uses: user_id, dt, address_id, uses - orders per user, day and address (dws.user_addresses_daily)
    addresses:    address_id, place_name, lat, lon, poi_type - address records known on D
    """
    uses = (
        with_days_ago(address_uses, snapshot_dt, tags.window_of("common_addresses"))
        .groupBy("user_id", "address_id")
        .agg(F.sum("uses").cast("bigint").alias("uses"), F.max("dt").alias("last_used_dt"))
        .where(F.col("uses") >= tags.threshold("common_addresses", "min_uses"))
    )
    return with_addresses(users, uses, addresses, snapshot_dt, tags)


def with_addresses(users: DataFrame, uses: DataFrame, addresses: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """The social row of every user from the uses of each common address: described, ranked, capped; demographics."""
    described = uses.join(addresses.select("address_id", "place_name", "lat", "lon", "poi_type"), "address_id", "left")
    per_user = described.groupBy("user_id").agg(F.collect_list(F.struct(*ADDRESS_FIELDS)).alias("_common"))
    most_used = sorted_by("_common", lambda a: [-a["uses"], days_between(snapshot_dt, a["last_used_dt"]), a["address_id"]])
    kept = first_n(most_used, tags.threshold("common_addresses", "max_addresses"))
    return (
        users.select("user_id", F.col("gender").alias("gender_reported"), "city", "birth_year")
        .join(per_user, "user_id", "left")
        .withColumn("common_addresses", F.coalesce(kept, F.array().cast(ADDRESS_TYPE)))
        .withColumn("common_address_count", F.size("common_addresses"))
        .withColumn("age_band", age_band(F.year(snapshot_date(snapshot_dt)) - F.col("birth_year"), tags))
        .withColumn("dt", snapshot_date(snapshot_dt))
        .drop("_common", "birth_year")
    )


def age_band(age: Column, tags: TagDictionary) -> Column:
    """The band holding ``age`` (bounds inclusive); null for a missing birth year or an age in no band."""
    bands = tags.threshold("age_band", "bands")
    return first_match([(age.between(band["min_age"], band["max_age"]), band["band"]) for band in bands])
