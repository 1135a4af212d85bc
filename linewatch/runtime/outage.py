"""Outage bookkeeping and reopen delays for sources that fail and come back.

A factory line runs for weeks, so the status topic and the exit summary say for every source how often
it was down, for how long in all, and since when the current outage runs, not only that it failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


class Backoff:
    """Delays that double from ``first`` up to ``cap`` while attempts fail; ``reset`` after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


@dataclass
class Outages:
    """Periods in which a source could not deliver frames."""

    count: int = 0
    past_s: float = 0.0  # length of the outages that have ended
    since: float | None = None  # time.time() when the current outage began
    reason: str | None = None

    def down(self, reason: str) -> bool:
        """Record a failure; True when it starts a new outage (the source was up until now)."""
        self.reason = reason
        if self.since is not None:
            return False
        self.since = time.time()
        self.count += 1
        return True

    def up(self) -> float | None:
        """The source delivers again: the length of the outage that ends, or None if there was none."""
        if self.since is None:
            return None
        length = time.time() - self.since
        self.past_s += length
        self.since, self.reason = None, None
        return length

    def stats(self) -> dict[str, Any]:
        current = 0.0 if self.since is None else time.time() - self.since
        return {"outages": self.count, "down_s": round(self.past_s + current, 3), "down_since": self.since,
                "down_reason": self.reason}
