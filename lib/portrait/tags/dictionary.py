"""The tag dictionary (conf/tags.yaml) as the fact transforms read it.

Windows and thresholds are looked up here by tag name, so a wrong or missing
declaration fails with the tag and key named instead of a KeyError deep in a
transform. Column names follow the dictionary: a tag with ``windows:`` gives
one column per window, ``{tag}_{window}``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from portrait.core.config import Conf, ConfError
from portrait.subprofiles.common import DayWindow

TAGS_FILE = "conf/tags.yaml"
TAG_TYPES = ("fact", "model", "strategy")
REQUIRED = ("sub_profile", "type", "name_zh", "definition", "sources")


class TagDictionary:
    """Tags, windows and sub-profiles of one conf directory."""

    def __init__(self, declarations: dict, categories: dict[str, list[str]] | None = None):
        self.declarations = declarations
        self.categories = categories or {}  # conf/landing.yaml categories, for `for_each_category:`
        self.windows = {
            name: DayWindow(name, int(spec["from_days_ago"]), int(spec.get("to_days_ago", 0)), spec.get("description", ""))
            for name, spec in (declarations.get("windows") or {}).items()
        }
        self.sub_profiles: dict[str, dict] = declarations.get("sub_profiles") or {}
        self.tags: dict[str, dict] = declarations.get("tags") or {}
        problems = self.problems()
        if problems:
            raise ConfError(f"{TAGS_FILE}: " + "; ".join(problems))

    @classmethod
    def load(cls, conf: Conf) -> TagDictionary:
        """The dictionary of ``conf/tags.yaml``, parsed and checked once per Conf (every catalog of a run asks for it)."""
        if "_tag_dictionary" not in conf.__dict__:
            conf.__dict__["_tag_dictionary"] = cls(conf.load("tags"), conf.landing.get("categories"))
        return conf.__dict__["_tag_dictionary"]

    def problems(self) -> list[str]:
        """What is wrong with the declarations (empty when sound)."""
        found = []
        for window in self.windows.values():
            if not 0 <= window.to_days_ago <= window.from_days_ago:
                found.append(f"window {window.name}: needs 0 <= to_days_ago <= from_days_ago")
        for name, spec in self.tags.items():
            found += [f"tag {name}: missing {key}" for key in REQUIRED if not spec.get(key)]
            if spec.get("type") not in TAG_TYPES:
                found.append(f"tag {name}: type must be one of {', '.join(TAG_TYPES)}")
            if spec.get("sub_profile") not in self.sub_profiles:
                found.append(f"tag {name}: unknown sub_profile {spec.get('sub_profile')!r}")
            named = list(spec.get("windows") or []) + ([spec["window"]] if "window" in spec else [])
            found += [f"tag {name}: unknown window {w!r}" for w in named if w not in self.windows]
            if spec.get("type") != "strategy" and not spec.get("column_type"):
                found.append(f"tag {name}: missing column_type (the Spark type of its column(s))")
            if spec.get("for_each_category") and "{category}" not in name:
                found.append(f"tag {name}: for_each_category needs {{category}} in the tag's name")
        return found

    # ------------------------------------------------------------------ lookups

    def tag(self, name: str) -> dict:
        try:
            return self.tags[name]
        except KeyError:
            raise ConfError(f"tag {name!r} is not declared in {TAGS_FILE}") from None

    def window(self, name: str) -> DayWindow:
        try:
            return self.windows[name]
        except KeyError:
            raise ConfError(f"window {name!r} is not declared in {TAGS_FILE} (windows: {', '.join(self.windows)})") from None

    def window_of(self, tag: str) -> DayWindow:
        """The one window of a single-column tag (``window:``)."""
        spec = self.tag(tag)
        if "window" not in spec:
            raise ConfError(f"tag {tag} in {TAGS_FILE} declares no `window:`")
        return self.window(spec["window"])

    def windowed(self, tag: str) -> list[tuple[str, DayWindow]]:
        """``(column, window)`` for each window of a tag with ``windows:``."""
        names = self.tag(tag).get("windows")
        if not names:
            raise ConfError(f"tag {tag} in {TAGS_FILE} declares no `windows:` list")
        return [(f"{tag}_{name}", self.window(name)) for name in names]

    def column(self, tag: str, window: DayWindow) -> str:
        """The column of ``tag`` over ``window``; the window must be one the tag declares."""
        for column, declared in self.windowed(tag):
            if declared == window:
                return column
        raise ConfError(f"tag {tag} in {TAGS_FILE} has no column for window {window.name} (add it to its `windows:`)")

    def threshold(self, tag: str, key: str) -> Any:
        thresholds = self.tag(tag).get("thresholds") or {}
        if key not in thresholds:
            raise ConfError(f"tag {tag} in {TAGS_FILE} has no threshold {key!r} (has: {', '.join(thresholds) or 'none'})")
        return thresholds[key]

    def first_day(self, snapshot_dt: date, *tags: str) -> date:
        """The earliest business date any window of ``tags`` reaches back to for snapshot ``snapshot_dt``."""
        windows = [
            window
            for tag in tags
            for window in ([self.window_of(tag)] if "window" in self.tag(tag) else [w for _, w in self.windowed(tag)])
        ]
        return min(window.first_day(snapshot_dt) for window in windows)

    # ------------------------------------------------------------- for readers

    def columns(self, tag: str) -> list[str]:
        """The table columns a tag gives: one per window, one per category, or the tag's name."""
        spec = self.tag(tag)
        if spec.get("windows"):
            return [column for column, _ in self.windowed(tag)]
        if spec.get("for_each_category"):
            each = spec["for_each_category"]
            if each not in self.categories:
                raise ConfError(f"tag {tag} in {TAGS_FILE}: for_each_category {each!r} is not a category list of conf/landing.yaml")
            return [tag.format(category=c) for c in self.categories[each]]
        return [tag]

    def column_types(self, tag: str) -> dict[str, str]:
        """``{column: Spark type}`` of one tag."""
        return dict.fromkeys(self.columns(tag), self.tag(tag)["column_type"])

    def tags_of(self, sub_profile: str) -> list[str]:
        """The tags of a sub-profile, in the dictionary's order."""
        if sub_profile not in self.sub_profiles:
            raise ConfError(f"sub-profile {sub_profile!r} is not declared in {TAGS_FILE} (has: {', '.join(self.sub_profiles)})")
        return [name for name, spec in self.tags.items() if spec["sub_profile"] == sub_profile]

    def values(self, tag: str) -> list[str]:
        """The allowed values of a label tag (its ``values:``), in declared order."""
        values = self.tag(tag).get("values")
        if not values:
            raise ConfError(f"tag {tag} in {TAGS_FILE} declares no `values:`")
        return [str(value) for value in values]

    def table_of(self, tag: str) -> str | None:
        return self.sub_profiles[self.tag(tag)["sub_profile"]].get("table")

    def setting(self, tag: str, key: str) -> Any:
        """``refresh`` or ``owner``: the tag's own, else its sub-profile's."""
        return self.tag(tag).get(key) or self.sub_profiles[self.tag(tag)["sub_profile"]].get(key)
