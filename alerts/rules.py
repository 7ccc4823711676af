"""The rules file: notifiers, rules and evaluation settings, validated at start.

Every detector parameter has a default chosen for the short form to work; a rule may
override any of them. Durations are written ``90s``, ``5m``, ``2h``, ``1d`` or as seconds.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)


class RulesFileError(ValueError):
    """The rules file is missing, unreadable or invalid; the message names rule and field."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def _duration(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 5m, 2h, 1d)")
        return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Severity = Literal["critical", "error", "warning", "info"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SmtpSpec(_Strict):
    """Where and how an ``email`` notifier sends: an SMTP server, a login, recipients."""

    host: str = Field(min_length=1)
    # 587 with STARTTLS (submission), 465 with TLS from the first byte, 25 with neither.
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str = Field(min_length=3, alias="from")
    to: list[str] = Field(min_length=1)
    # A CA bundle for a server whose certificate the system does not trust (an internal
    # relay); unset: the system's trust store.
    ca_file: str | None = None

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]

    @model_validator(mode="after")
    def _login(self) -> SmtpSpec:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password: give both or neither")
        return self


Locale = Literal["en", "zh-CN"]
_HTTP_KINDS = ("webhook", "slack", "alertmanager", "pagerduty", "dingtalk", "wecom", "feishu")


class NotifierSpec(_Strict):
    name: str = Field(min_length=1)
    kind: Literal["webhook", "slack", "alertmanager", "pagerduty", "dingtalk", "wecom", "feishu",
                  "email"]
    url: str | None = Field(default=None, min_length=1, pattern=r"^https?://")
    # webhook: the Standard Webhooks signing key; dingtalk: the robot's "SEC..." signing
    # secret; feishu: the bot's signature secret.
    secret: str | None = None
    routing_key: str | None = None  # pagerduty: the integration key
    timeout: Duration = timedelta(seconds=5)
    # Retries with exponential backoff from 1 s up to this long, then the send is dropped
    # and counted; the next evaluation tries again for anything still undelivered.
    max_retry: Duration = timedelta(minutes=5)
    headers: dict[str, str] = Field(default_factory=dict)
    # The language of the message text (dingtalk, wecom, feishu, email).
    locale: Locale = "en"
    # dingtalk: mention these mobile numbers, or everyone, in a firing message.
    at_mobiles: list[str] = Field(default_factory=list)
    at_all: bool = False
    email: SmtpSpec | None = None

    @model_validator(mode="after")
    def _needs(self) -> NotifierSpec:
        if self.kind == "pagerduty" and not self.routing_key:
            raise ValueError("routing_key: required for a pagerduty notifier")
        if self.kind in _HTTP_KINDS and not self.url:
            raise ValueError(f"url: required for a {self.kind} notifier")
        if self.kind == "email" and self.email is None:
            raise ValueError("email: required for an email notifier (host, from, to, ...)")
        if self.kind != "email" and self.email is not None:
            raise ValueError("email: only for an email notifier")
        if (self.at_mobiles or self.at_all) and self.kind != "dingtalk":
            raise ValueError("at_mobiles, at_all: only for a dingtalk notifier")
        return self


class _RuleBase(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    project: str = Field(min_length=1)
    severity: Severity = "warning"
    notify: list[str] = Field(default_factory=list)
    runbook_url: str | None = None
    dashboard_url: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str | None = None  # a fixed first line for notifications, instead of the default
    # The breach must hold this long before the alert fires (pending state).
    for_: Duration = Field(default=timedelta(minutes=1), alias="for")
    # Once firing, the alert stays firing until clear this long: a blip does not resolve it.
    keep_firing_for: Duration = timedelta(minutes=3)
    # A firing alert is re-notified this often.
    repeat_interval: Duration = timedelta(hours=4)
    # Flapping: this many breach/clear changes inside flap_window mark the alert flapping;
    # it then sends one notice and resolves only after flap_cooldown of being clear.
    flap_window: Duration = timedelta(hours=1)
    flap_changes: int = Field(default=3, ge=2)
    flap_cooldown: Duration = timedelta(minutes=30)


class _SeasonalBase(_RuleBase):
    window: Duration = timedelta(minutes=5)
    # Seasonal baseline: the same window 1..seasonal_days days back and 1..seasonal_weeks
    # weeks back; the median of those that have data.
    seasonal_days: int = Field(default=7, ge=0, le=28)
    seasonal_weeks: int = Field(default=4, ge=0, le=8)
    min_seasons: int = Field(default=3, ge=1)
    # Recent traffic over this long, before the window, scales the seasonal baseline, and is
    # the trailing baseline when there is too little history.
    level_window: Duration = timedelta(hours=1)


class VolumeRule(_SeasonalBase):
    """An event's count against its seasonal, level-adjusted expectation (Poisson tail)."""

    kind: Literal["volume_drop", "volume_spike"]
    event: str = Field(min_length=1)
    # Test against (1 - margin) x expected for a drop, (1 + margin) x expected for a spike:
    # ordinary day-to-day variation and baseline error stay inside the margin.
    margin: float | None = Field(default=None, gt=0)
    alpha: float = Field(default=1e-4, gt=0, lt=1)  # fire when p < alpha
    alpha_clear: float = Field(default=0.05, gt=0, lt=1)  # clear when p > alpha_clear
    min_expected: float = Field(default=10, ge=0)  # fewer expected events: insufficient data

    @property
    def effective_margin(self) -> float:
        if self.margin is not None:
            return self.margin
        return 0.3 if self.kind == "volume_drop" else 1.0


class ZeroTrafficRule(_SeasonalBase):
    """An event that normally flows has stopped; the silence needed follows from its rate."""

    kind: Literal["zero_traffic"]
    event: str = Field(min_length=1)
    for_: Duration = Field(default=timedelta(0), alias="for")
    # k silent minutes at expected rate r per minute have probability exp(-r k); fire when
    # that is below alpha, so 2 minutes at 10/min but over an hour at 0.2/min.
    alpha: float = Field(default=1e-6, gt=0, lt=1)
    min_silent: Duration = timedelta(minutes=1)
    max_silent: Duration = timedelta(hours=4)
    min_rate: float = Field(default=0.05, gt=0)  # events/minute below which it never fires


class ConversionRule(_SeasonalBase):
    """to_event / from_event in the window against its baseline (one-sided binomial test)."""

    kind: Literal["conversion_drop"]
    # The binomial test at alpha already demands strong evidence over the whole window,
    # so the alert fires on the first breach: waiting a minute more costs detection delay.
    for_: Duration = Field(default=timedelta(0), alias="for")
    from_event: str = Field(min_length=1)
    to_event: str = Field(min_length=1)
    # H0: the rate is at least (1 - margin) x baseline, so a baseline off by less than the
    # margin cannot page.
    margin: float = Field(default=0.2, gt=0, lt=1)
    alpha: float = Field(default=1e-3, gt=0, lt=1)
    alpha_clear: float = Field(default=0.05, gt=0, lt=1)
    min_samples: int = Field(default=200, ge=1)  # from_event count in the window
    min_expected: float = Field(default=10, ge=0)  # expected to_event count in the window
    # Baseline: the pooled rate over this long around the same time on past days; with less
    # than a day of history, the pooled rate over this long before the window.
    baseline_window: Duration = timedelta(hours=3)


VITALS = ("lcp", "inp", "cls", "fcp", "ttfb")
VITAL_STATS = ("quantile", "avg", "sum", "max")


class ThresholdRule(_RuleBase):
    """A static bound on a count, distinct users, revenue or a ratio over the window, or
    on a statistic of a page-speed property (``quantile``, ``avg``, ``sum``, ``max``)."""

    kind: Literal["threshold"]
    metric: Literal["count", "unique_users", "revenue", "ratio", "quantile", "avg", "sum",
                    "max"] = "count"
    event: str | None = None  # count, unique_users, revenue
    from_event: str | None = None  # ratio: to_event / from_event
    to_event: str | None = None
    # quantile, avg, sum, max: a Web Vitals property of the web_vitals events (lcp, inp,
    # cls, fcp, ttfb; ms, CLS unitless), the quantile's q, and the paths it covers.
    property: Literal[VITALS] | None = None  # type: ignore[valid-type]
    q: float = Field(default=0.75, ge=0, le=1)
    path_prefix: str = ""
    op: Literal["above", "below"]
    value: float
    clear_value: float | None = None  # defaults to value (no hysteresis)
    window: Duration = timedelta(minutes=5)
    # ratio: the from_event count needed; page speed: the samples needed.
    min_samples: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _fields(self) -> ThresholdRule:
        if self.metric == "ratio":
            if not self.from_event or not self.to_event:
                raise ValueError("from_event and to_event: required for metric 'ratio'")
        elif self.metric in VITAL_STATS:
            if self.property is None:
                raise ValueError(f"property: required for metric {self.metric!r} "
                                 f"(one of {', '.join(VITALS)})")
        elif not self.event:
            raise ValueError(f"event: required for metric {self.metric!r}")
        if self.clear_value is not None and (
            (self.op == "above" and self.clear_value > self.value)
            or (self.op == "below" and self.clear_value < self.value)
        ):
            raise ValueError("clear_value: must be on the normal side of value")
        return self


class PipelineStaleRule(_RuleBase):
    """The sink's watermark or lag is too far behind; holds the project's business rules."""

    kind: Literal["pipeline_stale"]
    project: str = "*"  # "*": the pipeline of every project
    max_delay: Duration = timedelta(minutes=5)  # now - watermark
    clear_delay: Duration | None = None  # defaults to max_delay / 2
    max_lag: int = Field(default=1_000_000, ge=1)  # records
    # A sink that restarts reports no watermark for a few seconds; that is not a stall.
    for_: Duration = Field(default=timedelta(minutes=1), alias="for")
    keep_firing_for: Duration = timedelta(minutes=1)


Rule = Annotated[
    VolumeRule | ZeroTrafficRule | ConversionRule | ThresholdRule | PipelineStaleRule,
    Field(discriminator="kind"),
]
BUSINESS_KINDS = frozenset(
    {"volume_drop", "volume_spike", "zero_traffic", "conversion_drop", "threshold"}
)


class EvaluationSpec(_Strict):
    interval: Duration = timedelta(seconds=15)
    # A minute is closed once the watermark passes its end plus this.
    lateness: Duration = timedelta(minutes=1)
    # Alertmanager drops an alert it has not heard of for a while; active ones are re-sent.
    alertmanager_resend: Duration = timedelta(minutes=1)
    dashboard_url: str | None = None  # default dashboard link for rules without one


REPORT_KPIS = ("pageviews", "visitors", "sessions", "bounce_rate", "avg_duration_s", "orders",
               "revenue", "aov", "conversion_rate")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Reports are read, not paged: they go to chat, email and webhooks.
REPORT_NOTIFIER_KINDS = frozenset({"webhook", "slack", "dingtalk", "wecom", "feishu", "email"})
_CLOCK_TIME = r"^([01]\d|2[0-3]):[0-5]\d$"


class ReportSpec(_Strict):
    """A daily (日报) or weekly (周报) report of a project's KPIs, sent at a local time."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    project: str = Field(min_length=1)
    every: Literal["day", "week"]
    at: str = Field(default="09:00", pattern=_CLOCK_TIME)  # local time, HH:MM
    weekday: Literal[WEEKDAYS] = "monday"  # type: ignore[valid-type]  # weekly reports only
    tz: str = "UTC"
    notify: list[str] = Field(min_length=1)
    kpis: list[Literal[REPORT_KPIS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["pageviews", "visitors", "sessions", "bounce_rate",
                                 "orders", "revenue", "conversion_rate"], min_length=1)
    funnel: list[str] = Field(default_factory=list)  # 2-10 events, optional
    funnel_window: Duration = timedelta(hours=1)
    order_events: list[str] | None = None  # default: the project's
    movers: int = Field(default=3, ge=0, le=20)  # top movers per dimension

    @model_validator(mode="after")
    def _check(self) -> ReportSpec:
        if self.funnel and not 2 <= len(self.funnel) <= 10:
            raise ValueError("funnel: 2 to 10 events")
        try:
            ZoneInfo(self.tz)
        except (ValueError, KeyError, OSError):
            raise ValueError(f"tz: unknown time zone {self.tz!r}") from None
        return self


class AlertsFile(_Strict):
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    notifiers: list[NotifierSpec] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    reports: list[ReportSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> AlertsFile:
        names = [n.name for n in self.notifiers]
        if len(set(names)) != len(names):
            raise ValueError("notifiers: names must be unique")
        kinds = {n.name: n.kind for n in self.notifiers}
        named = [("rule", r.name, r.notify) for r in self.rules]
        named += [("report", r.name, r.notify) for r in self.reports]
        seen: set[tuple[str, str]] = set()
        for what, name, notify in named:
            if (what, name) in seen:
                raise ValueError(f"{what} {name!r}: name: used twice")
            seen.add((what, name))
            for target in notify:
                if target not in kinds:
                    raise ValueError(f"{what} {name!r}: notify: no notifier named {target!r}")
                if what == "report" and kinds[target] not in REPORT_NOTIFIER_KINDS:
                    raise ValueError(
                        f"report {name!r}: notify: {target!r} is a {kinds[target]} "
                        f"notifier; reports go to {', '.join(sorted(REPORT_NOTIFIER_KINDS))}")
        return self


_ADAPTER = TypeAdapter(AlertsFile)


def parse_rules(text: str, source: str = "alerts file") -> AlertsFile:
    """Parse and validate rules YAML; errors name the rule and the field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesFileError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RulesFileError(f"{source}: expected a mapping with 'notifiers' and 'rules'")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise RulesFileError(f"{source}: " + "; ".join(
            _describe(raw, err) for err in exc.errors(include_url=False)
        )) from None


def load_rules(path: Path) -> AlertsFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesFileError(f"alerts file {path}: cannot read: {exc.strerror}") from None
    return parse_rules(text, f"alerts file {path}")


def _describe(raw: dict[str, Any], err: Any) -> str:
    """'rule "checkout": from_event: Field required' rather than a pydantic location tuple."""
    loc = list(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    where = ""
    if len(loc) >= 2 and loc[0] in ("rules", "notifiers", "reports") and isinstance(loc[1], int):
        section, index = loc[0], loc[1]
        items = raw.get(section) or []
        item = items[index] if index < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        label = {"rules": "rule", "notifiers": "notifier", "reports": "report"}[section]
        where = f"{label} {name!r}" if name else f"{label} #{index + 1}"
        # Drop the discriminator tag pydantic inserts (e.g. 'conversion_drop').
        loc = [p for p in loc[2:] if not (isinstance(p, str) and p in _KINDS)]
    field = ".".join(str(p) for p in loc)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        field = ".".join(filter(None, [field, "kind"]))
        msg = msg.replace(" found using 'kind'", "")
    if where and field:
        return f"{where}: {field}: {msg}"
    if where:
        return f"{where}: {msg}"
    return f"{field}: {msg}" if field else msg


_KINDS = BUSINESS_KINDS | {"pipeline_stale", "webhook", "slack", "alertmanager", "pagerduty",
                           "dingtalk", "wecom", "feishu", "email"}
