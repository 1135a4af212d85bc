"""`inspect-proxy`: many runtimes publish into one address, subscribers connect once (libzmq's own proxy).

Runtimes connect their publisher to the frontend (an XSUB socket: `inspect-run --publish-connect`),
subscribers connect to the backend (XPUB) and filter by topic as usual; subscriptions travel upstream
through the proxy, so a runtime still only sends what someone wants. The forwarding loop is libzmq's
`zmq_proxy_steerable` (no Python per message); `--capture` binds a PUB socket that gets a copy of every
message passing through (verdicts, status, and the subscription frames, which start with 0x00/0x01).
SIGINT / SIGTERM stop it through the proxy's control socket; the message counts are printed on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from types import FrameType
from typing import Any

import click
import zmq

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_FRONTEND = "tcp://*:5557"
DEFAULT_BACKEND = "tcp://*:5558"
HWM = 10_000  # per peer: the proxy only buffers bursts; slow subscribers are each runtime's concern too
STAT_NAMES = ("frontend_msgs_in", "frontend_bytes_in", "frontend_msgs_out", "frontend_bytes_out",
              "backend_msgs_in", "backend_bytes_in", "backend_msgs_out", "backend_bytes_out")


class Proxy:
    """XSUB frontend -> XPUB backend (+ optional PUB capture) in a background thread, stoppable cleanly."""

    def __init__(self, frontend: str = DEFAULT_FRONTEND, backend: str = DEFAULT_BACKEND, capture: str | None = None,
                 context: zmq.Context | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self._control = f"inproc://linewatch-proxy-{uuid.uuid4().hex}"
        self._sockets: dict[str, zmq.Socket] = {}
        self.endpoints: dict[str, str] = {}
        kinds = {"frontend": (zmq.XSUB, frontend), "backend": (zmq.XPUB, backend)}
        if capture:
            kinds["capture"] = (zmq.PUB, capture)
        try:
            for role, (kind, address) in kinds.items():
                socket = self.context.socket(kind)
                socket.setsockopt(zmq.LINGER, 500)
                socket.setsockopt(zmq.SNDHWM, HWM)
                socket.setsockopt(zmq.RCVHWM, HWM)
                self._sockets[role] = socket
                try:
                    socket.bind(address)
                except zmq.ZMQError as exc:
                    raise ConfigError(f"cannot bind the proxy {role} to {address!r}: {exc}") from exc
                self.endpoints[role] = socket.getsockopt_string(zmq.LAST_ENDPOINT)
            control = self.context.socket(zmq.PAIR)
            control.bind(self._control)
            self._sockets["control"] = control
        except BaseException:
            self._close()
            raise
        self.stats: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="inspect-proxy", daemon=True)

    def _run(self) -> None:
        s = self._sockets
        try:
            zmq.proxy_steerable(s["frontend"], s["backend"], s.get("capture"), s["control"])
        except zmq.ContextTerminated:
            pass
        finally:
            self._close()

    def _close(self) -> None:
        for socket in self._sockets.values():
            if not socket.closed:
                socket.close()

    def start(self) -> Proxy:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> dict[str, int]:
        """Ask the proxy for its counters, terminate it, join the thread; returns the counters.

        The steering socket stays open until the thread has ended: a STATISTICS reply that comes late (a loaded
        machine) would otherwise block the proxy on a peerless PAIR socket before it reads TERMINATE, and a
        caller destroying the context under a live proxy thread makes libzmq abort the process."""
        steer = self.context.socket(zmq.PAIR)
        steer.setsockopt(zmq.LINGER, 0)
        steer.connect(self._control)
        try:
            steer.send(b"STATISTICS")
            if steer.poll(int(timeout_s * 1000)):
                parts = steer.recv_multipart()
                self.stats = {name: int.from_bytes(p, "little") for name, p in zip(STAT_NAMES, parts, strict=False)}
            else:
                log.warning("proxy statistics unavailable: no reply within %.0f s", timeout_s)
            steer.send(b"TERMINATE")
            deadline = time.monotonic() + timeout_s
            while self._thread.is_alive() and time.monotonic() < deadline:
                while steer.poll(0):
                    steer.recv_multipart()  # a late reply, read so the proxy can go on to TERMINATE
                self._thread.join(0.05)
        finally:
            steer.close()
        if self._thread.is_alive():
            log.error("the proxy thread did not stop within %.0f s", timeout_s)
        return self.stats


@click.command(context_settings={"show_default": True})
@click.option("--frontend", default=DEFAULT_FRONTEND, help="Address runtimes publish into (XSUB, bound).")
@click.option("--backend", default=DEFAULT_BACKEND, help="Address subscribers connect to (XPUB, bound).")
@click.option("--capture", help="Also bind a PUB socket here that gets a copy of every message.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(frontend: str, backend: str, capture: str | None, verbose: bool) -> None:
    """Fan verdicts of many runtimes in to one address; subscribers connect once and filter by topic."""
    setup_logging(verbose)
    proxy = Proxy(frontend, backend, capture).start()
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        done.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    click.echo("inspect-proxy: " + ", ".join(f"{role} {address}" for role, address in proxy.endpoints.items()),
               err=True)
    while not done.wait(0.5):
        pass
    stats = proxy.stop()
    click.echo("inspect-proxy stopped: " + (", ".join(f"{k} {v}" for k, v in stats.items()) or "no statistics"),
               err=True)
