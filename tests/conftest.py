"""Shared fixtures: one real embedded Sail engine for the whole test session."""

from __future__ import annotations

import pytest

from portrait.core import engine


@pytest.fixture(scope="session")
def spark():
    session = engine.get_spark(engine="sail")
    yield session
    engine.stop()
