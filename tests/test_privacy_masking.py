"""Privacy without an engine: masking raw lines, pii marks derived through the catalog, forget's salt check."""

from __future__ import annotations

import pytest

from portrait.core.config import Conf
from portrait.core.tables import Catalog
from portrait.privacy import erasure
from portrait.privacy.masking import mask_line

CONF = Conf()
PATTERNS = tuple(sorted(CONF.pipeline["privacy"]["patterns"].items()))


@pytest.mark.parametrize(
    ("line", "kept", "gone"),
    [
        (
            '{"user_id": "u1", "name": "张三", "phone": "13812345678", "city": "上海"}',
            ['"user_id": "u1"', '"name": "«pii:name:string:2»"', '"phone": "«pii:phone:string:11»"', '"city": "上海"'],
            ["张三", "13812345678"],
        ),
        ('{"user_id":"u1","phone":13812345678,"name":null}', ['"phone":"«pii:phone:number:11»"', '"name":null'], ["13812345678"]),
        ('{"user_id":"u1","phone":"138123', ['"phone":"«pii:phone:'], ["138123"]),  # a cut line: masked all the same
        ("not json 13912345678 at a@b.cn 11010119900307123X", ["not json «pii:phone:11» at «pii:email:6» «pii:id_card:18»"], []),
        (
            '{"text": "广州市和平路25号 于保强 157-2164-1856", "lat": 23.1}',
            ['"text": "«pii:text:string:', '"lat": 23.1'],
            ["于保强", "1856", "和平路"],
        ),
    ],
)
def test_mask_line_keeps_the_diagnosis_and_nothing_of_the_value(line, kept, gone):
    masked = mask_line(line, ("name", "phone", "text"), PATTERNS)
    for text in kept:
        assert text in masked
    for text in gone:
        assert text not in masked


def test_pii_marks_are_derived_through_every_copy():
    catalog = Catalog("/nowhere", CONF)
    assert "name" in catalog.spec("silver.users").pii
    assert {"name", "common_addresses"} <= set(catalog.spec("gold.profile").pii)  # own mark + a tag's mark via columns_of
    assert catalog.spec("gold.profile_snapshot").pii == catalog.spec("gold.profile").pii  # columns_like
    assert catalog.spec("quarantine.records").pii == ("raw_line",)
    assert catalog.spec("silver.users").columns["name"] == "string"  # the mark does not change the type
    users = catalog.user_tables()
    assert {"silver.events", "profile.model_tags", "gold.profile_snapshot", "gold.segment_members", "gold.user_index"} <= set(users)
    assert "ops.erasure_log" not in users


def test_forget_without_the_salt_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTRAIT_ERASURE_SALT", raising=False)
    with pytest.raises(erasure.ErasureError, match="PORTRAIT_ERASURE_SALT is not set"):
        erasure.forget(str(tmp_path), CONF, ["u1"])
