"""Render the tag dictionary (conf/tags.yaml) as Markdown for operators: docs/tags.md.

    python -m portrait.tags.docs > docs/tags.md

The file is generated, never edited by hand; a test fails when it is out of
date with conf/tags.yaml.
"""

from __future__ import annotations

import json
import sys

from portrait.core.config import Conf
from portrait.tags.dictionary import TagDictionary

COMMAND = "python -m portrait.tags.docs > docs/tags.md"


def render(tags: TagDictionary) -> str:
    lines = [
        "# Tag dictionary (标签字典)",
        "",
        f"Generated from `conf/tags.yaml` by `{COMMAND}`; edit the YAML, not this file.",
        "A tag with several windows is one column per window, named `{tag}_{window}`.",
        "",
        "## Windows",
        "",
        "Business days (Asia/Shanghai) counted back from the snapshot date D, both ends inclusive;",
        "only records known on D count (business date and landing date both on or before D).",
        "",
        "| window | days | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{w.name}` | {_day(w.from_days_ago)} .. {_day(w.to_days_ago)} | {w.description} |" for w in tags.windows.values()]
    for profile, spec in tags.sub_profiles.items():
        names = [name for name, tag in tags.tags.items() if tag["sub_profile"] == profile]
        table = f"`{spec['table']}`" if spec.get("table") else "declared by its stage"
        lines += [
            "",
            f"## {profile} - {spec['name_zh']}",
            "",
            spec["description"],
            "",
            f"Table: {table}. Refresh: {spec['refresh']}. Owner: {spec['owner']}.",
            "",
        ]
        lines += ["| tag | 中文 | type | columns |", "|---|---|---|---|"]
        lines += [
            f"| [{name}](#{_anchor(name)}) | {tags.tags[name]['name_zh']} | {tags.tags[name]['type']} | {', '.join(f'`{c}`' for c in tags.columns(name))} |"
            for name in names
        ]
        for name in names:
            lines += ["", *_tag_section(tags, name)]
    return "\n".join(lines) + "\n"


def _tag_section(tags: TagDictionary, name: str) -> list[str]:
    tag = tags.tags[name]
    window = tag.get("window") or ", ".join(tag.get("windows") or []) or "everything known up to D"
    lines = [
        f"### {name}",
        "",
        f"**{tag['name_zh']}** ({tag['type']}) - {' '.join(tag['definition'].split())}",
        "",
        f"- window: {window}",
        *([f"- column type: `{tag['column_type']}`"] if tag.get("column_type") else []),
        f"- sources: {', '.join(tag['sources'])}",
        f"- refresh: {tags.setting(name, 'refresh')}; owner: {tags.setting(name, 'owner')}",
    ]
    for key, value in (tag.get("thresholds") or {}).items():
        lines.append(f"- threshold `{key}`: `{json.dumps(value, ensure_ascii=False)}`")
    for value, meaning in (tag.get("values") or {}).items():
        lines.append(f"- value `{value}`: {meaning}")
    return lines


def _day(days_ago: int) -> str:
    return f"D-{days_ago}" if days_ago else "D"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped except - and _."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_")


def main() -> int:
    sys.stdout.write(render(TagDictionary.load(Conf())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
