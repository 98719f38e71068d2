"""A tag added to the dictionary reaches the stored tables through `portrait migrate`, never silently.

A copy of the repository's conf gets one more behavior tag; the sub-profile
and master specs grow by its column, the writer refuses the stored
profile.behavior and names `portrait migrate`, migrate adds the column with
delta-rs (history kept), and the write then goes through: old rows read null
in the new column and the version before the migration is still readable.
"""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import yaml
from deltalake import DeltaTable

from portrait.cli import main
from portrait.core.config import Conf
from portrait.core.migrate import MigrationRefused, delta_type, migrate, spark_type
from portrait.core.tables import Catalog, SchemaMismatch
from profile_rows import CONF, row, write

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)
TABLE = "profile.behavior"
NEW_TAG = {
    "sub_profile": "behavior",
    "type": "fact",
    "column_type": "bigint",
    "name_zh": "收藏次数",
    "definition": "A tag added after the tables were created.",
    "sources": ["silver.events"],
    "windows": ["30d"],
}


@pytest.fixture
def grown_conf(tmp_path) -> Conf:
    """The repository's conf with one more behavior tag, wishes (one column per window: wishes_30d)."""
    conf_dir = tmp_path / "conf"
    shutil.copytree(CONF.dir, conf_dir)
    tags = yaml.safe_load((conf_dir / "tags.yaml").read_text(encoding="utf-8"))
    tags["tags"]["wishes"] = NEW_TAG
    (conf_dir / "tags.yaml").write_text(yaml.safe_dump(tags, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return Conf(conf_dir)


def test_a_new_tag_is_a_column_of_its_sub_profile_and_of_the_master(grown_conf):
    before, after = Catalog(".", CONF), Catalog(".", grown_conf)
    assert list(after.spec(TABLE).columns) == [*[c for c in before.spec(TABLE).columns if c != "dt"], "wishes_30d", "dt"]
    master = list(after.spec("gold.profile").columns)
    assert [c for c in master if c != "wishes_30d"] == list(before.spec("gold.profile").columns)  # nothing else moves
    assert master.index("wishes_30d") == master.index("preferred_hours") + 1  # in the behavior section, after its last tag
    assert after.spec("gold.profile").columns["wishes_30d"] == "bigint"
    assert "wishes_30d" in after.spec("gold.profile_snapshot").columns


def test_run_refuses_then_migrate_adds_the_column_with_history_kept(spark, tmp_path, grown_conf, capsys):
    lake = str(tmp_path / "lake")
    write(spark, lake, TABLE, [row(TABLE, "u1", D1)], D1)
    old_version = Catalog(lake, CONF).version(TABLE)
    grown = Catalog(lake, grown_conf)
    new_rows = [{**row(TABLE, "u2", D2), "wishes_30d": 4}]

    with pytest.raises(
        SchemaMismatch,
        match=f"lacks declared column\\(s\\) wishes_30d: add the missing column\\(s\\) with `portrait migrate --lake {lake}`",
    ):
        write(spark, lake, TABLE, new_rows, D2, grown_conf)
    assert grown.version(TABLE) == old_version

    assert main(["migrate", "--lake", lake, "--conf", str(grown_conf.dir), "--dry-run"]) == 0
    assert "profile.behavior: would add wishes_30d bigint" in capsys.readouterr().out
    assert grown.version(TABLE) == old_version
    assert main(["migrate", "--lake", lake, "--conf", str(grown_conf.dir)]) == 0
    assert f"profile.behavior: added wishes_30d bigint (version {old_version} -> {old_version + 1})" in capsys.readouterr().out
    assert main(["migrate", "--lake", lake, "--conf", str(grown_conf.dir)]) == 0
    assert "every stored table" in capsys.readouterr().out  # idempotent

    write(spark, lake, TABLE, new_rows, D2, grown_conf)
    stored = {r["user_id"]: (r["wishes_30d"], r["dt"], r["logins_30d"]) for r in grown.read(spark, TABLE).collect()}
    assert stored == {"u1": (None, D1, 3), "u2": (4, D2, 3)}  # the new column is stored last; every value lands in its column
    assert grown.read(spark, TABLE).columns[-2:] == ["dt", "wishes_30d"]
    before = grown.read(spark, TABLE, version=old_version)
    assert "wishes_30d" not in before.columns and [r["user_id"] for r in before.collect()] == ["u1"]
    assert DeltaTable(grown.spec(TABLE).path).history()[1]["operation"] == "ADD COLUMN"


def test_migrate_refuses_a_type_change_or_an_undeclared_stored_column(spark, tmp_path, grown_conf):
    lake = str(tmp_path / "lake")
    write(spark, lake, TABLE, [row(TABLE, "u1", D1)], D1)
    tags = yaml.safe_load((grown_conf.dir / "tags.yaml").read_text(encoding="utf-8"))
    tags["tags"]["logins"]["column_type"] = "double"
    del tags["tags"]["reviews"]
    (grown_conf.dir / "tags.yaml").write_text(yaml.safe_dump(tags, allow_unicode=True, sort_keys=False), encoding="utf-8")
    version = Catalog(lake, CONF).version(TABLE)
    with pytest.raises(MigrationRefused) as refused:
        migrate(Catalog(lake, Conf(grown_conf.dir)))
    assert "profile.behavior: column 'logins_7d' is stored as bigint, declared double" in str(refused.value)
    assert "profile.behavior: stored column 'reviews_30d' is not declared" in str(refused.value)
    assert Catalog(lake, CONF).version(TABLE) == version  # nothing added, not even wishes_30d


@pytest.mark.parametrize(
    "kind",
    [
        "string",
        "bigint",
        "int",
        "double",
        "date",
        "timestamp",
        "array<int>",
        "map<string,string>",
        "array<struct<a:string,b:array<bigint>>>",
    ],
)
def test_spark_and_delta_types_translate_both_ways(kind):
    assert spark_type(delta_type(kind)) == kind
