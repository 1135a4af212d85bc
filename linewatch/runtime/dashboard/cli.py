"""`inspect-dashboard`: a live web page of one or more runtimes, fed by their ZeroMQ verdict streams."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from linewatch.cli_common import friendly_errors
from linewatch.runtime.dashboard.security import TOKEN_ENV
from linewatch.runtime.dashboard.server import Dashboard, DashboardConfig
from linewatch.runtime.publisher import DEFAULT_ADDRESS


def parse_http(address: str) -> tuple[str, int]:
    """"HOST:PORT", "[IPv6]:PORT" or a bare "PORT" (on 127.0.0.1); port 0 picks a free one."""
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", address
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="--http")
    return host, int(port)


async def serve(config: DashboardConfig) -> None:
    """Run until SIGINT / SIGTERM."""
    dashboard = Dashboard(config)
    url = await dashboard.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    open_url = f"{url}?token=<TOKEN>" if config.token else url
    click.echo(f"dashboard on {url} showing {', '.join(config.connect)}; open {open_url}", err=True)
    try:
        await stop.wait()
    finally:
        await dashboard.stop()


@click.command(context_settings={"show_default": True})
@click.option("--connect", multiple=True, default=(DEFAULT_ADDRESS,),
              help="Runtime publisher (or inspect-proxy) address to subscribe to. Repeatable.")
@click.option("--http", "http_address", default="127.0.0.1:8080",
              help="HOST:PORT to serve the page on; any host but loopback requires --token.")
@click.option("--token", envvar=TOKEN_ENV, show_envvar=True,
              help="Secret every request must present (?token= on the page URL, or 'Authorization: Bearer').")
@click.option("--history", type=click.IntRange(1, 100_000), default=500,
              help="Verdicts kept per source for the timeline and latency figures, and defects in the log.")
@click.option("--stale-after", type=click.FloatRange(0.1), default=5.0,
              help="Seconds without a message (status or verdict) after which a runtime shows as offline.")
@click.option("--refresh-ms", type=click.IntRange(50, 10_000), default=250,
              help="Interval of updates to each browser (images follow them, latest wins).")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(connect: tuple[str, ...], http_address: str, token: str | None, history: int, stale_after: float,
         refresh_ms: int, verbose: bool) -> None:
    """Serve a live dashboard of the runtimes at CONNECT addresses; read-only, Ctrl-C stops it."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = parse_http(http_address)
    config = DashboardConfig(connect=connect, host=host, port=port, token=token, history=history,
                             stale_after_s=stale_after, refresh_s=refresh_ms / 1000.0)
    asyncio.run(serve(config))
