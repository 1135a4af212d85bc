"""Screenshot an inspect-bench report as headless Chromium shows it (the README's picture).

    .venv/bin/python tools/report_screenshot.py bench-out/reference/report.html docs/bench-report.png

Needs Debian's `chromium` and Playwright (the test extra); prints what the page showed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from linewatch.evaluate.bench.browser import render


@click.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("png", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=800, show_default=True)
def main(report: Path, png: Path, width: int, height: int) -> None:
    """Render REPORT (report.html) and save the first screen as PNG."""
    facts = render(report, screenshot=png, width=width, height=height)
    click.echo(json.dumps({k: v for k, v in facts.items() if k != "headings"}))


if __name__ == "__main__":
    main()
