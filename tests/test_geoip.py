"""Country from the registries' data in the wheel, region and city from a MaxMind database.

The database here is a tiny one written with mmdb-writer in MaxMind's City layout; the
lookups go through MaxMind's own reader, and the events through the real collector,
Kafka (Tansu) and sink into the store.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.pipeline import new_project, now_utc, pipeline_settings, poll, running_pipeline
from tracklane.broker import TansuBroker
from tracklane.collector.config import GeoConfig
from tracklane.collector.geoip import GeoDatabaseError, GeoIP
from tracklane.contract import GeoInfo
from tracklane.projects import project_toml

LONDON = "81.2.69.160"  # in RIPE's delegation to GB


def city_database(path: Path) -> Path:
    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-City", languages=["en"])
    writer.insert_network(IPSet(["81.2.69.0/24"]), {
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
        "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
        "city": {"names": {"en": "London"}},
    })
    # A block the database knows no country of: the registries' answer stands.
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"city": {"names": {"en": "Nowhere"}}})
    writer.to_db_file(str(path))
    return path


def test_country_from_the_registries_data() -> None:
    geo = GeoIP(GeoConfig())
    assert geo.lookup(LONDON) == GeoInfo("GB")
    assert geo.lookup("8.8.8.8") == GeoInfo("US")
    assert geo.lookup("1.0.16.1") == GeoInfo("JP")
    assert geo.lookup("2a00:1450:4001::1") == GeoInfo("IE")
    # Private, documentation and malformed addresses have no place.
    for nowhere in ("10.1.2.3", "192.0.2.10", "::1", "", "not an ip", "999.1.1.1"):
        assert geo.lookup(nowhere) == GeoInfo(), nowhere
    assert GeoIP(GeoConfig(enabled=False)).lookup(LONDON) == GeoInfo()


def test_region_and_city_from_a_maxmind_database(tmp_path: Path) -> None:
    geo = GeoIP(GeoConfig(city_database(tmp_path / "city.mmdb")))
    assert geo.lookup(LONDON) == GeoInfo("GB", "England", "London")
    assert geo.lookup("8.8.8.8") == GeoInfo("US")  # no country in the database: the registries'
    assert geo.lookup("1.0.16.1") == GeoInfo("JP")  # not in the database at all
    geo.close()


def test_an_unreadable_database_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a maxmind database")
    with pytest.raises(GeoDatabaseError, match="cannot read"):
        GeoIP(GeoConfig(bad))
    projects = tmp_path / "projects.toml"
    projects.write_text(project_toml(new_project()))
    for path in (bad, tmp_path / "missing.mmdb"):
        done = subprocess.run(
            [sys.executable, "-m", "tracklane.cli", "collector"], capture_output=True, text=True,
            env={"TRACKLANE_GEOIP_DB": str(path), "TRACKLANE_PROJECTS_FILE": str(projects),
                 "TRACKLANE_DATA_DIR": str(tmp_path / "d"),
                 "TRACKLANE_KAFKA_BOOTSTRAP": "127.0.0.1:9", "PATH": "/usr/bin:/bin"},
            timeout=60)
        assert done.returncode == 2, done.stderr
        assert "TRACKLANE_GEOIP_DB" in done.stderr or "geoip_db" in done.stderr, done.stderr


@pytest.mark.anyio
async def test_events_are_stored_with_their_place(broker: TansuBroker, store: Client,
                                                  tmp_path: Path) -> None:
    """The raw IP is looked up, then anonymized: only the /24 and the place are kept."""
    settings = pipeline_settings(broker.bootstrap_servers,
                                 geoip_db=city_database(tmp_path / "city.mmdb"))
    project = new_project("geo")
    async with running_pipeline(settings, store, project) as p:
        at = now_utc().isoformat()
        batch = [
            # A server library reports its user's address in context.ip.
            {"type": "track", "event": "Order Completed", "userId": "u1", "timestamp": at,
             "context": {"ip": LONDON}},
            {"type": "page", "anonymousId": "a2", "timestamp": at, "context": {"ip": "1.0.16.1"}},
            # A visit in a session, with its page view.
            {"type": "page", "anonymousId": "a3", "timestamp": at,
             "context": {"ip": LONDON, "sessionId": "s-london"}},
        ]
        response = await p.http.post("/v1/batch", json={"batch": batch}, headers=p.auth)
        assert response.status_code == 200, response.text

        def stored() -> list[tuple[str, str, str, str]]:
            return [tuple(map(str, r)) for r in store.query(  # type: ignore[misc]
                "SELECT ip, country, region, city FROM events WHERE project_id = %(p)s "
                "ORDER BY country", parameters={"p": project.id}).result_rows]

        await poll(lambda: len(stored()) == 3, 20, "events not stored")
        assert stored() == [("81.2.69.0", "GB", "England", "London")] * 2 + [
            ("1.0.16.0", "JP", "", "")]
        read = {"Authorization": f"Bearer {project.read_keys[0]}"}
        span = {"from": (now_utc() - timedelta(days=1)).isoformat(),
                "to": (now_utc() + timedelta(days=1)).isoformat()}
        cities = await p.http.post("/v1/query/breakdown", headers=read,
                                   json={**span, "dimension": "city"})
        assert cities.status_code == 200, cities.text
        # Places count persons over every event, a backend's order (u1) too.
        assert [(r["value"], r["visitors"]) for r in cities.json()["rows"]] == [
            ("London", 2), ("", 1)]
        gb = await p.http.post("/v1/query/kpis", headers=read,
                               json={**span, "filters": {"country": "GB"}})
        assert (gb.json()["orders"], gb.json()["pageviews"], gb.json()["sessions"]) == (1, 1, 1)
