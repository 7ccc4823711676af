"""Projects and their keys, loaded from a TOML file.

```toml
[[project]]
id = "demo"
write_keys = ["wk_demo"]      # public: goes into web pages
read_keys = ["rk_demo"]       # secret: for the read API
allowed_origins = ["*"]       # CORS for browser sends
order_events = ["purchase", "Order Completed"]  # the events that are orders

[project.exclude]             # internal and test traffic: stored, never counted
ips = ["10.0.0.0/8", "203.0.113.7/32"]   # the end user's raw address (docs/traffic.md)
user_ids = ["qa@shop.example"]
anonymous_ids = []
test_events = true            # a message with context.test = true is a test
```
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
)

# Segment's e-commerce spec names an order "Order Completed"; our SDK's docs say "purchase".
DEFAULT_ORDER_EVENTS = ("purchase", "Order Completed")


class ProjectsFileError(ValueError):
    """The projects file is missing, unreadable or malformed."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> Network:
    """One ``ips`` entry; an IPv4-mapped IPv6 range is kept as the IPv4 range it maps."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: a CIDR range is a string, like \"10.0.0.0/8\"")
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        # ipaddress says why: "has host bits set", "does not appear to be an IPv4 or IPv6
        # network". Raised as ValueError, it names the entry in ProjectsFileError.
        raise ValueError(f"{value!r} is not a CIDR range: {exc}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


class Exclusions(BaseModel):
    """A project's internal and test traffic: stored with a reason, left out of every count."""

    model_config = ConfigDict(extra="forbid")

    # CIDR ranges (a bare address is a /32 or /128), checked on the end user's raw
    # address before it is anonymized.
    ips: list[Annotated[Network, BeforeValidator(_network)]] = Field(default_factory=list)
    user_ids: list[str] = Field(default_factory=list)
    anonymous_ids: list[str] = Field(default_factory=list)
    # A message with ``context.test = true`` (a QA run, a staging build) is a test.
    # TOML has booleans: a string here ("no") is a mistake, not a value to coerce.
    test_events: bool = Field(default=True, strict=True)

    _user_ids: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _anonymous_ids: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def model_post_init(self, context: Any, /) -> None:
        # Looked up once per event: sets, not lists.
        self._user_ids = frozenset(self.user_ids)
        self._anonymous_ids = frozenset(self.anonymous_ids)

    def internal_ip(self, raw_ip: str) -> bool:
        if not self.ips or not raw_ip:
            return False
        try:
            ip = ipaddress.ip_address(raw_ip.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        # An address and a network of different versions never match (no TypeError).
        return any(ip in net for net in self.ips)

    def internal_id(self, user_id: str | None, anonymous_id: str | None) -> bool:
        return bool((user_id and user_id in self._user_ids)
                    or (anonymous_id and anonymous_id in self._anonymous_ids))


class Project(BaseModel):
    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    write_keys: list[str] = Field(default_factory=list)
    read_keys: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])
    # Days this project's events, rollups and sessions are kept; unset: the global
    # TRACKLANE_RETENTION_DAYS. Applied as TTL rules at every migrate.
    retention_days: int | None = Field(default=None, ge=1, le=3650, strict=True)
    # Events per second this project may send (a token bucket of ``rate_limit_burst``
    # events); over it, 429 with Retry-After. Unset: the collector's default, if any.
    rate_limit_events_per_s: float | None = Field(default=None, gt=0)
    rate_limit_burst: float | None = Field(default=None, ge=1)
    # The events that are orders, for orders, AOV, repurchase and CLV.
    order_events: list[str] = Field(default_factory=lambda: list(DEFAULT_ORDER_EVENTS),
                                    min_length=1)
    exclude: Exclusions = Field(default_factory=Exclusions)

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins

    def rate_limit(self, default: RateLimit | None) -> RateLimit | None:
        if self.rate_limit_events_per_s is None:
            return default
        return RateLimit.of(self.rate_limit_events_per_s, self.rate_limit_burst)


@dataclass(frozen=True, slots=True)
class RateLimit:
    events_per_s: float
    burst: float

    @classmethod
    def of(cls, events_per_s: float, burst: float | None) -> RateLimit:
        # One second's worth by default: short bursts pass, a sustained flood does not.
        return cls(events_per_s, burst or max(1.0, events_per_s))


class _ProjectsFile(BaseModel):
    project: list[Project] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Projects:
    """Key lookups over all projects. Keys are compared in constant time."""

    projects: tuple[Project, ...]

    def by_write_key(self, key: str) -> Project | None:
        return self._find(key, write=True)

    def by_read_key(self, key: str) -> Project | None:
        return self._find(key, write=False)

    def _find(self, key: str, *, write: bool) -> Project | None:
        found: Project | None = None
        probe = key.encode()
        # Compare against every key, without stopping early, so timing says nothing.
        for project in self.projects:
            for candidate in project.write_keys if write else project.read_keys:
                if hmac.compare_digest(probe, candidate.encode()) and found is None:
                    found = project
        return found


# What the shipped sample files put where a key goes (deploy/projects.toml).
SAMPLE_KEY_MARK = "REPLACE_ME"


def load_projects(path: Path) -> Projects:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProjectsFileError(f"projects file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectsFileError(f"{path}: {exc}") from None
    try:
        parsed = _ProjectsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProjectsFileError(f"{path}: {where}: {first['msg']}") from None
    ids = [p.id for p in parsed.project]
    if len(set(ids)) != len(ids):
        raise ProjectsFileError(f"{path}: project ids must be unique")
    for project in parsed.project:
        for key in (*project.write_keys, *project.read_keys):
            if SAMPLE_KEY_MARK in key:
                # A key copied from a sample is known to everyone who read the sample.
                raise ProjectsFileError(
                    f"{path}: project {project.id!r} still has the sample key {key!r}; "
                    "put fresh keys in (`tracklane keys` prints a pair)")
    return Projects(tuple(parsed.project))


def new_keys() -> tuple[str, str]:
    """A fresh write key and read key."""
    return f"wk_{secrets.token_urlsafe(16)}", f"rk_{secrets.token_urlsafe(24)}"


def project_toml(project: Project) -> str:
    """One project's ``[[project]]`` block, keys and origins only."""
    def strings(values: list[str]) -> str:
        return ", ".join(f'"{v}"' for v in values)

    return (
        "[[project]]\n"
        f'id = "{project.id}"\n'
        f"write_keys = [{strings(project.write_keys)}]  # public: goes into web pages\n"
        f"read_keys = [{strings(project.read_keys)}]  # secret: for the read API\n"
        f"allowed_origins = [{strings(project.allowed_origins)}]\n"
    )


def write_default_projects(path: Path, project_id: str = "default") -> Project:
    """Create a projects file with one project and fresh random keys."""
    write_key, read_key = new_keys()
    project = Project(id=project_id, write_keys=[write_key], read_keys=[read_key],
                      allowed_origins=["*"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Tracklane projects. Write keys are public (they go into web pages);\n"
        "# read keys are secrets for the read API.\n" + project_toml(project))
    path.chmod(0o600)
    return project
