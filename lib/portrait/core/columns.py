"""Column expressions every engine can run, where a built-in function cannot go everywhere.

Sail 0.7.2 in cluster mode cannot send DataFusion's ``round`` to its workers
(``ExtendedScalarUdf: no UDF found for round``: its plan codec has no entry for
it), so :func:`rounded` writes Spark's ``round`` out in arithmetic, casts and
``CASE``, which every engine ships.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

#: From 2**52 on, every double is a whole number: nothing left to round.
_WHOLE = float(2**52)


def rounded(column: Column | str, decimals: int) -> Column:
    """``round(column, decimals)`` of a double: half away from zero, as embedded Sail and Spark round.

    Scaled by ``10**decimals``, rounded as ``f64::round`` rounds (the fraction
    ``magnitude - trunc(magnitude)`` is exact, so ``>= 0.5`` decides a tie as
    the built-in does), scaled back by the same division; the sign is put back
    last, so a negative value rounding to zero gives ``-0.0`` like the built-in.
    Equal bit for bit to the built-in on every value tested (tests/test_columns.py).
    """
    if int(decimals) < 0:
        raise ValueError(f"rounded: decimals must be >= 0, got {decimals}")
    value = F.col(column) if isinstance(column, str) else column
    scale = F.lit(float(10 ** int(decimals)))
    scaled = value * scale
    magnitude = F.when(scaled < 0, -scaled).otherwise(scaled)
    whole = magnitude.cast("bigint").cast("double")
    up = (whole + F.when(magnitude - whole >= 0.5, F.lit(1.0)).otherwise(F.lit(0.0))) / scale
    return (
        F.when(magnitude.isNull(), F.lit(None).cast("double"))
        .when(scaled == 0, value)  # +0.0 and -0.0 as they came
        .when(magnitude >= _WHOLE, scaled / scale)  # whole (or infinite) already, as the built-in leaves it
        .when(scaled < 0, -up)
        .otherwise(up)
    )
