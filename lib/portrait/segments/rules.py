"""Segment rules: named audiences declared in conf/segments.yaml as expressions over tags.

A rule is a small boolean language, parsed with Python's own ``ast`` and checked
against a whitelist before anything runs::

    vip and churn_probability >= threshold('retention')
    lifecycle_stage in ('new', 'old') and not is_student
    days_since_last_order > 30 or activity_tag == 'lost'

Names are tags (columns of the master profile); ``threshold('x')`` reads a
number from the ``thresholds`` section of conf/segments.yaml. A rule naming an
unknown tag or threshold, or using anything else (function calls, attributes,
arithmetic on strings...), is refused with the segment's name and the reason.
The checked rule is rendered to Spark SQL.

``SegmentBook`` is the whole file compiled: thresholds (a conf value, or the
number chosen for the run date), computed tags, bands, derived boolean tags
and segments, each rule checked against the tags that exist when it runs.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from datetime import date

_COMPARATORS = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class SegmentRuleError(ValueError):
    """A segment rule that cannot be used; the message names the segment and the fault."""


class UnknownSegment(LookupError):
    """A segment name that conf/segments.yaml does not declare; the message lists the declared ones."""


@dataclass(frozen=True)
class Segment:
    name: str
    rule: str
    description: str
    sql: str  # the checked rule as a Spark SQL boolean expression
    reason: str = ""
    season: tuple[str, str] | None = None  # (MM-DD, MM-DD): outside it the segment is empty

    def in_season(self, dt: date) -> bool:
        if self.season is None:
            return True
        start, end, day = *self.season, dt.strftime("%m-%d")
        return start <= day <= end if start <= end else day >= start or day <= end

    def sql_on(self, dt: date) -> str:
        """The rule as run on ``dt``: FALSE out of season."""
        return self.sql if self.in_season(dt) else "FALSE"


def compile_rule(name: str, rule: str, tags: set[str], thresholds: dict[str, float], expansions: dict[str, str] | None = None) -> str:
    """Check ``rule`` and return it as Spark SQL; raise SegmentRuleError naming the fault.

    A tag in ``expansions`` (a derived tag) is replaced by its own SQL, so the
    result reads only snapshot columns and shows every threshold it uses.
    """
    try:
        tree = ast.parse(rule.strip(), mode="eval")
    except SyntaxError as exc:
        raise SegmentRuleError(f"segment {name}: bad syntax at column {exc.offset}: {rule!r}") from None
    return _Renderer(name, tags | set(expansions or ()), thresholds, expansions or {}).render(tree.body)


class _Renderer:
    def __init__(self, segment: str, tags: set[str], thresholds: dict[str, float], expansions: dict[str, str]):
        self.segment, self.tags, self.thresholds, self.expansions = segment, tags, thresholds, expansions

    def fail(self, message: str):
        raise SegmentRuleError(f"segment {self.segment}: {message}")

    def render(self, node: ast.AST) -> str:
        if isinstance(node, ast.BoolOp):
            joiner = " AND " if isinstance(node.op, ast.And) else " OR "
            return "(" + joiner.join(self.render(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return f"(NOT {self.render(node.operand)})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return f"(-{self.render(node.operand)})"
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return f"({self.render(node.left)} {_ARITHMETIC[type(node.op)]} {self.render(node.right)})"
        if isinstance(node, ast.Name):
            return self.tag(node.id)
        if isinstance(node, ast.Constant):
            return self.literal(node.value)
        if isinstance(node, ast.Call):
            return self.threshold(node)
        self.fail(f"{type(node).__name__.lower()} is not allowed in a rule ({ast.unparse(node)!r})")

    def compare(self, node: ast.Compare) -> str:
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                    self.fail(f"'in' needs a list of values, got {ast.unparse(right)!r}")
                values = ", ".join(self.render(v) for v in right.elts)
                keyword = "IN" if isinstance(op, ast.In) else "NOT IN"
                parts.append(f"{self.render(left)} {keyword} ({values})")
            elif type(op) in _COMPARATORS:
                parts.append(f"{self.render(left)} {_COMPARATORS[type(op)]} {self.render(right)}")
            else:
                self.fail(f"comparison {type(op).__name__} is not allowed")
            left = right
        return "(" + " AND ".join(parts) + ")"

    def tag(self, name: str) -> str:
        if name in ("true", "false", "True", "False"):
            return name.upper()
        if name not in self.tags:
            hint = difflib.get_close_matches(name, sorted(self.tags), n=1)
            self.fail(f"unknown tag '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        return self.expansions.get(name, f"`{name}`")

    def literal(self, value) -> str:
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        self.fail(f"literal {value!r} is not allowed")

    def threshold(self, node: ast.Call) -> str:
        if not (isinstance(node.func, ast.Name) and node.func.id == "threshold"):
            self.fail(f"only threshold('name') may be called, not {ast.unparse(node.func)!r}")
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or node.keywords:
            self.fail("threshold() takes one quoted name")
        key = node.args[0].value
        if key not in self.thresholds:
            self.fail(f"unknown threshold '{key}' (declared: {', '.join(sorted(self.thresholds)) or 'none'})")
        return repr(float(self.thresholds[key]))


def load_segments(
    declarations: dict, tags: set[str], chosen: dict[str, float] | None = None, expansions: dict[str, str] | None = None
) -> list[Segment]:
    """Compile every segment of conf/segments.yaml; the first bad rule stops with its error."""
    thresholds = threshold_values(declarations, chosen)
    for name, spec in _mapping(declarations, "segments").items():
        if not isinstance(spec, dict) or not isinstance(spec.get("rule"), str):
            raise SegmentRuleError(f"segment {name}: needs `rule:` (a string), got {spec!r}")
    return [
        Segment(
            name,
            spec["rule"],
            spec.get("description", ""),
            compile_rule(name, spec["rule"], tags, thresholds, expansions),
            spec.get("reason", ""),
            _season(name, spec.get("season")),
        )
        for name, spec in _mapping(declarations, "segments").items()
    ]


def threshold_values(declarations: dict, chosen: dict[str, float] | None = None) -> dict[str, float]:
    """Each threshold's number: the one ``chosen`` for the run date where given, else the conf value."""
    values = {}
    for name, spec in _mapping(declarations, "thresholds").items():
        value = spec.get("value") if isinstance(spec, dict) else spec
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SegmentRuleError(f"threshold {name}: needs a number (`value:`), got {value!r}")
        values[name] = float((chosen or {}).get(name, value))
    return values


def chosen_by(declarations: dict) -> dict[str, str]:
    """threshold name -> the table that chooses it per date (``chosen_by:``)."""
    return {
        name: spec["chosen_by"]
        for name, spec in _mapping(declarations, "thresholds").items()
        if isinstance(spec, dict) and spec.get("chosen_by")
    }


def _mapping(declarations: dict, key: str) -> dict:
    value = declarations.get(key) or {}
    if not isinstance(value, dict):
        raise SegmentRuleError(f"conf/segments.yaml {key}: must be a mapping of name -> declaration")
    return value


def _season(name: str, season) -> tuple[str, str] | None:
    if season is None:
        return None
    try:
        bounds = (str(season["from"]), str(season["to"]))
        for bound in bounds:
            date.fromisoformat(f"2000-{bound}")
    except (KeyError, TypeError, ValueError):
        raise SegmentRuleError(f"segment {name}: season needs from/to as MM-DD, got {season!r}") from None
    return bounds


@dataclass(frozen=True)
class Band:
    """A categorical tag cut from a number: "<e1", "e1-e2", ..., ">=en", "unknown" when null."""

    name: str
    tag: str
    edges: tuple[float, ...]

    @property
    def sql(self) -> str:
        cases = [f"WHEN `{self.tag}` IS NULL THEN 'unknown'", f"WHEN `{self.tag}` < {self.edges[0]!r} THEN '<{self.edges[0]:g}'"]
        for low, high in zip(self.edges, self.edges[1:]):
            cases.append(f"WHEN `{self.tag}` < {high!r} THEN '{low:g}-{high:g}'")
        return f"CASE {' '.join(cases)} ELSE '>={self.edges[-1]:g}' END"


RESERVED = "all_users"  # the analysis tables' name for the whole snapshot


@dataclass
class SegmentBook:
    """conf/segments.yaml compiled against the snapshot's tags, for one run date's thresholds."""

    thresholds: dict[str, float]
    computed: dict[str, dict]
    bands: list[Band]
    derived: list[Segment]  # boolean tags, in order
    segments: list[Segment]
    distribution_tags: list[str]
    transition_tags: list[str]
    threshold_sources: dict[str, str] = field(default_factory=dict)
    bitmap_tags: list[str] = field(default_factory=list)

    @classmethod
    def compile(cls, declarations: dict, snapshot_tags: set[str], chosen: dict[str, float] | None = None) -> SegmentBook:
        """Check every declaration; raise SegmentRuleError naming the first fault."""
        thresholds = threshold_values(declarations, chosen)
        computed = _mapping(declarations, "computed_tags")
        tags = set(snapshot_tags) | set(computed)
        bands = []
        for name, spec in _mapping(declarations, "bands").items():
            edges = tuple(float(e) for e in (spec or {}).get("edges") or ())
            if (spec or {}).get("tag") not in tags:
                raise SegmentRuleError(f"band {name}: unknown tag {(spec or {}).get('tag')!r}")
            if not edges or list(edges) != sorted(set(edges)):
                raise SegmentRuleError(f"band {name}: edges must be increasing numbers, got {spec.get('edges')!r}")
            bands.append(Band(name, spec["tag"], edges))
            tags.add(name)
        derived, expansions = [], {}
        for name, rule in _mapping(declarations, "derived_tags").items():
            if name in tags:
                raise SegmentRuleError(f"derived tag {name}: already a tag of the snapshot")
            derived.append(Segment(name, rule, "", compile_rule(name, str(rule), tags, thresholds, expansions)))
            expansions[name] = derived[-1].sql
        tags |= set(expansions)
        segments = load_segments(declarations, tags - set(expansions), chosen, expansions)
        if RESERVED in {s.name for s in segments}:
            raise SegmentRuleError(f"segment {RESERVED}: the name is reserved for the whole snapshot")
        analysis = declarations.get("analysis") or {}
        for key in ("distribution_tags", "transition_tags", "bitmap_tags"):
            unknown = [t for t in analysis.get(key) or () if t not in tags]
            if unknown:
                raise SegmentRuleError(f"analysis {key}: unknown tag {', '.join(map(repr, unknown))}")
        sources = {name: "conf" for name in thresholds}
        sources.update({name: chosen_by(declarations)[name] for name in chosen or {}})
        return cls(
            thresholds,
            computed,
            bands,
            derived,
            segments,
            list(analysis.get("distribution_tags") or ()),
            list(analysis.get("transition_tags") or ()),
            sources,
            list(analysis.get("bitmap_tags") or ()),
        )

    def segment(self, name: str) -> Segment:
        """The declared segment ``name``; UnknownSegment listing the declared ones otherwise."""
        for segment in self.segments:
            if segment.name == name:
                return segment
        hint = difflib.get_close_matches(name, self.names(), n=1)
        raise UnknownSegment(
            f"unknown segment {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; declared segments: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        return [segment.name for segment in self.segments]


def load_book(conf, chosen: dict[str, float] | None = None) -> SegmentBook:
    """conf/segments.yaml compiled against the columns declared for its snapshot table."""
    from portrait.core.tables import Catalog

    declarations = conf.segments
    columns = Catalog(".", conf).spec(declarations.get("snapshot", "gold.profile_snapshot")).columns
    return SegmentBook.compile(declarations, set(columns) - {"user_id", "dt"}, chosen)
