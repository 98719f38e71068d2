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
"""
from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass

_COMPARATORS = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class SegmentRuleError(ValueError):
    """A segment rule that cannot be used; the message names the segment and the fault."""


@dataclass(frozen=True)
class Segment:
    name: str
    rule: str
    description: str
    sql: str  # the checked rule as a Spark SQL boolean expression


def compile_rule(name: str, rule: str, tags: set[str], thresholds: dict[str, float]) -> str:
    """Check ``rule`` and return it as Spark SQL; raise SegmentRuleError naming the fault."""
    try:
        tree = ast.parse(rule.strip(), mode="eval")
    except SyntaxError as exc:
        raise SegmentRuleError(f"segment {name}: bad syntax at column {exc.offset}: {rule!r}") from None
    return _Renderer(name, tags, thresholds).render(tree.body)


class _Renderer:
    def __init__(self, segment: str, tags: set[str], thresholds: dict[str, float]):
        self.segment, self.tags, self.thresholds = segment, tags, thresholds

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
        return f"`{name}`"

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


def load_segments(declarations: dict, tags: set[str]) -> list[Segment]:
    """Compile every segment of conf/segments.yaml; the first bad rule stops with its error."""
    thresholds = declarations.get("thresholds", {})
    return [
        Segment(name, spec["rule"], spec.get("description", ""), compile_rule(name, spec["rule"], tags, thresholds))
        for name, spec in declarations.get("segments", {}).items()
    ]
