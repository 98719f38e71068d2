"""STAGES is checked against every stage's ``after`` when the pipeline module is imported."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from portrait.core import pipeline
from portrait.core.pipeline import STAGES, Stage, in_dependency_order


def test_the_daily_stages_are_in_dependency_order():
    assert in_dependency_order(STAGES) == STAGES
    assert pipeline.stage_names()[0] == "clean" and pipeline.stage_names()[-1] == "deliveries"


def test_a_stage_listed_before_one_it_runs_after_fails_with_both_names():
    with pytest.raises(ValueError, match="stage 'master' is listed before 'models', which it runs after"):
        in_dependency_order((Stage("clean", "j:a", ""), Stage("master", "j:b", "", after=("models",)), Stage("models", "j:c", "")))


def test_an_unknown_or_twice_listed_stage_fails():
    with pytest.raises(ValueError, match="stage 'models' runs after 'cleaning', which is not a stage; stages are clean, models"):
        in_dependency_order((Stage("clean", "j:a", ""), Stage("models", "j:b", "", after=("cleaning",))))
    with pytest.raises(ValueError, match="'clean' is listed twice"):
        in_dependency_order((Stage("clean", "j:a", ""), Stage("clean", "j:b", "")))


def test_importing_a_pipeline_with_stages_out_of_order_fails(monkeypatch):
    """The real module's source with STAGES listed backwards: its import raises."""
    source = Path(pipeline.__file__).read_text(encoding="utf-8")
    call = "STAGES: tuple[Stage, ...] = in_dependency_order("
    assert source.count(call) == 1
    backwards = source.replace(call, "STAGES: tuple[Stage, ...] = (lambda stages: in_dependency_order(stages[::-1]))(")
    module = types.ModuleType("backwards_pipeline")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    with pytest.raises(ValueError, match="stage 'deliveries' is listed before 'campaigns', which it runs after"):
        exec(compile(backwards, "backwards_pipeline.py", "exec"), module.__dict__)
