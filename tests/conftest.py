"""Shared fixtures: one real Tansu broker and one chDB store per test session.

A process may open one chDB path only, so this process's store is a session fixture;
tests that need another store run it in a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tracklane.broker import TansuBroker
from tracklane.store.client import create_client
from tracklane.store.migrate import RetentionConfig, migrate


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that wait on ClickHouse mutations (erasure, retention) run first.

    chDB runs merges and mutations on a two-thread background pool, a mutation's part
    tasks queued behind every pending merge. Once the suite has inserted into hundreds of
    daily partitions, one ``ALTER TABLE ... DELETE`` waits a minute behind those merges;
    on a fresh store it takes well under a second. What the tests assert is unchanged.
    """
    items.sort(key=lambda item: item.get_closest_marker("waits_on_mutations") is None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    tansu = TansuBroker(tmp_path_factory.mktemp("tansu") / "tansu.log")
    tansu.start()
    yield tansu
    tansu.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of the test's own, for tests that stop, freeze or restart it."""
    tansu = TansuBroker(tmp_path / "tansu.log")
    tansu.start()
    yield tansu
    tansu.stop()


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def store(store_path: Path) -> Iterator[Client]:
    client = create_client(f"chdb://{store_path.resolve()}")
    migrate(client, RetentionConfig(events_days=395, dedup_window_hours=48))
    yield client
    client.close()
