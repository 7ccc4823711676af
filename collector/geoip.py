"""Where a request comes from: country, and with a MaxMind database, region and city.

Looked up on the raw IP, before it is anonymized (a /24 or /48 can straddle two
countries' blocks), and only the names are kept.

The country comes from ``iptocc``: the delegations of the five Regional Internet
Registries (AFRINIC, APNIC, ARIN, LACNIC, RIPE NCC), compiled into its wheel, so it works
offline with no licence key. It is the country a block is *registered* to, which agrees
with the commercial databases for about 95% of IPv4 addresses. A MaxMind-format database
(GeoLite2 or GeoIP2 City, or any ``.mmdb`` with the same fields), when configured, is
asked first and adds the region (first subdivision) and city.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import iptocc
import maxminddb

from tracklane.collector.config import GeoConfig
from tracklane.contract import GeoInfo

# A site's visitors repeat a few hundred thousand addresses a day at most. iptocc answers
# in ~0.1 µs, less than a cache's miss costs (~1 µs), so only the database, ~2 µs a
# lookup, is cached.
CACHE_SIZE = 65536


class GeoDatabaseError(Exception):
    """The configured database cannot be read as a MaxMind database."""


class GeoIP:
    """Looks addresses up; one per collector process (the reader maps the file once)."""

    def __init__(self, config: GeoConfig) -> None:
        self._reader: maxminddb.Reader | None = None
        if config.database is not None:
            try:
                self._reader = maxminddb.open_database(str(config.database))
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                raise GeoDatabaseError(
                    f"TRACKLANE_GEOIP_DB: cannot read {config.database}: {exc}") from None
        # One GeoInfo per country, so the registries' answer allocates nothing.
        self._countries: dict[str | None, GeoInfo] = {None: _NOWHERE}
        self.lookup: Callable[[str], GeoInfo] = (
            _nowhere if not config.enabled
            else lru_cache(maxsize=CACHE_SIZE)(self._lookup) if self._reader is not None
            else self._country)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _lookup(self, raw_ip: str) -> GeoInfo:
        """The place of ``raw_ip`` from the database, else from the registries."""
        found = self._from_database(raw_ip.strip())
        return found if found.country else self._country(raw_ip)

    def _country(self, raw_ip: str) -> GeoInfo:
        """The registries' country of ``raw_ip``; empty where unknown (private or bad
        addresses)."""
        try:
            code = iptocc.country_code(raw_ip.strip())
        except ValueError:
            code = None
        found = self._countries.get(code)
        if found is None:
            found = self._countries[code] = GeoInfo(country=code or "")
        return found

    def _from_database(self, raw_ip: str) -> GeoInfo:
        assert self._reader is not None
        try:
            record = self._reader.get(raw_ip)
        except ValueError:  # not an address
            return GeoInfo()
        if not isinstance(record, dict):
            return GeoInfo()
        country = _get(record, "country", "iso_code") or _get(
            record, "registered_country", "iso_code")
        subdivisions = record.get("subdivisions")
        region = ""
        if isinstance(subdivisions, list) and subdivisions:
            first = subdivisions[0]
            region = _name(first) or (_text(first.get("iso_code"))
                                      if isinstance(first, dict) else "")
        return GeoInfo(country=country, region=region, city=_name(record.get("city")))


def _nowhere(raw_ip: str) -> GeoInfo:
    return _NOWHERE


_NOWHERE = GeoInfo()


def _get(record: dict[str, Any], key: str, field: str) -> str:
    part = record.get(key)
    return _text(part.get(field)) if isinstance(part, dict) else ""


def _name(part: Any) -> str:
    """The English name, as MaxMind's databases all carry one."""
    if not isinstance(part, dict):
        return ""
    names = part.get("names")
    return _text(names.get("en")) if isinstance(names, dict) else ""


def _text(value: Any) -> str:
    return value[:100] if isinstance(value, str) else ""
