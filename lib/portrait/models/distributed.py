"""Score a Spark DataFrame with a pure pandas function, partition by partition.

There is no pyspark.ml on Spark Connect (ARCHITECTURE.md): models are trained
with scikit-learn on the driver and shipped to the executors inside the
function ``mapInPandas`` pickles, so the same pandas code that the tests
exercise scores the whole table in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd


def map_in_pandas(df, score_batch: Callable[[pd.DataFrame], pd.DataFrame], schema: str):
    """``df.mapInPandas`` over ``score_batch``; ``schema`` is the DDL of what it returns."""

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield score_batch(batch)

    return df.mapInPandas(score_batches, schema)
