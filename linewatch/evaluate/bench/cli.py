"""`inspect-bench`: run a grid of categories x detectors x settings x seeds and write one report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from linewatch.cli_common import friendly_errors, setup_logging


@click.command(context_settings={"show_default": True})
@click.option("--config", "config_file", required=True, type=click.Path(path_type=Path),
              help="Grid YAML (configs/bench-*.yaml).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder: cells/, shifted/, splits/, report.html, report.md, results.json.")
@click.option("--ray", "ray_address", default=None,
              help="Run the cells as tasks on this Ray cluster (e.g. auto or ray://host:10001; 'local' starts one "
                   "here). Needs pip install -e '.[ray]'. Default: on this machine, one fresh process per cell.")
@click.option("--in-process", is_flag=True,
              help="Run the cells in this process, not one fresh process each (for a debugger; a cell's peak "
                   "memory then includes what earlier cells left allocated, and a crash stops the grid).")
@click.option("--report-only", is_flag=True, help="Only (re)write the report from the cells finished so far.")
@click.option("--quiet", is_flag=True, help="No progress bars inside cells (the per-cell lines stay).")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(config_file: Path, out: Path, ray_address: str | None, in_process: bool, report_only: bool,
         quiet: bool, verbose: bool) -> None:
    """Benchmark detectors on categories under clean, shifted and adapted settings; write report.html/md/json."""
    from linewatch.evaluate.bench.cell import finished
    from linewatch.evaluate.bench.config import load_config
    from linewatch.evaluate.bench.plan import plan, prepare
    from linewatch.evaluate.bench.report import write_report
    from linewatch.evaluate.bench.runner import run_local, run_ray

    setup_logging(verbose)
    if ray_address and in_process:
        raise click.UsageError("--in-process and --ray exclude each other: Ray runs every cell in a worker process")
    config = load_config(config_file)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = prepare(config, out, progress=not quiet)
    cells = plan(config, out, data)
    (out / "cells.json").write_text(json.dumps(cells, indent=1, default=str) + "\n")
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if report_only:
        results = [r for r in (finished(c) for c in cells) if r is not None]
    elif ray_address:
        results = run_ray(cells, ray_address, echo)
    else:
        results = run_local(cells, echo, progress=not quiet, isolate=not in_process)
    paths = write_report(config, out, results, cells, wall_s=None if report_only else time.perf_counter() - start)
    failed = [r["id"] for r in results if r.get("status") != "ok"]
    click.echo(f"{len(results)} of {len(cells)} cells finished; report: {', '.join(map(str, paths))}")
    if failed:
        raise click.ClickException(f"{len(failed)} cell(s) failed (see their error.json): {', '.join(failed)}")
