"""The dashboard in a real headless Chromium, fed by a real `inspect-run` streaming the synthetic test folder."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import RawPublisher, find_chromium, wait_until
from test_runtime import _bundle, category  # noqa: F401  (the runtime tests' synthetic category and bundle)

from linewatch.runtime.dashboard.feed import VerdictFactory
from linewatch.runtime.journal import read_journal

TOKEN = "browser-test-token-0123456789"
HOSTILE_SOURCE = "<img src=x onerror=alert(1)>"
HOSTILE_RUNTIME = '<b>line</b>"><svg onload=alert(2)>'
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
CHROMIUM, NO_CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)  # before any fixture trains a model


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"from {module} import main; main()", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard_bundle(category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return _bundle(category, tmp_path_factory.mktemp("dash") / "patchcore", "patchcore")


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def foreign() -> Iterator[RawPublisher]:
    with RawPublisher() as pub:
        yield pub


def _start_dashboard(*connect: str) -> tuple[subprocess.Popen, str]:
    args = [arg for endpoint in connect for arg in ("--connect", endpoint)]
    process = subprocess.Popen(_python("linewatch.runtime.dashboard.cli", *args, "--http", "127.0.0.1:0", "--token",
                                       TOKEN, "--stale-after", "2", "--refresh-ms", "100"),
                               stderr=subprocess.PIPE, text=True, env=ENV)
    line = process.stderr.readline()
    match = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)", line)
    assert match, line + process.stderr.read() if process.poll() is not None else line
    return process, match.group(1)


def _stat(page: object, source_id: str, key: str) -> int:
    return int(page.locator(f'[data-source-id="{source_id}"] [data-stat="{key}"]').inner_text().replace(",", ""))


def test_dashboard_shows_a_real_run(browser: object, foreign: RawPublisher, dashboard_bundle: Path,
                                    category: Path, tmp_path: Path) -> None:  # noqa: F811
    port = _free_port()
    dashboard, url = _start_dashboard(f"tcp://127.0.0.1:{port}", foreign.endpoint)
    summary_file, journal = tmp_path / "summary.json", tmp_path / "journal.jsonl"
    run = None
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        assert page.goto(f"{url}?token={TOKEN}").status == 200
        page.wait_for_selector('#conn[data-state="live"]', timeout=10_000)
        assert "token" not in page.url  # the address bar no longer shows it

        foreign.wait_subscribed()
        factory = VerdictFactory()
        for seq in range(2):  # another publisher whose source name is markup
            foreign.send(factory.parts(seq, HOSTILE_SOURCE, seq, defect=seq == 0, runtime="foreign"))
        run = subprocess.Popen(_python("linewatch.runtime.cli", "--bundle", str(dashboard_bundle), "--source",
                                       f"cam={category / 'test'}", "--publish", f"tcp://127.0.0.1:{port}",
                                       "--send-frames", "--wait-subscribers", "1", "--name", HOSTILE_RUNTIME,
                                       "--summary", str(summary_file), "--journal", str(journal), "--device", "cpu"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr.decode()
        summary, headers = json.loads(summary_file.read_text()), read_journal(journal)
        frames, defects = summary["frames"], sum(h["verdict"] == "defect" for h in headers)
        assert frames == len(headers) == len(list((category / "test").rglob("*.png"))) and defects > 0
        assert {h["runtime"] for h in headers} == {HOSTILE_RUNTIME}  # the runtime names its verdicts

        # The page's counts are the runtime's summary (plus the foreign publisher's two verdicts).
        kpi = lambda key: page.locator(f'[data-kpi="{key}"]').inner_text()  # noqa: E731
        wait_until(lambda: (kpi("frames"), kpi("defects")), lambda v: v == (str(frames + 2), str(defects + 1)))
        tile = page.locator(".tile", has=page.get_by_text("cam", exact=True))
        source_id = tile.get_attribute("data-source-id")
        assert (_stat(page, source_id, "frames"), _stat(page, source_id, "defects")) == (frames, defects)
        assert tile.locator(".tile-runtime").inner_text() == HOSTILE_RUNTIME
        logged = page.locator(f'#defects li[data-source-id="{source_id}"]')
        assert logged.count() == defects
        assert logged.first.locator(".d-where").inner_text() == f"{HOSTILE_RUNTIME} / cam"

        # Hostile names are text: shown literally, no element made from them, nothing run.
        assert page.get_by_text(HOSTILE_SOURCE, exact=True).count() >= 1
        assert page.locator(".tile-runtime", has_text=HOSTILE_RUNTIME).count() == 1
        assert page.locator("img, svg, b").count() == 0 and dialogs == []

        # The heatmap overlay toggle redraws the tile (frame alone vs frame + heatmap).
        canvas = tile.locator("canvas")
        wait_until(lambda: canvas.get_attribute("data-verdict-id"), lambda v: v is not None)
        digest = "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; " \
                 "let h = 0; for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) | 0; return h; }"
        with_heat = canvas.evaluate(digest)
        tile.locator("input[type=checkbox]").uncheck()
        assert canvas.evaluate(digest) != with_heat

        # A defect in the log opens with its heatmap over its frame, its regions, score and model.
        verdict_id = logged.first.get_attribute("data-verdict-id")
        logged.first.click()
        detail = page.locator(f'#detail-canvas[data-rendered="heatmap+frame"][data-verdict-id="{verdict_id}"]')
        detail.wait_for(timeout=10_000)
        with_heat = detail.evaluate(digest)
        page.locator("#detail-overlay").uncheck()
        assert detail.evaluate(digest) != with_heat  # the heatmap was drawn
        heatmap = page.request.get(f"{url}image/{verdict_id}/heatmap")
        assert heatmap.status == 200 and heatmap.headers["content-type"] == "image/png"
        fields = page.locator("#detail-fields").inner_text()
        assert "defect" in fields and summary["model"] in fields and "peak" in fields
        page.locator("#detail-close").click()

        # The runtime has exited: its status goes stale and it shows offline.
        page.wait_for_selector(".runtime.offline", timeout=10_000)
        # A browser that reconnects has the current state at once.
        page.reload()
        wait_until(lambda: kpi("frames"), lambda v: v == str(frames + 2), timeout_s=5)

        # A wrong token is refused, for the page and for the WebSocket.
        stranger = browser.new_page()
        assert stranger.goto(f"{url}?token=wrong").status == 401
        ws_url = url.replace("http", "ws") + "ws?token=wrong"
        outcome = stranger.evaluate("u => new Promise(r => { const ws = new WebSocket(u); "
                                    "ws.onopen = () => r('open'); ws.onerror = () => r('refused'); })", ws_url)
        assert outcome == "refused"
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        dashboard.terminate()
        dashboard.wait(timeout=10)
    assert dashboard.returncode == 0  # SIGTERM ends it cleanly
