"""inspect-dashboard security: loopback by default, a token for everything else, nothing writable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest
from click.testing import CliRunner
from dashboard_support import RawPublisher, ThreadedDashboard, wait_until

from linewatch.runtime.dashboard.cli import main
from linewatch.runtime.dashboard.feed import VerdictFactory
from linewatch.runtime.dashboard.security import check_bind, cookie_name
from linewatch.runtime.messages import parse_message

TOKEN = "s3cret-token-for-tests-only"
ROUTES = ["/", "/static/app.js", "/api/state", "/metrics", "/healthz", "/image/1/heatmap", "/ws"]


@pytest.fixture
def publisher() -> Iterator[RawPublisher]:
    with RawPublisher() as pub:
        yield pub


async def _ws_first_message(url: str, **kwargs: object) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, **kwargs) as ws:
        return json.loads((await ws.receive(timeout=5)).data)


async def _ws_refused(url: str, **kwargs: object) -> int:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, **kwargs)
    return refused.value.status


def test_token_is_checked_on_every_request_and_the_websocket(publisher: RawPublisher) -> None:
    with ThreadedDashboard((publisher.endpoint,), token=TOKEN) as dash:
        publisher.wait_subscribed()
        publisher.send(VerdictFactory().parts(0, "cam", 0, defect=True, runtime="line"))
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        wait_until(lambda: dash.state(bearer), lambda s: s["totals"]["frames"] == 1)
        for route in ROUTES:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{cookie_name(dash.dashboard.port)}=x"}):
                status, reply_headers, _ = dash.get(route, headers)
                assert status == 401, (route, headers)
                assert reply_headers["WWW-Authenticate"].startswith("Bearer")
            assert dash.get(route + "?token=wrong")[0] == 401
        assert dash.get("/image/1/heatmap", bearer)[0] == 200
        status, headers, body = dash.get(f"/?token={TOKEN}")
        assert status == 200 and b"linewatch" in body
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"{cookie_name(dash.dashboard.port)}={TOKEN}") and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie and "Content-Security-Policy" in headers
        assert dash.get("/metrics", {"Cookie": cookie.split(";")[0]})[0] == 200

        ws_url = dash.url.replace("http", "ws") + "ws"
        assert asyncio.run(_ws_refused(ws_url)) == 401
        assert asyncio.run(_ws_refused(ws_url + "?token=wrong")) == 401
        first = asyncio.run(_ws_first_message(ws_url, headers=bearer))
        assert first["type"] == "snapshot" and first["totals"]["frames"] == 1  # current state at once
        assert asyncio.run(_ws_first_message(ws_url + f"?token={TOKEN}"))["totals"]["defects"] == 1
        origin = {**bearer, "Origin": "http://evil.example"}
        assert asyncio.run(_ws_refused(ws_url, headers=origin)) == 403


def test_no_endpoint_changes_anything(publisher: RawPublisher) -> None:
    with ThreadedDashboard((publisher.endpoint,)) as dash:
        for route in ROUTES:
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                assert dash.get(route, method=method)[0] == 405, (route, method)
        assert dash.get("/static/../server.py")[0] == 404
        assert dash.get("/static/")[0] in (403, 404)  # no directory listing


def test_loopback_without_token_answers_only_loopback_host_names(publisher: RawPublisher) -> None:
    with ThreadedDashboard((publisher.endpoint,)) as dash:
        assert dash.get("/healthz")[0] == 200
        assert dash.get("/healthz", {"Host": f"localhost:{dash.dashboard.port}"})[0] == 200
        assert dash.get("/healthz", {"Host": f"attacker.example:{dash.dashboard.port}"})[0] == 403  # DNS rebinding


def test_refuses_to_serve_beyond_loopback_without_a_token() -> None:
    result = CliRunner().invoke(main, ["--http", "0.0.0.0:0", "--connect", "tcp://127.0.0.1:1"])
    assert result.exit_code != 0
    assert "refusing to serve the dashboard on 0.0.0.0" in result.output and "--token" in result.output
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "line-host"):
        with pytest.raises(ValueError, match="--token"):
            check_bind(host, None)
        check_bind(host, TOKEN)
    with pytest.raises(ValueError, match="empty"):
        check_bind("0.0.0.0", "")


def test_headers_name_their_runtime_and_readers_take_schema_2() -> None:
    factory = VerdictFactory()
    parts = factory.parts(0, "cam", 0, defect=False, runtime="line-7")
    assert parse_message(parts)[1]["runtime"] == "line-7"
    assert parse_message(factory.parts(0, "cam", 0, defect=False))[1]["runtime"] is None
    header = json.loads(parts[1])
    for schema, ok in (("linewatch.verdict/2", True), ("linewatch.verdict/3", False)):
        raw = [parts[0], json.dumps({**header, "schema": schema}).encode(), parts[2]]
        if ok:
            assert parse_message(raw)[1]["schema"] == schema
        else:
            with pytest.raises(ValueError, match="schema"):
                parse_message(raw)


def test_bad_addresses_are_refused_with_a_clear_message() -> None:
    result = CliRunner().invoke(main, ["--connect", "not-an-endpoint", "--http", "127.0.0.1:0"])
    assert result.exit_code != 0 and "cannot connect to 'not-an-endpoint'" in result.output
    result = CliRunner().invoke(main, ["--http", "127.0.0.1:http"])
    assert result.exit_code != 0 and "is not HOST:PORT" in result.output
