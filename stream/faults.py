"""Deliberate crash points, so tests can SIGKILL the sink at an exact step."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

POINTS = ("after_intent", "after_insert")


class FaultSpecError(ValueError):
    """A fault spec is not ``<point>:<n>``."""


@dataclass
class FaultPoint:
    """Kill this process with SIGKILL the ``n``-th time ``point`` is reached."""

    point: str = ""
    n: int = 0
    _seen: int = field(default=0, init=False)

    @classmethod
    def parse(cls, spec: str) -> FaultPoint:
        if not spec:
            return cls()
        point, _, count = spec.partition(":")
        if point not in POINTS or not count.isdigit() or int(count) < 1:
            raise FaultSpecError(f"stream fault must be <{'|'.join(POINTS)}>:<n>, got {spec!r}")
        return cls(point, int(count))

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self._seen += 1
        if self._seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)
