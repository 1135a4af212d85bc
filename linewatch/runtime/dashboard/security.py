"""Who may see the line: loopback-only by default, a token for anything else, read-only always.

The token is accepted as ``Authorization: Bearer TOKEN`` (scripts, Prometheus), as ``?token=TOKEN``
(the link an operator opens) or as the cookie set when that link is opened (so the page's own
requests, its images and its WebSocket carry it without putting it in every URL). Without a token
the server only answers requests addressed to a loopback host name, so a web page elsewhere cannot
reach it through DNS rebinding; WebSocket handshakes from another origin are refused either way.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

from linewatch.config import ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "LINEWATCH_DASHBOARD_TOKEN"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
MIN_TOKEN_CHARS = 16
SECURITY_HEADERS = {
    # The page needs nothing but itself: no inline script, no other origin, no framing.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token; warn about a short one."""
    if token is not None and not token:
        raise ConfigError("--token must not be empty")
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"refusing to serve the dashboard on {host}: any machine that reaches that address could watch the "
            f"line. Pass --token TOKEN (or set {TOKEN_ENV}) and open http://HOST:PORT/?token=TOKEN, or bind "
            "127.0.0.1 (the default) and reach it through an SSH tunnel"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        log.warning("the dashboard token has fewer than %d characters; use a long random one "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')", MIN_TOKEN_CHARS)


def cookie_name(port: int) -> str:
    """Cookies are per host, not per port: two dashboards on one host must not share one."""
    return f"linewatch_token_{port}"


def presented_token(request: web.Request, port: int) -> tuple[str | None, str]:
    """The token a request carries and how: "header", "query", "cookie" or "" (none)."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), "header"
    if "token" in request.query:
        return request.query["token"], "query"
    cookie = request.cookies.get(cookie_name(port))
    if cookie is not None:
        return cookie, "cookie"
    return None, ""


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def host_allowed(request: web.Request) -> bool:
    """Without a token, only requests addressed to a loopback name (DNS rebinding guard)."""
    return is_loopback(urlsplit(f"//{request.host}").hostname or "")


def same_origin(request: web.Request) -> bool:
    """A WebSocket handshake from a page of another origin is refused (browsers send Origin)."""
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser: scripts and tools
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()
