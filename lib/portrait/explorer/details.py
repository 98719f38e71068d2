"""What the pages and the API show, read from the lake: one place for each question, masked by role.

Masking happens here, before anything reaches a template or a JSON encoder:
a principal without ``personal`` gets the personal columns of
conf/explorer.yaml (names, addresses) as None in rows, and the profile
fields they render to as null.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property

import pyarrow.compute as pc

from portrait.core.config import Conf
from portrait.core.pipeline import stage_names
from portrait.explorer.auth import Principal
from portrait.explorer.index import Index
from portrait.explorer.lake import Lake, jsonable
from portrait.master.render import SNAPSHOT, render

MASK = "•••"
#: model tag column -> the model (key of model_versions) that gives it
MODEL_OF = {
    "churn_probability": "churn",
    "p_alive": "bgnbd",
    "expected_purchases_30d": "bgnbd",
    "p_male": "gender",
    "p_white_collar": "occupation",
    "p_student": "occupation",
    "taste_vegetable": "taste",
    "taste_fruit": "taste",
    "taste_seafood": "taste",
    "taste_chicken": "taste",
    "price_sensitivity": "sensitivity",
    "discount_sensitivity": "sensitivity",
}
#: sub-profile -> the silver table of the records behind its tags, and the columns shown
RECORDS = {
    "consumption": ("silver.orders", "ts"),
    "behavior": ("silver.events", "ts"),
}


class NotFound(LookupError):
    """No such user, tag, segment or date (the page answers 404)."""


@dataclass
class Explorer:
    lake: Lake
    index: Index
    settings: dict

    @classmethod
    def open(cls, root: str, conf: Conf) -> Explorer:
        return cls(Lake(root, conf), Index(root, conf), conf.load("explorer"))

    @cached_property
    def dictionary(self):
        import portrait.subprofiles  # noqa: F401 - first: tags.dictionary imported alone closes an import cycle through it
        from portrait.tags.dictionary import TagDictionary

        return TagDictionary.load(self.lake.conf)

    @cached_property
    def book(self):
        from portrait.segments.rules import load_book

        return load_book(self.lake.conf)

    def personal(self, table: str) -> set[str]:
        """The table's personal columns: its ``pii: true`` marks in conf/tables (docs/privacy.md)."""
        return set(self.lake.catalog.spec(table).pii) if table in self.lake.catalog.declarations else set()

    def personal_anywhere(self) -> set[str]:
        """Every column named personal for any table: a record shown from any table hides them all."""
        return set().union(*((self.settings.get("personal") or {}).values()))

    def mask_rows(self, table: str, rows: list[dict], who: Principal) -> list[dict]:
        # a tag's column has one name everywhere, and a personal column of one table is personal in any other
        hidden = set() if who.personal else self.personal(table) | self.personal_anywhere()
        return [{k: (None if k in hidden and v is not None else v) for k, v in row.items()} for row in rows] if hidden else rows

    # ------------------------------------------------------------- profiles

    def snapshot_dates(self) -> list[date]:
        return self.lake.dates(SNAPSHOT)

    def profile(self, user_id: str, who: Principal, dt: date | None = None) -> dict:
        """The user's profile as `portrait show` prints it (index for its date, else the snapshot), masked for ``who``."""
        state = self.index.state()
        if dt is None or state.get("dt") == dt.isoformat():
            text = self.index.profile_json(user_id)
            if text is not None:
                return mask_profile(json.loads(text), who)
            if dt is None and state:
                raise NotFound(f"user {user_id} has no profile on {state['dt']}")
        row = self.flat_row(user_id, dt)
        return mask_profile(render(row), who)

    def flat_row(self, user_id: str, dt: date | None = None) -> dict:
        dates = self.snapshot_dates()
        if not dates:
            raise NotFound("no master snapshot yet: run the pipeline first")
        dt = dt or dates[-1]
        rows = self.lake.rows(SNAPSHOT, user_id=user_id, dt=dt)
        if not rows:
            raise NotFound(f"user {user_id} has no profile on {dt}")
        return jsonable(rows[0])

    def search(self, text: str, who: Principal) -> list[dict]:
        """Users whose id starts with ``text``, and (a role that sees names only) whose name contains it."""
        found = [{"user_id": u, "name": None} for u in self.index.search_id(text.strip())]
        if who.personal:
            known = {f["user_id"] for f in found}
            found += [{"user_id": u, "name": n} for u, n in self.index.search_name(text.strip()) if u not in known]
        return found

    def tag_groups(self, row: dict, who: Principal) -> list[dict]:
        """The user's tag columns grouped by sub-profile, in dictionary order, with the value shown for each."""
        hidden = set() if who.personal else self.personal(SNAPSHOT)
        groups: dict[str, list] = {}
        if "name" in row:  # identity: from silver.users, in no sub-profile
            groups["identity"] = [
                {"column": "name", "tag": None, "value": MASK if "name" in hidden and row["name"] else short(row["name"])}
            ]
        for tag, spec in self.dictionary.tags.items():
            for column in self.dictionary.columns(tag):
                if column in row:
                    value = MASK if column in hidden and row[column] is not None else row[column]
                    groups.setdefault(spec["sub_profile"], []).append({"column": column, "tag": tag, "value": short(value)})
        if "product_lines" in row:
            groups.setdefault("product_line", []).append({"column": "product_lines", "tag": None, "value": short(row["product_lines"])})
        names = {"identity": {"name_zh": "身份"}, **self.dictionary.sub_profiles}
        return [{"sub_profile": s, "name_zh": names.get(s, {}).get("name_zh", s), "tags": tags} for s, tags in groups.items()]

    # ---------------------------------------------------------- tag detail

    def tag_of(self, column: str) -> tuple[str, dict]:
        """The dictionary tag a snapshot column belongs to (``spend_30d`` -> ``spend``)."""
        if column not in self.lake.columns(SNAPSHOT) or column in ("user_id", "dt"):
            raise NotFound(f"no tag column {column!r} in {SNAPSHOT}")
        for tag, spec in self.dictionary.tags.items():
            if column in self.dictionary.columns(tag):
                return tag, spec
        return column, {"definition": "(not in the tag dictionary)", "sub_profile": None}

    def history(self, user_id: str, column: str, who: Principal) -> list[dict]:
        """[{dt, value}] of one tag column of one user over the snapshot dates."""
        self.tag_of(column)
        rows = self.lake.rows(SNAPSHOT, ["dt", column], user_id=user_id)
        if not rows:
            raise NotFound(f"user {user_id} has no profile on any snapshot date")
        hidden = not who.personal and column in self.personal(SNAPSHOT)
        return [{"dt": r["dt"].isoformat(), "value": None if hidden else jsonable(r[column])} for r in sorted(rows, key=lambda r: r["dt"])]

    def window_of(self, tag: str, column: str):
        spec = self.dictionary.tag(tag)
        for name in spec.get("windows") or []:
            if column == f"{tag}_{name}":
                return self.dictionary.window(name)
        if spec.get("window") in self.dictionary.windows:
            return self.dictionary.window(spec["window"])
        return None

    def tag_detail(self, user_id: str, column: str, who: Principal, dt: date | None = None) -> dict:
        tag, spec = self.tag_of(column)
        row = self.flat_row(user_id, dt)
        dt = date.fromisoformat(row["dt"])
        hidden = not who.personal and column in self.personal(SNAPSHOT)
        window = self.window_of(tag, column) if spec.get("sub_profile") else None
        detail = {
            "user_id": user_id,
            "column": column,
            "tag": tag,
            "spec": spec,
            "owner": self.dictionary.setting(tag, "owner") if spec.get("sub_profile") else None,
            "refresh": self.dictionary.setting(tag, "refresh") if spec.get("sub_profile") else None,
            "window": window,
            "window_days": None if window is None else (window.first_day(dt), window.last_day(dt)),
            "dt": dt,
            "value": MASK if hidden and row.get(column) is not None else row.get(column),
            "hidden": hidden,
            "history": self.history(user_id, column, who),
            "records": None,
            "model": None,
            "inputs": [],
        }
        sub = spec.get("sub_profile")
        limit = int(self.settings.get("records_limit", 200))
        if sub in RECORDS:
            table, order = RECORDS[sub]
            first, last = detail["window_days"] or (dt - timedelta(days=89), dt)
            rows = self.lake.rows(table, user_id=user_id, dt=slice(first, last))
            rows = [r for r in rows if r.get("landing_dt") is None or r["landing_dt"] <= dt]  # only records known on dt
            rows.sort(key=lambda r: (r.get(order) is None, r.get(order)), reverse=True)
            detail["records"] = {
                "table": table,
                "first": first,
                "last": last,
                "total": len(rows),
                "rows": self.mask_rows(table, rows[:limit], who),
            }
        elif sub == "models":
            model = MODEL_OF.get(column)
            versions = row.get("model_versions") or {}
            version = versions.get(model) or (row.get("churn_model_version") if model == "churn" else None)
            registry = self.lake.rows("ops.model_registry", model=model, version=version) if model and version else []
            registry = [{**jsonable(r), "params": short(r.get("params"), 3000), "metrics": short(r.get("metrics"), 3000)} for r in registry]
            detail["model"] = {"model": model, "version": version, "registry": registry}
            for source in spec.get("sources") or []:
                if source.startswith("profile.") and self.lake.exists(source):
                    found = self.lake.rows(source, user_id=user_id, dt=dt)
                    detail["inputs"].append({"table": source, "rows": self.mask_rows(source, [jsonable(r) for r in found], who)})
        elif sub:
            table = self.dictionary.table_of(tag)
            if table and self.lake.exists(table):
                found = self.lake.rows(table, user_id=user_id, dt=dt)
                detail["records"] = {
                    "table": table,
                    "first": dt,
                    "last": dt,
                    "total": len(found),
                    "rows": self.mask_rows(SNAPSHOT, [jsonable(r) for r in found], who),
                }
        detail["population"] = self.population(column, dt, None if hidden else row.get(column))
        return detail

    def population(self, column: str, dt: date, user_value) -> dict:
        """The tag's distribution over the snapshot of ``dt``: a histogram for numbers, counts for labels."""
        if column in self.personal(SNAPSHOT):
            return {"kind": "hidden"}
        values = self.lake.scan(SNAPSHOT, [column], dt=dt).column(column)
        typ = values.type
        import pyarrow as pa

        if pa.types.is_integer(typ) or pa.types.is_floating(typ):
            numbers = [v for v in values.to_pylist() if v is not None]
            return {"kind": "number", "values": numbers, "user": user_value, "users": len(values), "nulls": len(values) - len(numbers)}
        if pa.types.is_string(typ) or pa.types.is_boolean(typ):
            counts = Counter("unknown" if v is None else str(v).lower() if isinstance(v, bool) else v for v in values.to_pylist())
            marked = "unknown" if user_value is None else str(user_value).lower() if isinstance(user_value, bool) else user_value
            return {"kind": "category", "counts": counts.most_common(30), "user": marked, "users": len(values)}
        if pa.types.is_date(typ):
            days = [(dt - v).days for v in values.to_pylist() if v is not None]
            mine = None if user_value is None else (dt - date.fromisoformat(user_value)).days
            return {
                "kind": "number",
                "values": days,
                "user": mine,
                "users": len(values),
                "nulls": len(values) - len(days),
                "unit": "days before the snapshot",
            }
        if pa.types.is_list(typ):
            sizes = pc.list_value_length(values).to_pylist()
            mine = None if user_value is None else len(user_value)
            return {"kind": "number", "values": [s or 0 for s in sizes], "user": mine, "users": len(values), "nulls": 0, "unit": "entries"}
        return {"kind": "none"}

    # ------------------------------------------------------------ tag page

    def tag_monitoring(self, column: str) -> dict:
        tag, spec = self.tag_of(column)
        rows = sorted(self.lake.rows("ops.tag_monitoring", tag=column), key=lambda r: r["dt"])
        for r in rows:
            warnings = []
            if r.get("coverage_change") is not None and abs(r["coverage_change"]) > (r.get("coverage_limit") or 1):
                warnings.append(f"coverage changed by {r['coverage_change']:+.2f} (limit {r['coverage_limit']})")
            if r.get("distribution_change") is not None and abs(r["distribution_change"]) > (r.get("distribution_limit") or 1e9):
                warnings.append(f"distribution changed by {r['distribution_change']:.2f} (limit {r['distribution_limit']})")
            r["warnings"] = warnings
            if column in self.personal(SNAPSHOT):
                r["top_values"] = None
        return {"column": column, "tag": tag, "spec": spec, "rows": rows}

    def monitored_tags(self) -> list[dict]:
        dates = self.lake.dates("ops.tag_monitoring")
        if not dates:
            return []
        latest = self.lake.rows(
            "ops.tag_monitoring",
            ["tag", "kind", "coverage", "coverage_change", "distribution_change", "coverage_limit", "distribution_limit"],
            dt=dates[-1],
        )
        for r in latest:
            r["dt"] = dates[-1]
            r["warn"] = (r["coverage_change"] is not None and abs(r["coverage_change"]) > r["coverage_limit"]) or (
                r["distribution_change"] is not None and abs(r["distribution_change"]) > r["distribution_limit"]
            )
        return sorted(latest, key=lambda r: r["tag"])

    # ------------------------------------------------------------- segments

    def segment_name(self, name: str) -> str:
        """A declared segment's name, else NotFound (only declared names ever reach a query)."""
        if name not in self.book.names():
            raise NotFound(f"unknown segment {name!r}")
        return name

    def segment_dates(self) -> list[date]:
        return self.lake.dates("gold.segment_bitmaps")

    def segments(self) -> list[dict]:
        rows = self.lake.rows("gold.segment_bitmaps", ["segment", "members", "dt"])
        sizes: dict[str, dict] = {}
        for r in rows:
            sizes.setdefault(r["segment"], {})[r["dt"]] = r["members"]
        return [{"name": s.name, "description": s.description, "sizes": sorted(sizes.get(s.name, {}).items())} for s in self.book.segments]

    def segment(self, name: str, dt: date | None = None) -> dict:
        name = self.segment_name(name)
        dates = self.segment_dates()
        if not dates:
            raise NotFound("no segments stored yet: run the segments stage")
        dt = dt or dates[-1]
        stored = self.lake.rows("gold.segment_bitmaps", ["members", "rule", "dt"], segment=name)
        today = [r for r in stored if r["dt"] == dt]
        moves = self.lake.rows("gold.tag_transitions", ["from_value", "to_value", "users"], tag=f"segment:{name}", dt=dt)
        analysis = self.lake.rows("gold.segment_analysis", ["tag", "value", "users", "share"], segment=name, dt=dt)
        spec = self.book.segment(name)
        return {
            "name": name,
            "description": spec.description,
            "reason": (self.lake.conf.segments.get("segments") or {}).get(name, {}).get("reason"),
            "rule": spec.rule,
            "rule_as_run": today[0]["rule"] if today else None,
            "dt": dt,
            "dates": dates,
            "members": today[0]["members"] if today else None,
            "sizes": sorted((r["dt"], r["members"]) for r in stored),
            "moves": sorted(moves, key=lambda m: (m["from_value"], m["to_value"])),
            "moved_in": sum(m["users"] for m in moves if m["to_value"] == "in" and m["from_value"] != "in"),
            "moved_out": sum(m["users"] for m in moves if m["from_value"] == "in" and m["to_value"] != "in"),
            "analysis": sorted(analysis, key=lambda a: (a["tag"], -a["users"])),
        }

    def segment_count(self, name: str, dt: date | None = None) -> dict:
        from pyroaring import BitMap

        name = self.segment_name(name)
        dt = dt or self._newest_segments()
        found = self.lake.rows("gold.segment_bitmaps", ["bitmap"], segment=name, dt=dt)
        if not found:
            raise NotFound(f"segment {name} was not built on {dt}")
        return {"segment": name, "dt": dt.isoformat(), "count": len(BitMap.deserialize(found[0]["bitmap"]))}

    def is_member(self, name: str, user_id: str, dt: date | None = None) -> dict:
        from pyroaring import BitMap

        name = self.segment_name(name)
        dt = dt or self._newest_segments()
        index = self.lake.rows("gold.user_index", ["user_index"], user_id=user_id)
        found = self.lake.rows("gold.segment_bitmaps", ["bitmap"], segment=name, dt=dt)
        if not found:
            raise NotFound(f"segment {name} was not built on {dt}")
        member = bool(index) and index[0]["user_index"] in BitMap.deserialize(found[0]["bitmap"])
        return {"segment": name, "dt": dt.isoformat(), "user_id": user_id, "member": member}

    def members(self, name: str, dt: date | None = None) -> list[str]:
        name = self.segment_name(name)
        dt = dt or self._newest_segments()
        return sorted(r["user_id"] for r in self.lake.rows("gold.segment_members", ["user_id"], segment=name, dt=dt))

    def count_where(self, rule: str, dt: date | None = None) -> dict:
        """Users matching an ad-hoc rule over the bitmap tags (`portrait segment count --where`)."""
        from portrait.segments import bitmaps

        dt = dt or self._newest_segments()
        return {"where": rule, "dt": dt.isoformat(), "count": bitmaps.count_where(self.lake.catalog, dt, rule, self.book)}

    def _newest_segments(self) -> date:
        dates = self.segment_dates()
        if not dates:
            raise NotFound("no segments stored yet: run the segments stage")
        return dates[-1]

    # ----------------------------------------------------------------- runs

    def run_dates(self) -> list[date]:
        return sorted(set(self.lake.dates("ops.reconciliation")) | set(self.lake.dates("ops.gate_results")), reverse=True)

    def run(self, dt: date) -> dict:
        gates = self.lake.rows("ops.gate_results", ["gate", "table_name", "expectation", "column_name", "observed", "success"], dt=dt)
        failures = self.lake.rows("ops.task_failures", ["task_id", "stage", "step", "state", "kind", "error", "failed_at"], dt=dt)
        stages = []
        for stage in stage_names():
            mine = [g for g in gates if g["gate"] == stage]
            failed = [g for g in mine if not g["success"]]
            tasks = [f for f in failures if f["stage"] == stage]
            status = "failed" if failed or any(f["state"] == "failed" for f in tasks) else "passed" if mine else "not run"
            stages.append({"stage": stage, "status": status, "checked": len(mine), "failed": len(failed), "task_failures": tasks})
        quarantine = self.lake.scan("quarantine.records", ["source", "rule"], dt=dt)
        reasons = quarantine.group_by(["source", "rule"]).aggregate([("rule", "count")]).to_pylist() if quarantine.num_rows else []
        return {
            "dt": dt,
            "stages": stages,
            "reconciliation": sorted(self.lake.rows("ops.reconciliation", dt=dt), key=lambda r: r["source"]),
            "failed": [g for g in gates if not g["success"]],
            "reasons": sorted(reasons, key=lambda r: -r["rule_count"]),
        }

    # --------------------------------------------------------------- models

    def models(self) -> dict:
        registry = sorted(self.lake.rows("ops.model_registry"), key=lambda r: (r["model"], r["version"]))
        metrics = self.lake.rows("ops.model_metrics", ["model", "version", "dt", "metric", "value"])
        curve_dates = self.lake.dates("ops.threshold_curve")
        curve = sorted(self.lake.rows("ops.threshold_curve", dt=curve_dates[-1]), key=lambda r: r["threshold"]) if curve_dates else []
        reports = self.lake.catalog.lake
        from pathlib import Path

        folder = Path(reports) / "ops" / "reports"
        plots = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
        return {
            "registry": registry,
            "metrics": sorted(metrics, key=lambda m: (m["model"], m["version"], m["dt"], m["metric"])),
            "curve": curve,
            "curve_dt": curve_dates[-1] if curve_dates else None,
            "plots": plots,
        }

    def plot_path(self, name: str):
        """The file of a listed evaluation plot; only names the folder lists are served (no path from the URL)."""
        from pathlib import Path

        folder = Path(self.lake.catalog.lake) / "ops" / "reports"
        for path in folder.glob("*.png") if folder.is_dir() else []:
            if path.name == name:
                return path
        raise NotFound(f"no plot {name!r}")


def mask_profile(profile: dict, who: Principal) -> dict:
    """The rendered profile with the personal fields (姓名, 常用地址's place and coordinates) null for a restricted role."""
    if who.personal:
        return profile
    profile["姓名"] = None
    for address in (profile.get("社会属性") or {}).get("常用地址", {}).values():
        address["地理名称"] = None
        address["经纬度"] = None
    return profile


def short(value, limit: int = 80) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
