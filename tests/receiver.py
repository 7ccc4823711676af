"""A real HTTP receiver on loopback that records what notifiers send it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records every request; answers with the next queued status, else 200, or with what
    ``answer`` says (a status and a JSON body) when given: a vendor's verdict."""

    def __init__(self, answer: Callable[[Received], tuple[int, Any]] | None = None) -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self.statuses: list[int] = []
        self.delay_s = 0.0  # a slow receiver answers this late
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                got = Received("POST", self.path,
                               {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.requests.append(got)
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                out = b""
                if receiver.answer is not None:
                    status, answer = receiver.answer(got)
                    out = json.dumps(answer).encode()
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                self.send_response(status)
                self.send_header("content-length", str(len(out)))
                if out:
                    self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def payloads(self) -> list[Any]:
        return [r.json() for r in self.received()]

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
