"""The tag dictionary (conf/tags.yaml): complete, consistent with the tables, rendered to docs/tags.md."""

from __future__ import annotations

import copy

import pytest

from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog
from portrait.master import schema
from portrait.tags.dictionary import TagDictionary
from portrait.tags.docs import COMMAND, render
from repo import REPO_ROOT

KEYS = {"user_id", "product_line", "dt"}  # identify a row; not tags


@pytest.fixture(scope="module")
def tags():
    return TagDictionary.load(Conf())


def test_the_three_slices_partition_the_30_day_window(tags):
    slices = sorted((tags.window(name) for name in ("30_20d", "20_10d", "10d")), key=lambda w: -w.from_days_ago)
    days = [day for window in slices for day in range(window.to_days_ago, window.from_days_ago + 1)]
    whole = tags.window("30d")
    assert sorted(days) == list(range(whole.to_days_ago, whole.from_days_ago + 1))  # no gap, no overlap


def test_every_profile_column_is_a_tag_and_every_fact_tag_a_column(tags):
    catalog = Catalog(".", Conf())
    for profile, spec in tags.sub_profiles.items():
        if spec["table"] is None:
            continue
        columns = set(catalog.spec(spec["table"]).columns) - KEYS
        documented = {column for name, tag in tags.tags.items() if tag["sub_profile"] == profile for column in tags.columns(name)}
        assert columns == documented, f"{spec['table']}: undocumented {columns - documented}, not built {documented - columns}"


def test_model_tags_are_declared_for_the_model_stage(tags):
    models = {name for name, tag in tags.tags.items() if tag["type"] == "model"}
    expected = {
        "churn_probability",
        "p_alive",
        "expected_purchases_30d",
        "clv_90d",
        "p_male",
        "p_white_collar",
        "p_student",
        "taste_{category}",
        "price_sensitivity",
        "discount_sensitivity",
    }
    assert models == expected


def test_docs_are_up_to_date_with_the_dictionary(tags):
    rendered = (REPO_ROOT / "docs" / "tags.md").read_text(encoding="utf-8")
    assert rendered == render(tags), f"docs/tags.md is out of date: run {COMMAND}"


def test_a_broken_declaration_names_the_tag():
    declarations = copy.deepcopy(Conf().load("tags"))
    declarations["tags"]["spend"]["windows"].append("45d")
    del declarations["tags"]["city"]["definition"]
    with pytest.raises(ConfError, match=r"tag spend: unknown window '45d'.*tag city: missing definition"):
        TagDictionary(declarations)
    with pytest.raises(ConfError, match="tag vip_tier .* has no threshold 'gold'"):
        TagDictionary.load(Conf()).threshold("vip_tier", "gold")


def test_the_profile_json_schema_is_up_to_date_with_the_dictionary(tags):
    committed = (REPO_ROOT / "conf" / "schemas" / "profile.schema.json").read_text(encoding="utf-8")
    assert committed == schema.render(tags), f"conf/schemas/profile.schema.json is out of date: run {schema.COMMAND}"


def test_the_schema_takes_value_sets_from_the_dictionary_and_refuses_an_unlabelled_value():
    declarations = copy.deepcopy(Conf().load("tags"))
    declarations["tags"]["line_status"]["values"]["dormant"] = "a new status"
    grown = TagDictionary(declarations, Conf().landing["categories"])
    built = schema.build(grown)
    lines = built["properties"]["产品线"]["additionalProperties"]["properties"]
    assert lines["状态"]["enum"] == ["active", "at_risk", "lapsed", "unused", "dormant"]
    assert grown.values("line_status") == ["active", "at_risk", "lapsed", "unused", "dormant"]
    declarations["tags"]["activity_tag"]["values"]["dormant"] = "a new label with no Chinese name in render.py"
    with pytest.raises(ConfError, match="tag activity_tag: value\\(s\\) dormant of conf/tags.yaml have no label"):
        schema.build(TagDictionary(declarations, Conf().landing["categories"]))


def test_columns_follow_the_dictionary_types_windows_and_categories(tags):
    assert tags.column_types("spend") == dict.fromkeys(["spend_30d", "spend_30_20d", "spend_20_10d", "spend_10d", "spend_90d"], "double")
    assert list(tags.column_types("taste_{category}")) == [f"taste_{c}" for c in Conf().landing["categories"]["salad"]]
    assert tags.values("vip_tier") == ["regular", "vip", "super_vip"]
    with pytest.raises(ConfError, match="tag city .* declares no `values:`"):
        tags.values("city")
