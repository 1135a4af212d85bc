"""Screenshot of `inspect-dashboard` during a real `inspect-run` (the README's picture).

Starts the dashboard and a runtime streaming the images of --data with frames from two "stations",
in a seeded random order (as parts come down a line: good and defective mixed; the stations read
folders of links to the real files), opens the page in headless Chromium and takes the screenshot once
--at of the frames are in, while the run is still going. The PNG is reduced to a 256-colour palette so
it stays small enough for the repository.

  .venv/bin/python tools/dashboard_screenshot.py --bundle runs/b --data ../shared/data/mvtec_ad/bottle/test
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from PIL import Image

BIN = Path(sys.executable).parent


def _dashboard(endpoint: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([str(BIN / "inspect-dashboard"), "--connect", endpoint, "--http", "127.0.0.1:0",
                                "--refresh-ms", "200"], stderr=subprocess.PIPE, text=True)
    match = re.search(r"dashboard on (http://\S+/)", process.stderr.readline())
    if not match:
        raise click.ClickException(f"dashboard did not start: {process.stderr.read()}")
    return process, match.group(1)


@click.command()
@click.option("--bundle", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A test folder with one sub-folder per kind (MVTec layout).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/dashboard.png"), show_default=True)
@click.option("--port", type=int, default=5571, show_default=True, help="Loopback port of the verdict stream.")
@click.option("--at", "fraction", type=click.FloatRange(0.1, 1.0), default=0.6, show_default=True,
              help="Fraction of the frames published when the screenshot is taken.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the order the images come in.")
@click.option("--chromium", default=shutil.which("chromium") or "chromium", show_default=True)
def main(bundle: Path, data: Path, out: Path, port: int, fraction: float, seed: int, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    endpoint = f"tcp://127.0.0.1:{port}"
    images = sorted(data.glob("*/*.png"))
    random.Random(seed).shuffle(images)
    stations = Path(tempfile.mkdtemp(prefix="linewatch-stations-"))
    for index, image in enumerate(images):
        station = stations / f"station-{index % 2 + 1}"
        station.mkdir(exist_ok=True)
        (station / f"{index:04d}_{image.parent.name}_{image.name}").symlink_to(image.resolve())
    dashboard, url = _dashboard(endpoint)
    run = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            page.wait_for_selector('#conn[data-state="live"]')
            run = subprocess.Popen([str(BIN / "inspect-run"), "--bundle", str(bundle), "--name", "bottle-line",
                                    "--source", str(stations / "station-1"), "--source", str(stations / "station-2"),
                                    "--publish", endpoint, "--send-frames", "--wait-subscribers", "1",
                                    "--batch", "1", "--queue-size", "2"])
            frames = page.locator('[data-kpi="frames"]')
            deadline = time.monotonic() + 300
            while int(frames.inner_text().replace(",", "")) < fraction * len(images) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # let the tiles finish drawing the newest images
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        run.wait(timeout=300)
    finally:
        if run is not None and run.poll() is None:
            run.terminate()
        dashboard.terminate()
        dashboard.wait(timeout=10)
        shutil.rmtree(stations)
    image = Image.open(out).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    click.echo(f"wrote {out}: {image.width}x{image.height} px, {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
