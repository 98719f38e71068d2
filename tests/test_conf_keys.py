"""Every setting in conf/*.yaml is read by production code: no dead setting.

The loaded YAML is wrapped in a recording mapping (here in the test only), then
the product runs once on a tiny generated lake: the generator (part of the
product: `portrait generate`), the whole daily pipeline with every stage and
gate, and the commands that read the other settings (show, export, evaluate,
segment, tables, an order export landed, maintenance, the churn fit and the
retention curve that a 3-day lake is too short to reach, the tag docs). Every
leaf key of conf/*.yaml must have been read. conf/tables/ and conf/gates/ are
checked structurally by their own tests (test_tables, test_gates) instead;
prose keys (PROSE below) are documentation, not settings.
"""

from __future__ import annotations

import contextlib
import io
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from portrait import cli
from portrait.core.config import Conf
from repo import REPO_ROOT

pytestmark = pytest.mark.slow  # the daily run of a small lake, and every command over it (about 2-4 minutes)

END = date(2026, 9, 30)
DAYS = 3
#: Prose for people beside a setting (a field's doc, a threshold's reason, a computed tag's definition):
#: documentation kept next to what it explains, not a setting; every other leaf must be read.
PROSE = {"doc", "reason", "definition"}
#: The conf files whose every leaf key must be read (the folders are checked structurally elsewhere).
FILES = sorted(p.stem for p in (REPO_ROOT / "conf").glob("*.yaml"))


class Recorded(dict):
    """A conf mapping that notes the path of every key read through it (nested mappings and lists too)."""

    def __init__(self, data=(), path: str = "", reads: set | None = None):
        super().__init__(data)
        self._path, self._reads = path, reads if reads is not None else set()

    def _child(self, key, value):
        path = f"{self._path}.{key}" if self._path else str(key)
        self._reads.add(path)
        if isinstance(value, dict) and not isinstance(value, Recorded):
            value = Recorded(value, path, self._reads)
            dict.__setitem__(self, key, value)
        elif isinstance(value, list) and not isinstance(value, RecordedList):
            value = RecordedList(value, path, self._reads)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key):
        return self._child(key, dict.__getitem__(self, key))

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __iter__(self):  # not dict's own iterator: copies ({**d}, dict(d), f(**d)) then go through __getitem__
        return iter(list(dict.keys(self)))

    def items(self):
        return [(key, self[key]) for key in dict.keys(self)]

    def values(self):
        return [self[key] for key in dict.keys(self)]

    def copy(self):
        return dict(self.items())

    def __reduce__(self):  # pickled (e.g. into a UDF): a plain dict
        return (dict, (dict(self.items()),))


class RecordedList(list):
    """A list in conf: its mappings record under ``path[]``."""

    def __init__(self, data=(), path: str = "", reads: set | None = None):
        super().__init__(data)
        self._path, self._reads = path, reads if reads is not None else set()
        for i, value in enumerate(self):
            if isinstance(value, dict):
                list.__setitem__(self, i, Recorded(value, f"{path}[]", self._reads))

    def __reduce__(self):
        return (list, (list(self),))


def leaves(value, path: str = "") -> set[str]:
    """The leaf keys of a YAML document: a key whose value is not a mapping (lists of mappings looked into)."""
    if isinstance(value, dict) and value:
        return set().union(*(leaves(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return set().union(*(leaves(v, f"{path}[]") for v in value))
    return {path}


def run(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    assert code == 0, f"portrait {' '.join(argv)}: {err.getvalue()[-2000:]}"
    return out.getvalue()


@pytest.fixture(scope="module")
def reads(spark, tmp_path_factory):
    """The conf keys (file.path) read while the product runs once over a tiny lake."""
    import jobs.models as jobs_models
    from portrait.clean.external_orders import land_export
    from portrait.core import maintenance
    from portrait.core.pipeline import RunContext
    from portrait.devtools.generate import generate
    from portrait.models import churn, load_settings, registry
    from portrait.tags.dictionary import TagDictionary
    from portrait.tags.docs import render
    from test_models_churn import features_at, simulate

    recorded: set[str] = set()
    original = Conf.load

    def original_conf() -> Conf:  # settings the test itself looks at, without recording them
        conf = Conf()
        conf.load = lambda name: original(conf, name)
        return conf

    def load(self, name: str) -> dict:
        return Recorded(original(self, name), name.split("/")[0] if "/" in name else name, recorded)

    lake = str(tmp_path_factory.mktemp("conf_keys") / "lake")
    first, last = END - timedelta(days=DAYS - 1), END
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Conf, "load", load)
        generate(lake, users=150, days=DAYS, seed=5, end_date=END)
        run("run", "--date", str(first), "--until", str(last - timedelta(days=1)), "--to", "clean", "--lake", lake)
        run("run", "--date", str(last), "--lake", lake)
        run("show", "--sample", "--lake", lake)
        run("export", "--lake", lake, "--out", str(Path(lake) / "profiles.jsonl"))
        run("evaluate", "--date", str(last), "--lake", lake)
        run("segment", "list", "--lake", lake)
        run("segment", "count", "potential_users", "--lake", lake)
        run("segment", "count", "--where", "vip_tier == 'vip' and not likely_to_churn", "--lake", lake)
        run("segment", "export", "potential_users", "--lake", lake, "--out", str(Path(lake) / "potential.csv"))
        run("segment", "report", "--lake", lake)
        run("tables", "--lake", lake)
        explore(lake)
        # a shop's order export, landed as the next date's orders
        export = Path(lake) / "export.csv"
        pd.DataFrame(
            {"user_id": ["x1", "x2"], "order_time": ["2026-10-01 12:00:00", "2026-10-01 13:00:00"], "amount": [30.0, 45.5]}
        ).to_csv(export, index=False)
        land_export(export, lake, last + timedelta(days=1), Conf())
        maintenance.maintain(lake, Conf())
        # What a 3-day lake is too short for: the weekly churn fit (its inputs simulated, as a year of
        # sub-profile snapshots would give them), its reuse the next day, and the retention curve.
        settings = load_settings(Conf())
        day0, known = date(2026, 3, 1), date(2026, 3, 1) + timedelta(days=119)
        purchases = simulate(200, 120, np.random.default_rng(3))
        snapshots = [day0 + timedelta(days=d) for d in range(30, 90, 7)][::-1]
        users = sorted(set(purchases["user_id"]))
        simulated = pd.concat([features_at(purchases, s, users) for s in snapshots], ignore_index=True)
        noise = np.random.default_rng(4)
        for column in churn.feature_columns(dict(load_settings(original_conf())["churn"])):
            if column not in simulated:
                simulated[column] = noise.random(len(simulated))
        patch.setattr(jobs_models, "customer_features", lambda ctx, conf, s: spark.createDataFrame(simulated[simulated["dt"] == s]))
        ctx = RunContext(spark, lake, known, Conf())
        orders = spark.createDataFrame(purchases[["user_id", "dt"]])  # the job reads purchases on the engine
        model = jobs_models.train_churn(ctx, settings, orders, snapshots)
        for output in jobs_models.collected_outputs(ctx):  # what the models stage publishes after its gate
            ctx.catalog.write(spark, output.df, output.table, output.mode)
        reused, version, _ = jobs_models.churn_model(RunContext(spark, lake, known + timedelta(days=1), Conf()), settings, orders)
        assert version == registry.version_for(known) and reused.features == model.features
        scored = spark.createDataFrame(pd.DataFrame({"churn_probability": churn.score(model, simulated)}))
        jobs_models.threshold_curve(ctx, settings, scored, version)
        render(TagDictionary.load(Conf()))
    return recorded


def explore(lake: str) -> None:
    """The explorer over the lake (conf/explorer.yaml): both roles, the index the master stage published, a tag's orders."""
    from deltalake import DeltaTable
    from starlette.testclient import TestClient

    from portrait.explorer.app import create_app

    run("index", "--lake", lake)
    tokens = {role: run("users", "add", f"{role}1", "--role", role, "--lake", lake).strip() for role in ("operator", "analyst")}
    run("users", "list", "--lake", lake)
    snapshot = DeltaTable(f"{lake}/gold/profile_snapshot").to_pyarrow_table(columns=["user_id", "orders_30d", "dt"]).to_pylist()
    user = max(snapshot, key=lambda r: (r["dt"], r["orders_30d"] or 0, r["user_id"]))["user_id"]
    with TestClient(create_app(lake, Conf())) as client:
        for role, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get(f"/api/profile/{user}", headers=headers).status_code == 200, role
            assert client.get(f"/users/{user}/tags/orders_30d", headers=headers).status_code == 200, role
        login = client.post("/login", data={"account": "analyst1", "token": tokens["analyst"]}, follow_redirects=False)
        assert login.status_code == 303 and "portrait_session" in login.cookies


@pytest.mark.parametrize("name", FILES)
def test_every_setting_is_read(reads, name):
    declared = {f"{name}.{leaf}" for leaf in leaves(Conf().load(name)) if leaf.rsplit(".", 1)[-1] not in PROSE}
    unread = sorted(declared - reads)
    assert not unread, f"conf/{name}.yaml declares settings no production code reads: {', '.join(unread)}"
