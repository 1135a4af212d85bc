"""The dashboard server: ZeroMQ SUB sockets in, an aiohttp web app and WebSockets out, one event loop.

The receive loop never waits for a browser: each browser has its own sender task that, every
``refresh_s``, builds one update from the state (everything since what it last sent, so a slow
browser gets one coalesced update instead of a queue) and sends it. A browser that does not take an
update within ``send_timeout_s`` is disconnected. Images are not pushed: updates name the latest
verdict's id and the page fetches `/image/<id>/heatmap|frame` for the newest one it does not have
(latest wins, at most one fetch in flight per tile), so a stalled page holds at most one update
(plus the socket's write buffer, ``WRITER_LIMIT``) in server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from aiohttp import web

from linewatch.config import ConfigError
from linewatch.runtime.dashboard import views
from linewatch.runtime.dashboard.metrics import CONTENT_TYPE_LATEST, make_registry, render
from linewatch.runtime.dashboard.records import image_type
from linewatch.runtime.dashboard.security import (
    SECURITY_HEADERS,
    check_bind,
    cookie_name,
    host_allowed,
    presented_token,
    same_origin,
    token_matches,
)
from linewatch.runtime.dashboard.state import DashboardState
from linewatch.runtime.messages import STATUS_PREFIX, VERDICT_PREFIX
from linewatch.runtime.publisher import DEFAULT_ADDRESS

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
WRITER_LIMIT = 64 * 1024  # bytes a WebSocket writes before it waits for the browser to read
# Kernel send buffer per browser (fixed, so not auto-tuned to megabytes): a browser that stops reading
# blocks its sender after about this much, and is dropped after send_timeout_s.
WS_SNDBUF = 256 * 1024
RCVHWM = 1000  # messages ZeroMQ queues for the dashboard before dropping (seen as seq gaps)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
HEARTBEAT_S = 1.0  # an update goes out at least this often, so ages and fps move on an idle line
# The receive loop drains queued messages for at most this long before it lets the web server run.
YIELD_EVERY_S = 0.005


@dataclass(frozen=True)
class DashboardConfig:
    connect: tuple[str, ...] = (DEFAULT_ADDRESS,)
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    history: int = 500
    stale_after_s: float = 5.0
    refresh_s: float = 0.25
    send_timeout_s: float = 10.0


@dataclass(eq=False)
class Client:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    remote: str
    sent: int = 0
    connected: float = field(default_factory=time.time)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport and not self.transport.is_closing() else 0


class Dashboard:
    """``await start()`` returns the URL; ``await stop()`` closes sockets, browsers and the server."""

    def __init__(self, config: DashboardConfig) -> None:
        check_bind(config.host, config.token)
        if not config.connect:
            raise ConfigError("give at least one --connect address")
        self.config = config
        self.state = DashboardState(config.history, config.stale_after_s)
        self.clients: set[Client] = set()
        self.dropped_clients = 0
        self.internal_errors = 0
        self.started = time.monotonic()
        self.port = config.port
        self.registry = make_registry(self.state, self.server_stats)
        self.app = web.Application(middlewares=[self._guard])
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/ws", self._websocket)
        self.app.router.add_get("/api/state", self._api_state)
        self.app.router.add_get(r"/image/{id:\d+}/{kind:heatmap|frame}", self._image)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
        self.app.on_response_prepare.append(self._add_headers)
        self._runner: web.AppRunner | None = None
        self._context: zmq.asyncio.Context | None = None
        self._sockets: list[zmq.asyncio.Socket] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> str:
        self._context = zmq.asyncio.Context()
        for endpoint in self.config.connect:
            sock = self._context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, RCVHWM)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            self._sockets.append(sock)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                await self.stop()
                raise ConfigError(f"cannot connect to {endpoint!r}: {exc}") from exc
            for prefix in (VERDICT_PREFIX, STATUS_PREFIX):
                sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot serve on {self.config.host}:{self.config.port}: {exc}") from exc
        self.port = self._runner.addresses[0][1]
        self._tasks = [asyncio.create_task(self._receive(endpoint, sock))
                       for endpoint, sock in zip(self.config.connect, self._sockets, strict=True)]
        return self.url

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
        for sock in self._sockets:
            sock.close(linger=0)
        if self._context is not None:
            self._context.term()

    async def _receive(self, endpoint: str, sock: zmq.asyncio.Socket) -> None:
        """Await the first message, then take what is already queued without the asyncio machinery
        (a plain non-blocking recv on the same socket costs a fraction of an awaited one)."""
        direct = zmq.Socket.shadow(sock.underlying)
        last_yield = time.monotonic()
        while True:
            self._ingest(endpoint, await sock.recv_multipart())  # returns at once, without yielding, if queued
            while True:
                if time.monotonic() - last_yield >= YIELD_EVERY_S:
                    await asyncio.sleep(0)  # a backlog must not starve the web server and the browsers
                    last_yield = time.monotonic()
                try:
                    parts = direct.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._ingest(endpoint, parts)

    def _ingest(self, endpoint: str, parts: list[bytes]) -> None:
        try:
            self.state.ingest(endpoint, parts)
        except Exception:  # a bug must not stop the line's only window; it is counted and logged
            self.internal_errors += 1
            log.exception("message from %s could not be handled", endpoint)

    def server_stats(self) -> dict[str, Any]:
        return {"clients": len(self.clients), "dropped_clients": self.dropped_clients,
                "max_client_buffer_bytes": max((c.buffered() for c in self.clients), default=0),
                "image_bytes": self.state.image_bytes(), "received": self.state.received,
                "internal_errors": self.internal_errors, "uptime_s": round(time.monotonic() - self.started, 3),
                "connect": list(self.config.connect)}

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.config.token
        how = ""
        if token is None:
            if not host_allowed(request):
                raise web.HTTPForbidden(text="this dashboard answers only requests to a loopback host name\n")
        else:
            given, how = presented_token(request, self.port)
            if not token_matches(given, token):
                raise web.HTTPUnauthorized(
                    text="missing or wrong token: open the page as /?token=TOKEN, or send "
                         "'Authorization: Bearer TOKEN'\n", headers={"WWW-Authenticate": 'Bearer realm="linewatch"'})
        if request.path == "/ws" and not same_origin(request):
            raise web.HTTPForbidden(text="WebSocket handshake from another origin refused\n")
        response = await handler(request)
        if how == "query" and request.path == "/" and token is not None:
            response.set_cookie(cookie_name(self.port), token, httponly=True, samesite="Strict", path="/")
        return response

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        static = request.path.startswith("/static/") or request.path == "/"
        response.headers.setdefault("Cache-Control", "no-cache" if static else "no-store")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _api_state(self, request: web.Request) -> web.Response:
        return web.json_response({**views.update(self.state, None), "server": self.server_stats()})

    async def _image(self, request: web.Request) -> web.Response:
        data = self.state.image(int(request.match_info["id"]), request.match_info["kind"])
        media = image_type(data)
        if data is None or media is None:
            raise web.HTTPNotFound(text="no such image (it may have left the bounded history)\n")
        return web.Response(body=data, content_type=media)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=render(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        """Cheap liveness and progress: what it received, from how many runtimes, for how many browsers."""
        now = time.monotonic()
        runtimes = self.state.runtimes.values()
        return web.json_response({
            "status": "ok", "uptime_s": round(now - self.started, 3), "received": self.state.received,
            "verdicts": sum(s.frames for r in runtimes for s in r.sources.values()),
            "lost": sum(r.lost for r in runtimes), "rejected": sum(self.state.rejected.values()),
            "connect": list(self.config.connect), "runtimes": len(runtimes),
            "runtimes_online": sum(r.online(now, self.state.stale_after_s) for r in runtimes),
            "clients": len(self.clients)})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, compress=False, max_msg_size=4096, writer_limit=WRITER_LIMIT)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SNDBUF)
        await ws.prepare(request)
        client = Client(ws, request.transport, request.remote or "?")
        self.clients.add(client)
        sender = asyncio.create_task(self._send_updates(client))
        try:
            async for _ in ws:  # the page sends nothing the server acts on: no endpoint changes anything
                pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.clients.discard(client)
        return ws

    async def _send_updates(self, client: Client) -> None:
        """Snapshot first (a reconnecting browser has the current state at once), then coalesced updates."""
        cursor: int | None = None
        last_sent = 0.0
        try:
            while not client.ws.closed:
                now = time.monotonic()
                if cursor is None or self.state.version != cursor or now - last_sent >= HEARTBEAT_S:
                    version = self.state.version
                    payload = json.dumps(views.update(self.state, cursor, now), separators=(",", ":"))
                    await asyncio.wait_for(client.ws.send_str(payload), self.config.send_timeout_s)
                    cursor, last_sent = version, now
                    client.sent += 1
                await asyncio.sleep(self.config.refresh_s)
        except asyncio.TimeoutError:
            self.dropped_clients += 1
            log.warning("browser %s took no update for %.1f s; disconnected", client.remote,
                        self.config.send_timeout_s)
            if client.transport is not None:
                client.transport.abort()
        except ConnectionError:
            pass  # the browser went away; its handler cleans up
