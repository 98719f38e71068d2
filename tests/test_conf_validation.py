"""Conf is validated at load, before any table is touched (issue 17, defect 4 and "Conf is validated at load").

Each broken declaration fails with the file, the key and what is allowed; a
run refuses to start, so nothing is written.
"""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import yaml

from portrait.cli import main
from portrait.core.config import Conf, ConfError
from portrait.core.pipeline import RunContext
from portrait.core.validate import problems, validate
from repo import REPO_ROOT


def conf_with(tmp_path, name: str, change) -> Conf:
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    path = conf_dir / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return Conf(conf_dir)


def test_the_repository_conf_is_sound():
    assert problems(Conf(REPO_ROOT / "conf")) == []


def _set(*path, value):
    def change(data):
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        (
            "tags",
            _set("tags", "vip_tier", "thresholds", "vip_min_spend_30d", value=-50),
            "conf/tags.yaml tags.vip_tier.thresholds.vip_min_spend_30d: -50 is negative",
        ),
        (
            "tags",
            _set("windows", "30d", "to_days_ago", value=40),
            "conf/tags.yaml windows.30d: needs whole numbers 0 <= to_days_ago <= from_days_ago",
        ),
        ("tags", _set("windows", "30d", "from_days_ago", value="thirty"), "conf/tags.yaml windows.30d"),
        (
            "pipeline",
            _set("clean", "max_quarantine_ratio", value=5),
            "conf/pipeline.yaml clean.max_quarantine_ratio: 5 is greater than the maximum of 1",
        ),
        (
            "pipeline",
            _set("clean", "dedup_lookback_dayz", value=7),
            "clean.dedup_lookback_dayz: unknown setting (did you mean 'dedup_lookback_days'?)",
        ),
        (
            "models",
            _set("retention", "success_rate", value=1.5),
            "conf/models.yaml retention.success_rate: 1.5 is greater than the maximum of 1",
        ),
        (
            "models",
            _set("churn", "features", "profile.consumption", value=["spend_30dd"]),
            "conf/models.yaml churn.features.profile.consumption: no column 'spend_30dd' (did you mean 'spend_30d'?)",
        ),
        ("monitoring", _set("severity", value="fatal"), "conf/monitoring.yaml severity: 'fatal' is not one of ['warning', 'critical']"),
        (
            "landing",
            _set("sources", "orders", "fields", "amount", "max", value=-1),
            "conf/landing.yaml sources.orders.fields.amount: min 0 is above max -1",
        ),
        ("segments", _set("segments", "vip_at_risk", "rule", value="spend_30 > 1"), "unknown tag 'spend_30'"),
        # issue 17 defect 10: an output no gate checks is refused unless it says why
        (
            "tables/ops",
            lambda data: data["ops.stage_runs"].pop("gate"),
            "conf/tables ops.stage_runs: no gate in conf/gates/ (its rows would publish unchecked)",
        ),
        (
            "tables/gold",
            lambda data: data["gold.profile"].pop("gate_reason"),
            "conf/tables gold.profile.gate_reason: missing",
        ),
        ("tables/ops", _set("ops.gate_results", "gate", value="off"), "conf/tables ops.gate_results.gate: 'off' is not allowed"),
        # a derived artefact is gated or says gate: none and why (issue 20: the explorer's index)
        ("pipeline", _set("artefacts", "explorer_index", "gate", value="master"), "artefacts.explorer_index.gate: 'none' was expected"),
        (
            "pipeline",
            lambda data: data["artefacts"]["explorer_index"].pop("gate_reason"),
            "conf/pipeline.yaml artefacts.explorer_index: 'gate_reason' is a required property",
        ),
        (
            "pipeline",
            _set("artefacts", "explorer_index", "stage", value="mastr"),
            "artefacts.explorer_index.stage: 'mastr' is not a stage (did you mean 'master'?)",
        ),
    ],
)
def test_a_broken_declaration_names_the_file_and_key(tmp_path, name, change, expected):
    conf = conf_with(tmp_path, name, change)
    with pytest.raises(ConfError) as error:
        validate(conf)
    assert expected in str(error.value)


def test_a_run_refuses_to_start_and_touches_no_lake(tmp_path, capsys):
    conf = conf_with(tmp_path, "tags", _set("tags", "vip_tier", "thresholds", "vip_min_spend_30d", value=-50))
    lake = tmp_path / "lake"
    with pytest.raises(ConfError):
        RunContext(None, str(lake), date(2026, 7, 1), conf)
    code = main(["run", "--date", "2026-07-01", "--to", "clean", "--lake", str(lake), "--conf", str(conf.dir)])
    assert code != 0
    assert "vip_min_spend_30d: -50 is negative" in capsys.readouterr().err
    assert not lake.exists()
