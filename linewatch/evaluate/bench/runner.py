"""Run a grid's cells in this process (default) or as tasks on a Ray cluster, with one progress line per cell.

Cells are independent except that a `shift` cell evaluates its `clean` cell's bundle: locally the clean
cell simply runs first; on Ray the shift task takes the clean task's result as an argument, so Ray
starts it only when that bundle exists. Finished cells are skipped either way, so an interrupted run
continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from linewatch.errors import LinewatchError
from linewatch.evaluate.bench.cell import finished, run_cell

RAY_EXTRA = "pip install -e '.[ray]'"


class RayUnavailable(LinewatchError, RuntimeError):
    """`--ray` was given but the optional Ray extra is not installed."""


def _line(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"FAILED ({result.get('error')})"
    parts = []
    for category, entry in result["evals"].items():
        auroc = entry["metrics"].get("image_auroc")
        parts.append(f"{category} image AUROC {auroc:.4f}" if auroc is not None else f"{category} evaluated")
    state = "finished earlier, skipped" if result.get("skipped") else f"done in {result['wall_s']:.0f} s"
    return f"{state}: {', '.join(parts)}"


def run_local(cells: list[dict[str, Any]], echo: Callable[[str], None], progress: bool) -> list[dict[str, Any]]:
    """Cells one after the other in this process (each trains and evaluates with all cores)."""
    results, start = [], time.perf_counter()
    for index, cell in enumerate(cells, start=1):
        if finished(cell) is None:
            echo(f"[{index}/{len(cells)}] {cell['id']} ... ({time.perf_counter() - start:.0f} s elapsed)")
        result = run_cell(cell, progress=progress)
        echo(f"[{index}/{len(cells)}] {cell['id']}: {_line(result)}")
        results.append(result)
    return results


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs the optional Ray extra: {RAY_EXTRA}") from None
    return ray


def _task(cell: dict[str, Any], upstream: dict[str, Any] | None) -> dict[str, Any]:
    """A Ray task: one cell; `upstream` (the clean cell's result) only orders it after that cell."""
    return run_cell(cell, progress=False)


def run_ray(cells: list[dict[str, Any]], address: str, echo: Callable[[str], None],
            cpus_per_cell: float = 1.0) -> list[dict[str, Any]]:
    """Submit every cell as a Ray task (data and output by path on shared storage) and gather the results."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    # One fresh worker process per cell (max_calls=1): a reused worker keeps what earlier cells allocated, and
    # later cells reported it as their own peak memory (the reference grid's: up to 4.8 GiB for a 64 px GANomaly).
    remote = ray.remote(num_cpus=cpus_per_cell, max_retries=0, max_calls=1)(_task)
    refs: dict[str, Any] = {}
    for cell in cells:
        refs[cell["id"]] = remote.remote(cell, refs.get(cell["depends"]) if cell["depends"] else None)
    ids = {ref: cell_id for cell_id, ref in refs.items()}
    pending, results = list(refs.values()), {}
    start = time.perf_counter()
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        result = ray.get(done[0])
        results[ids[done[0]]] = result
        echo(f"[{len(results)}/{len(cells)}] {ids[done[0]]}: {_line(result)} "
             f"({time.perf_counter() - start:.0f} s elapsed)")
    return [results[cell["id"]] for cell in cells]
