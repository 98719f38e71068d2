"""conf/campaigns.yaml compiled: campaigns, channels and the frequency cap, every reference checked.

A campaign names its audience (a segment of conf/segments.yaml or a rule over
the snapshot's tags, compiled by the segment rule language), a channel, a
message template whose ``{placeholders}`` are tags, and the consent it needs
(the channel's, unless it names its own). Anything unknown is refused with the
campaign's name, the key and "did you mean".
"""

from __future__ import annotations

import difflib
import string
from dataclasses import dataclass
from datetime import date

from portrait.segments.rules import SegmentBook, SegmentRuleError, compile_rule

#: Placeholders every template may use besides the snapshot's tags.
OFFER_PLACEHOLDERS = ("offer_value", "campaign")
PROTOCOLS = ("webhook", "smtp", "file_drop")


class CampaignError(ValueError):
    """A campaign declaration that cannot be used; the message names the campaign and the key."""


class UnknownCampaign(LookupError):
    """A campaign name conf/campaigns.yaml does not declare."""


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), sorted(map(str, known)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Channel:
    name: str
    protocol: str
    consent: str
    endpoint_env: str
    secret_env: str | None = None
    connection: str | None = None
    sender: str = "crm@portrait.example"
    recipient_domain: str = "relay.portrait.example"
    batch_size: int = 100
    timeout_seconds: float = 10.0
    max_attempts: int = 3
    backoff_seconds: float = 1.0


@dataclass(frozen=True)
class Campaign:
    name: str
    audience_sql: str  # a Spark SQL predicate over the tagged snapshot
    audience: str  # as declared: "segment:NAME" or "rule:RULE"
    contact: str  # entrants | members
    channel: Channel
    consent: str
    template: str
    placeholders: tuple[str, ...]
    offer_value: float
    offer_cost: float
    start: date
    end: date
    holdout: float
    horizon_days: int
    retention: bool = False
    description: str = ""

    def active_on(self, dt: date) -> bool:
        return self.start <= dt <= self.end

    def render(self, tags: dict) -> str:
        """The message for one user: placeholders filled from ``tags`` (a missing value renders as empty)."""
        values = {"offer_value": f"{self.offer_value:g}", "campaign": self.name}
        for name in self.placeholders:
            if name not in values:
                value = tags.get(name)
                values[name] = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
        return self.template.format(**values)


@dataclass(frozen=True)
class CampaignBook:
    campaigns: dict[str, Campaign]
    channels: dict[str, Channel]
    cap_contacts: int
    cap_days: int

    def campaign(self, name: str) -> Campaign:
        if name not in self.campaigns:
            raise UnknownCampaign(
                f"unknown campaign {name!r}{_hint(name, self.campaigns)}; declared campaigns: {', '.join(self.campaigns) or 'none'}"
            )
        return self.campaigns[name]

    def active(self, dt: date) -> list[Campaign]:
        return [c for c in self.campaigns.values() if c.active_on(dt)]


def template_placeholders(name: str, template: str, tags: set[str]) -> tuple[str, ...]:
    """The ``{names}`` of ``template``; CampaignError naming an unknown one (with did you mean) or a bad format."""
    try:
        fields = [field for _, field, spec, conversion in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise CampaignError(f"campaign {name}: template: {exc}") from None
    known = set(tags) | set(OFFER_PLACEHOLDERS)
    for field in fields:
        if not field.isidentifier():
            raise CampaignError(f"campaign {name}: template placeholder {{{field}}} must be a tag name")
        if field not in known:
            raise CampaignError(f"campaign {name}: template placeholder {{{field}}} is not a tag{_hint(field, known)}")
    return tuple(dict.fromkeys(fields))


def compile_book(declarations: dict, segments: SegmentBook, snapshot_tags: set[str], consent_channels: list[str]) -> CampaignBook:
    """Check conf/campaigns.yaml against the segment book, the snapshot's tags and the consent channels."""
    channels = {}
    for name, spec in (declarations.get("channels") or {}).items():
        if spec.get("protocol") not in PROTOCOLS:
            raise CampaignError(f"channel {name}: protocol {spec.get('protocol')!r} is not one of {', '.join(PROTOCOLS)}")
        if spec.get("consent") not in consent_channels:
            raise CampaignError(
                f"channel {name}: consent {spec.get('consent')!r} is not a consent channel{_hint(spec.get('consent'), consent_channels)};"
                f" conf/landing.yaml sources.consent channels: {', '.join(consent_channels)}"
            )
        fields = [f for f in Channel.__dataclass_fields__ if f != "name"]
        unknown = sorted(set(spec) - set(fields))
        if unknown:
            raise CampaignError(f"channel {name}: unknown setting {unknown[0]!r}{_hint(unknown[0], fields)}")
        channels[name] = Channel(name, **{key: spec[key] for key in fields if key in spec})
    tags = set(snapshot_tags) | {band.name for band in segments.bands} | {d.name for d in segments.derived}
    expansions = {d.name: d.sql for d in segments.derived}
    campaigns = {}
    for name, spec in (declarations.get("campaigns") or {}).items():
        audience = spec["audience"]
        if "segment" in audience:
            segment = audience["segment"]
            if segment not in segments.names():
                raise CampaignError(f"campaign {name}: audience segment {segment!r} is not declared{_hint(segment, segments.names())}")
            sql, described = segments.segment(segment).sql, f"segment:{segment}"
        else:
            try:
                sql = compile_rule(name, audience["rule"], tags - set(expansions), segments.thresholds, expansions)
            except SegmentRuleError as exc:
                raise CampaignError(f"campaign {name}: audience rule: {str(exc).split(': ', 1)[-1]}") from None
            described = f"rule:{audience['rule']}"
        if spec["channel"] not in channels:
            raise CampaignError(f"campaign {name}: channel {spec['channel']!r} is not declared{_hint(spec['channel'], channels)}")
        channel = channels[spec["channel"]]
        consent = spec.get("consent", channel.consent)
        if consent not in consent_channels:
            raise CampaignError(f"campaign {name}: consent {consent!r} is not a consent channel{_hint(consent, consent_channels)}")
        start, end = (_day(name, key, spec[key]) for key in ("start", "end"))
        if end < start:
            raise CampaignError(f"campaign {name}: end {end} is before start {start}")
        if spec["offer"]["cost"] > spec["offer"]["value"]:
            raise CampaignError(f"campaign {name}: offer cost {spec['offer']['cost']} is above its value {spec['offer']['value']}")
        campaigns[name] = Campaign(
            name,
            sql,
            described,
            spec["contact"],
            channel,
            consent,
            spec["template"],
            template_placeholders(name, spec["template"], tags),
            float(spec["offer"]["value"]),
            float(spec["offer"]["cost"]),
            start,
            end,
            float(spec["holdout"]),
            int(spec["horizon_days"]),
            bool(spec.get("retention", False)),
            str(spec.get("description", "")),
        )
    retention = [c.name for c in campaigns.values() if c.retention]
    if len(retention) > 1:
        raise CampaignError(f"campaigns {', '.join(retention)}: only one campaign may set retention: true (its uplift is the success rate)")
    cap = declarations["frequency_cap"]
    return CampaignBook(campaigns, channels, int(cap["contacts"]), int(cap["days"]))


def _day(name: str, key: str, value) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise CampaignError(f"campaign {name}: {key} {value!r} is not a date (YYYY-MM-DD)") from None


def consent_channels(conf) -> list[str]:
    return list(conf.landing["sources"]["consent"]["fields"]["channel"]["values"])


def load_campaigns(conf, chosen: dict[str, float] | None = None) -> CampaignBook:
    """conf/campaigns.yaml compiled against conf/segments.yaml and gold.profile_snapshot's columns."""
    from portrait.core.tables import Catalog
    from portrait.segments.rules import load_book

    segments = load_book(conf, chosen)
    columns = Catalog(".", conf).spec(conf.segments.get("snapshot", "gold.profile_snapshot")).columns
    return compile_book(conf.load("campaigns"), segments, set(columns) - {"user_id", "dt"}, consent_channels(conf))
