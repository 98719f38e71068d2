"""core.columns: expressions written out so that every engine (Sail's cluster mode too) can ship them."""

from __future__ import annotations

import random
import struct

import pytest
from pyspark.sql import functions as F

from portrait.core.columns import rounded


def _bits(value):
    return None if value is None or value != value else struct.pack("<d", value)


@pytest.mark.parametrize("decimals", [0, 2, 6, 10, 12])
def test_rounded_equals_the_built_in_round_bit_for_bit(spark, decimals):
    rng = random.Random(7)
    values = [rng.randint(-180_000_000, 180_000_000) / 1e6 for _ in range(20_000)]  # coordinates as they land
    values += [rng.randint(-18_000, 18_000) / 100 + 0.005 for _ in range(5_000)]  # ties at 2 decimals
    values += [rng.uniform(-1, 1) for _ in range(5_000)] + [rng.random() ** 7 for _ in range(2_000)]
    values += [1.005, 2.675, -1.005, 0.125, -0.125, 0.0, -0.0, -0.001, 0.49999999999999994, -0.49999999999999994]
    values += [4.5e15, -4.5e15, 1e300, -1e300, None]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "id long, x double")
    got = df.select("id", "x", F.round("x", decimals).alias("built_in"), rounded("x", decimals).alias("ours")).collect()
    differ = [(row.x, row.built_in, row.ours) for row in got if _bits(row.built_in) != _bits(row.ours)]
    assert len(got) == len(values)
    assert differ == []


def test_rounded_refuses_negative_decimals():
    with pytest.raises(ValueError, match="decimals must be >= 0, got -1"):
        rounded("lat", -1)
