"""X-Forwarded-For is believed only from configured proxies, loopback included."""

from __future__ import annotations

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from starlette.requests import Request

from tests.pipeline import now_utc, pipeline_settings, poll, running_pipeline
from tracklane.broker import TansuBroker, free_port
from tracklane.collector.client_address import (
    TrustedProxiesError,
    client_ip,
    client_scheme,
    parse_trusted_proxies,
)
from tracklane.runner import HttpServer
from tracklane.settings import Settings


def request(peer: str, **headers: str) -> Request:
    return Request({
        "type": "http", "method": "GET", "path": "/", "query_string": b"", "scheme": "http",
        "server": ("collector", 80), "client": (peer, 5555),
        "headers": [(k.lower().replace("_", "-").encode(), v.encode())
                    for k, v in headers.items()],
    })


PROXIES = parse_trusted_proxies(["10.0.0.0/8", "2001:db8:ffff::1"])


def test_forwarded_headers_count_only_from_a_trusted_proxy() -> None:
    forged = request("203.0.113.9", X_Forwarded_For="192.0.2.1", X_Forwarded_Proto="https")
    assert client_ip(forged, PROXIES) == "203.0.113.9"
    assert client_scheme(forged, PROXIES) == "http"
    # Nothing is trusted by default, loopback included.
    local = request("127.0.0.1", X_Forwarded_For="192.0.2.1")
    assert client_ip(local, ()) == "127.0.0.1"

    proxied = request("10.1.2.3", X_Forwarded_For="192.0.2.1", X_Forwarded_Proto="https")
    assert client_ip(proxied, PROXIES) == "192.0.2.1"
    assert client_scheme(proxied, PROXIES) == "https"
    # A client that writes its own X-Forwarded-For: the proxy appends the real address,
    # and that is the one taken.
    spoofed = request("10.1.2.3", X_Forwarded_For="198.51.100.66, 192.0.2.1")
    assert client_ip(spoofed, PROXIES) == "192.0.2.1"
    # Two trusted hops (a load balancer, then the proxy), v6 and v4-mapped.
    chained = request("::ffff:10.0.0.5", X_Forwarded_For="192.0.2.7, 2001:db8:ffff::1")
    assert client_ip(chained, PROXIES) == "192.0.2.7"
    # A trusted proxy that forwarded nothing: its own address.
    assert client_ip(request("10.1.2.3"), PROXIES) == "10.1.2.3"


def test_a_bad_proxy_entry_is_a_configuration_error() -> None:
    with pytest.raises(TrustedProxiesError, match=r"'10\.0\.0\.0/33'"):
        parse_trusted_proxies(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(trusted_proxies="proxy.internal")
    assert parse_trusted_proxies([" 127.0.0.1 ", " ", "10.0.0.0/8"]) == (
        *parse_trusted_proxies(["127.0.0.1/32"]), *parse_trusted_proxies(["10.0.0.0/8"]))


@pytest.mark.anyio
async def test_x_forwarded_for_from_loopback_is_ignored_by_default(
        broker: TansuBroker, store: Client) -> None:
    """Through the real HTTP server: uvicorn must not rewrite the peer on its own."""
    async with running_pipeline(pipeline_settings(broker.bootstrap_servers), store) as p:
        port = free_port()
        server = HttpServer(p.app, "127.0.0.1", port)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await http.post("/v1/track", json={
                    "event": "forged", "anonymousId": "a-1", "writeKey": p.write_key,
                    "timestamp": now_utc().isoformat()},
                    headers={"X-Forwarded-For": "192.0.2.1"})
                assert response.status_code == 200, response.text
        finally:
            await server.stop()

        def stored() -> list[tuple[str, ...]]:
            return [tuple(str(v) for v in row) for row in store.query(
                "SELECT event, ip FROM events WHERE project_id = %(p)s",
                parameters={"p": p.project.id}).result_rows]

        await poll(lambda: len(stored()) == 1, 30, "event stored")
        assert stored() == [("forged", "127.0.0.0")]
