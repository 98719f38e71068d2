"""Conf validated at load, before any table is touched: every file, not only those the first stage reads.

Each conf file with a schema (``conf/schemas/<name>.schema.yaml``, JSON Schema
written as YAML) is checked against it; then the rules a schema cannot say:
numbers in tag thresholds are not negative, a window's ends are in order,
bounds are ``min <= max``, settings that name a table, column, tag or value
name one that is declared. Each problem names the file, the key and what is
allowed; :func:`validate` raises one ``ConfError`` listing them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from portrait.core.config import Conf, ConfError, parse_yaml

#: The conf files checked against a schema of their own.
SCHEMA_FILES = ("pipeline", "landing", "models", "monitoring", "campaigns")


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), sorted(map(str, known)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def schema_problems(conf: Conf, name: str) -> list[str]:
    """``conf/{name}.yaml`` against ``conf/schemas/{name}.schema.yaml``."""
    import jsonschema

    with (conf.dir / "schemas" / f"{name}.schema.yaml").open(encoding="utf-8") as handle:
        schema = parse_yaml(handle)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    found = []
    for error in sorted(validator.iter_errors(conf.load(name)), key=lambda e: list(map(str, e.absolute_path))):
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties") or {})
            extra = [key for key in error.instance if key not in allowed]
            for key in extra:
                found.append(
                    f"conf/{name}.yaml {_key([*error.absolute_path, key])}: unknown setting{_hint(key, allowed)}; "
                    f"allowed: {', '.join(allowed)}"
                )
            continue
        found.append(f"conf/{name}.yaml {_key(error.absolute_path)}: {error.message}")
    return found


def _numbers(value, path: tuple) -> Iterator[tuple[tuple, float]]:
    """Every number inside a threshold declaration, with its path (mapping keys and list positions)."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, (*path, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _numbers(item, (*path, position))


def tag_problems(conf: Conf) -> list[str]:
    """conf/tags.yaml: thresholds are amounts, counts, days or shares, never negative; windows in order."""
    tags = conf.load("tags")
    found = []
    for name, spec in (tags.get("windows") or {}).items():
        start, end = spec.get("from_days_ago"), spec.get("to_days_ago", 0)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= end <= start):
            found.append(f"conf/tags.yaml windows.{name}: needs whole numbers 0 <= to_days_ago <= from_days_ago, got {start!r} .. {end!r}")
    for name, spec in (tags.get("tags") or {}).items():
        for path, number in _numbers((spec or {}).get("thresholds") or {}, ("tags", name, "thresholds")):
            if number < 0:
                found.append(f"conf/tags.yaml {_key(path)}: {number} is negative; a threshold must be >= 0")
    return found


def landing_problems(conf: Conf) -> list[str]:
    """conf/landing.yaml: every bound's min is at most its max."""
    found = []
    for source, spec in (conf.landing.get("sources") or {}).items():
        for field, decl in (spec.get("fields") or {}).items():
            bounds = [((source, "fields", field), decl)]
            bounds += [((source, "fields", field, "entry_bounds", entry), b) for entry, b in (decl.get("entry_bounds") or {}).items()]
            for path, bound in bounds:
                if "min" in bound and "max" in bound and bound["min"] > bound["max"]:
                    found.append(f"conf/landing.yaml sources.{_key(path)}: min {bound['min']} is above max {bound['max']}")
            for entry in decl.get("entry_bounds") or {}:
                if entry not in (decl.get("of") or {}):
                    found.append(
                        f"conf/landing.yaml sources.{source}.fields.{field}.entry_bounds.{entry}: not an entry field"
                        f"{_hint(entry, decl.get('of') or {})}; entries: {', '.join(decl.get('of') or {})}"
                    )
    sources = conf.landing.get("sources") or {}
    for index, declared in enumerate(conf.landing.get("empty_dates") or []):
        for source in declared.get("sources") or []:
            if source not in sources:
                found.append(
                    f"conf/landing.yaml empty_dates[{index}].sources: unknown source {source!r}{_hint(source, sources)}; "
                    f"sources: {', '.join(sources)}"
                )
    return found


def reference_problems(conf: Conf) -> list[str]:
    """Settings that name tables, columns, tags or values name declared ones."""
    from portrait.core.tables import Catalog

    catalog, found = Catalog(".", conf), []
    models = conf.load("models")
    for table, columns in ((models.get("churn") or {}).get("features") or {}).items():
        if table not in catalog.declarations:
            found.append(f"conf/models.yaml churn.features.{table}: not a declared table{_hint(table, catalog.names())}")
            continue
        declared = catalog.spec(table).columns
        found += [
            f"conf/models.yaml churn.features.{table}: no column {column!r}{_hint(column, declared)}"
            for column in columns
            if column not in declared
        ]
    lines = conf.landing["sources"]["events"]["fields"]["product_line"]["values"]
    for model in ("taste", "sensitivity"):
        line = (models.get(model) or {}).get("product_line")
        if line is not None and line not in lines:
            found.append(
                f"conf/models.yaml {model}.product_line: {line!r} is not a product line{_hint(line, lines)}; lines: {', '.join(lines)}"
            )
    monitoring, snapshot = conf.load("monitoring"), catalog.spec("gold.profile_snapshot").columns
    for tag in list(monitoring.get("tags") or {}) + list(monitoring.get("not_tags") or []):
        if tag not in snapshot:
            found.append(f"conf/monitoring.yaml: {tag!r} is not a column of gold.profile_snapshot{_hint(tag, snapshot)}")
    from portrait.core.pipeline import stage_names

    for name, artefact in (conf.load("pipeline").get("artefacts") or {}).items():
        if artefact["stage"] not in stage_names():
            found.append(
                f"conf/pipeline.yaml artefacts.{name}.stage: {artefact['stage']!r} is not a stage{_hint(artefact['stage'], stage_names())}"
            )
        if artefact["source"] not in catalog.declarations:
            found.append(f"conf/pipeline.yaml artefacts.{name}.source: not a declared table{_hint(artefact['source'], catalog.names())}")
    return found


def gate_problems(conf: Conf) -> list[str]:
    """Every declared table has a gate in conf/gates/, or declares ``gate: none`` with a ``gate_reason``."""
    found, gated = [], conf.gates
    for table, decl in conf.tables.items():
        marked, reason = decl.get("gate"), decl.get("gate_reason")
        if marked is not None and marked != "none":
            found.append(
                f"conf/tables {table}.gate: {marked!r} is not allowed; allowed: none (with gate_reason), or no key and a gate in conf/gates/"
            )
        elif marked == "none" and table in gated:
            found.append(f"conf/tables {table}.gate: none, but conf/gates/ declares a gate for it; keep one")
        elif marked == "none" and not (isinstance(reason, str) and reason.strip()):
            found.append(f"conf/tables {table}.gate_reason: missing; `gate: none` needs the reason no gate checks {table}")
        elif marked is None and table not in gated:
            found.append(
                f"conf/tables {table}: no gate in conf/gates/ (its rows would publish unchecked); "
                "declare one, or `gate: none` with a `gate_reason:`"
            )
    return found


def problems(conf: Conf) -> list[str]:
    """Everything wrong with the conf directory (empty when sound)."""
    found = []
    for name in SCHEMA_FILES:
        found += schema_problems(conf, name)
    if found:  # the cross-checks below assume the shapes the schemas promise
        return found
    found += tag_problems(conf) + landing_problems(conf)
    if found:  # the references below read table columns, which the tag dictionary derives (conf/tables tags_of:)
        return found
    found += reference_problems(conf)
    for check in (_tag_dictionary, _segments, _campaigns, _gates):
        try:
            check(conf)
        except (ConfError, ValueError, KeyError) as exc:
            found.append(str(exc).strip("'\""))
    return found + gate_problems(conf)


def _tag_dictionary(conf: Conf) -> None:
    from portrait.tags.dictionary import TagDictionary

    TagDictionary.load(conf)


def _segments(conf: Conf) -> None:
    from portrait.segments.rules import load_book

    load_book(conf)


def _campaigns(conf: Conf) -> None:
    from portrait.campaigns.declarations import load_campaigns

    load_campaigns(conf)


def _gates(conf: Conf) -> None:
    conf.gates  # noqa: B018 - parsing each file is the check; the gate's own format is checked when it runs


def validate(conf: Conf) -> None:
    """Raise ConfError naming every problem of ``conf``; nothing is read from or written to a lake."""
    found = problems(conf)
    if found:
        raise ConfError(f"conf {conf.dir} has {len(found)} problem(s):\n  " + "\n  ".join(found))


_validated: set[tuple] = set()  # (conf dir, its files' modification times) found sound in this process


def validate_once(conf: Conf) -> None:
    """:func:`validate`, skipped when this process already found the same files sound (every RunContext calls it)."""
    signature = (str(conf.dir.resolve()), tuple(sorted((str(p), p.stat().st_mtime_ns) for p in conf.dir.rglob("*.yaml"))))
    if signature not in _validated:
        validate(conf)
        _validated.add(signature)
