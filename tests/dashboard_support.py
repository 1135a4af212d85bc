"""Helpers for the dashboard tests: a real dashboard server in a thread, a raw ZeroMQ publisher, polling."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import zmq

from linewatch.runtime.dashboard.server import Dashboard, DashboardConfig


class ThreadedDashboard:
    """`Dashboard` on its own event loop in a thread; ``url`` once entered."""

    def __init__(self, connect: tuple[str, ...], **options: Any) -> None:
        self.dashboard = Dashboard(DashboardConfig(connect=connect, port=0, **options))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> ThreadedDashboard:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self.dashboard.start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.dashboard.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        """(status, headers, body) of a real HTTP request; error statuses are returned, not raised."""
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def state(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        status, _, body = self.get("/api/state", headers)
        assert status == 200, body
        return json.loads(body)


class RawPublisher:
    """An XPUB socket (with a context of its own) that sends any parts once the dashboard has subscribed."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 100_000)
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def wait_subscribed(self, timeout_s: float = 5.0) -> None:
        wanted = {b"\x01verdict.", b"\x01status."}
        deadline = time.monotonic() + timeout_s
        while wanted and time.monotonic() < deadline:
            if self.socket.poll(100):
                wanted.discard(self.socket.recv())
        assert not wanted, f"dashboard did not subscribe to {wanted}"

    def send(self, parts: list[bytes]) -> None:
        self.socket.send_multipart(parts)

    def __enter__(self) -> RawPublisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.socket.close(linger=0)
        self.context.term()


def wait_until(probe: Callable[[], Any], check: Callable[[Any], bool], timeout_s: float = 10.0) -> Any:
    """Poll ``probe`` until ``check`` accepts its value; fail with the last value after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {value!r}"[:2000])
        time.sleep(0.05)


BROWSER_INSTALL = "apt-get install -y chromium"


def find_chromium() -> tuple[str | None, str]:
    """(path of a system Chromium for Playwright, or None, and why not): browser tests skip without one."""
    import importlib.util
    import os
    import shutil

    if importlib.util.find_spec("playwright") is None:
        return None, "Playwright is missing: pip install -e '.[test]'"
    candidates = [os.environ.get("LINEWATCH_CHROMIUM"),
                  *map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    return found, (f"no Chromium for the browser tests: install it with `{BROWSER_INSTALL}` (as root; `make test` "
                   "does this where it can) or point LINEWATCH_CHROMIUM at a Chromium binary")
