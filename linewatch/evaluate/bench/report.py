"""Write the bench report: `results.json` (every number), `report.md` (tables) and `report.html` (tables and
figures in one self-contained file: images are inline base64 PNGs, no scripts, fonts or styles from elsewhere)."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from linewatch.evaluate.bench import plots
from linewatch.evaluate.bench.config import BenchConfig
from linewatch.evaluate.bench.results import summarise
from linewatch.evaluate.bench.tables import Table, all_tables, markdown

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; } td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0 1em; }
.missed { color: #b00; font-weight: bold; } .met { color: #070; }
"""


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    """Tuple-keyed groups as lists of records."""
    return {
        **summary,
        "cells": [{"category": c, "detector": d, "setting": s, **v} for (c, d, s), v in summary["cells"].items()],
        "macro": [{"detector": d, "setting": s, **v} for (d, s), v in summary["macro"].items()],
    }


def _html_table(table: Table) -> str:
    title, header, body = table
    if not body:
        return f"<h3>{html.escape(title)}</h3><p>(nothing to show yet)</p>"

    def cell(text: str) -> str:
        css = ' class="missed"' if text.startswith("MISSED") else ' class="met"' if text == "met" else ""
        return f"<td{css}>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(f"<tr>{''.join(cell(c) for c in row)}</tr>" for row in body)
    return f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _intro(config: BenchConfig, results: list[dict[str, Any]], cells: list[dict[str, Any]],
           wall_s: float | None) -> list[str]:
    finished = sum(r.get("status") == "ok" for r in results)
    lines = [f"Grid {config.path}: {len(config.categories)} categories x {len(config.detectors)} detectors x "
             f"settings {', '.join(config.settings)}; split seed {config.split_seed}, shift seed {config.shift_seed}"
             f"{' with vignetting' if config.vignetting else ''}. {finished} of {len(cells)} cells finished.",
             "Settings: clean = train-clean / val-clean / test-clean; shift = the clean model and its val-clean "
             "threshold on test-shift; adapted = rebuilt on train-shift, calibrated on val-shift, tested on "
             "test-shift. Mean ± sample standard deviation over seeds; '-' = not measured."]
    if wall_s is not None:
        lines.append(f"Wall time of this run: {wall_s / 60:.1f} min (cells finished earlier are not re-run).")
    return lines


def write_report(config: BenchConfig, out: Path, results: list[dict[str, Any]], cells: list[dict[str, Any]],
                 wall_s: float | None = None) -> list[Path]:
    """Write results.json, report.md (+ figures/*.png) and report.html; return their paths."""
    out = Path(out)
    summary = summarise(config, results)
    doc = {"config": str(config.path), "name": config.name, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "wall_s": wall_s, "cells_total": len(cells), **_jsonable(summary)}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    figures = plots.all_figures(config, summary, out / "figures")
    tables = all_tables(config, summary)
    intro = _intro(config, results, cells, wall_s)

    md = [f"# Bench report: {config.name}", "", *intro, ""]
    for table in tables:
        md += [f"## {table[0]}", "", markdown(table), ""]
    md += ["## Figures", ""] + [f"![{title}](figures/{path.name})" for title, path in figures]
    if summary["failed"]:
        md += ["", "## Failed cells", ""] + [f"- {f['id']}: {f['error']}" for f in summary["failed"]]
    (out / "report.md").write_text("\n".join(md) + "\n")

    body = [f"<h1>Bench report: {html.escape(config.name)}</h1>", *(f"<p>{html.escape(p)}</p>" for p in intro)]
    body += [_html_table(t) for t in tables]
    body += [f"<h2>{html.escape(title)}</h2>{_img(path, title)}" for title, path in figures]
    if summary["failed"]:
        body += ["<h2>Failed cells</h2><ul>"] + [f"<li>{html.escape(f['id'])}: {html.escape(str(f['error']))}</li>"
                                                for f in summary["failed"]] + ["</ul>"]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(config.name)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    (out / "report.html").write_text(page)
    return [out / "report.html", out / "report.md", out / "results.json"]
