"""Shared fixtures: one real embedded Sail engine for the whole test session.

`make test` runs the files on two workers (pytest-xdist, ``--dist loadfile``:
a file's module fixtures are built once, on one worker). The longest files
are collected first, so they start at once and the two workers finish near
each other instead of one waiting on a long file begun last.
"""

from __future__ import annotations

import pytest

from portrait.core import engine

#: Files of more than 45 s, longest first (per-file time of `make test` on 2026-12-03, from ``--junitxml``; re-measure
#: when a file grows). Every other file follows in its usual order.
LONGEST_FIRST = (
    "test_clusters.py",
    "test_dags.py",
    "test_s3.py",
    "test_bench.py",
    "test_explorer.py",
    "test_models_job.py",
    "test_daily_aggregates.py",
    "test_privacy.py",
    "test_external_orders.py",
    "test_faults.py",
    "test_campaign_generated.py",
    "test_jvm_classic.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order inside a file stays


@pytest.fixture(scope="session")
def spark():
    session = engine.get_spark(engine="sail")
    yield session
    engine.stop()
