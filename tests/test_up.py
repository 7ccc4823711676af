"""README's first command: `tracklane up`, then curl and the pixel, exact counts within 5 s."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from tests.up_process import tracklane_up, wait_for
from tracklane.broker import free_port
from tracklane.projects import load_projects

EVENTS = 1000
PIXELS = 100


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", *args], check=True, capture_output=True,
                          text=True).stdout


def stats(base: str, read_key: str, event: str) -> int:
    now = datetime.now(UTC)
    response = httpx.get(f"{base}/v1/stats/minutes", params={
        "event": event, "from": (now - timedelta(minutes=10)).isoformat(),
        "to": (now + timedelta(minutes=2)).isoformat()},
        headers={"Authorization": f"Bearer {read_key}"})
    assert response.status_code == 200, response.text
    return sum(row["count"] for row in response.json()["rows"])


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_up_then_curl_and_pixel_show_exact_counts(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    batch = tmp_path / "batch.json"
    batch.write_bytes(orjson.dumps({"batch": [
        {"type": "track", "event": "checkout", "messageId": f"c-{i}",
         "anonymousId": f"visitor-{i % 250}", "properties": {"revenue": 2.5}}
        for i in range(EVENTS)]}))
    with tracklane_up(tmp_path, port) as process:
        banner = (tmp_path / "up.out").read_text()
        project = load_projects(tmp_path / "data" / "projects.toml").projects[0]
        write_key, read_key = project.write_keys[0], project.read_keys[0]
        assert write_key in banner and read_key in banner and f"{base}/v1/batch" in banner

        def send_everything() -> None:
            answer = orjson.loads(curl("-u", f"{write_key}:", "-H",
                                       "Content-Type: application/json",
                                       "--data-binary", f"@{batch}", f"{base}/v1/batch"))
            assert answer == {"success": True, "accepted": EVENTS}
            pixel_args = [arg for i in range(PIXELS) for arg in (
                "-o", "/dev/null",
                f"{base}/p.gif?k={write_key}&mid=px-{i}&aid=v{i}&url=https://a.example/")]
            codes = curl("-w", "%{http_code} %{size_download}\\n", *pixel_args).split("\n")
            assert codes[:PIXELS] == ["200 43"] * PIXELS

        send_everything()
        sent = time.monotonic()
        wait_for(lambda: stats(base, read_key, "checkout") == EVENTS
                 and stats(base, read_key, "page_view") == PIXELS, 5.0,
                 "counts were not exact within 5 seconds")
        print(f"\nexact counts {time.monotonic() - sent:.2f}s after the last send")

        # The same batch and hits again: the sink drops every one as a duplicate.
        send_everything()
        wait_for(lambda: metric(base, "tracklane_stream_duplicates_total") == EVENTS + PIXELS,
                 10.0, "resends were not processed")
        assert stats(base, read_key, "checkout") == EVENTS
        assert stats(base, read_key, "page_view") == PIXELS

        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert "Tracklane stopped." in (tmp_path / "up.err").read_text()

    # Data and keys survive a restart.
    with tracklane_up(tmp_path, port):
        assert load_projects(tmp_path / "data" / "projects.toml").projects[0] == project
        assert stats(base, read_key, "checkout") == EVENTS
        assert stats(base, read_key, "page_view") == PIXELS


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: pid -> command name."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        state, ppid = rest.split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = name
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_sigkilled_up_takes_its_broker_along_and_starts_again(tmp_path: Path) -> None:
    port = free_port()
    with tracklane_up(tmp_path, port) as process:
        brokers = [pid for pid, name in _children(process.pid).items()
                   if name.startswith("tansu")]
        assert len(brokers) == 1, _children(process.pid)
        process.kill()
        process.wait(10)
        wait_for(lambda: not _alive(brokers[0]), 10, "the broker outlived up")
    # Nothing the killed process left behind stops the next start on the same data dir.
    with tracklane_up(tmp_path, port):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
