"""Run a grid's cells one fresh process each (default), in this process, or as tasks on a Ray cluster, with
one progress line per cell.

Cells are independent except that a `shift` cell evaluates its `clean` cell's bundle: locally the clean
cell simply runs first; on Ray the shift task takes the clean task's result as an argument, so Ray
starts it only when that bundle exists. Finished cells are skipped either way, so an interrupted run
continues where it stopped.

A fresh process per cell (spawned, so nothing is inherited but the cell) keeps each cell's peak memory its
own: in one long-lived process a cell's peak starts from whatever earlier cells left allocated. It also
confines a crash (a native fault, the kernel's out-of-memory killer) to that cell, which is recorded as
failed while the grid goes on; and a driver that is killed takes its running cell with it. It costs the
imports once per cell (~3 s here; a cell takes 10 s to minutes).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linewatch.errors import LinewatchError
from linewatch.evaluate.bench.cell import ERROR, finished, record_failure, run_cell, stored_failure

RAY_EXTRA = "pip install -e '.[ray]'"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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


def _cell_process(cell: dict[str, Any], progress: bool) -> None:
    """A spawned process's work: the cell writes its own result.json or error.json."""
    run_cell(cell, progress=progress)


def _die_with(driver: int) -> None:
    """Linux: have the kernel kill this process when the driver dies, however it dies (SIGTERM, SIGKILL),
    so no cell runs on orphaned; elsewhere only Ctrl-C and exceptions in the driver stop it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != driver:  # the driver died before prctl took effect
        os._exit(1)


def _guarded(target: Callable[[dict[str, Any], bool], None], cell: dict[str, Any], progress: bool,
             driver: int) -> None:
    _die_with(driver)
    target(cell, progress)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"the cell's process was killed by {name}{hint}"
    return f"the cell's process exited with code {code} without a result"


def run_isolated(cell: dict[str, Any], progress: bool,
                 target: Callable[[dict[str, Any], bool], None] = _cell_process) -> dict[str, Any]:
    """Run one cell in a fresh spawned process (unless it finished earlier) and return its result."""
    done = finished(cell)
    if done is not None:
        return {**done, "skipped": True}
    (Path(cell["folder"]) / ERROR).unlink(missing_ok=True)  # only this run's failure may be read back
    start = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(target=_guarded, args=(target, cell, progress, os.getpid()),
                                                            name=f"cell {cell['id']}")
    process.start()
    try:
        process.join()
    except BaseException:  # Ctrl-C (the cell got it too) or the driver dying: never leave the cell running
        process.terminate()
        process.join()
        raise
    result = finished(cell) or stored_failure(cell)
    if result is not None:
        return result
    return record_failure(cell, process.pid or 0, _exit_reason(process.exitcode), time.perf_counter() - start)


def run_local(cells: list[dict[str, Any]], echo: Callable[[str], None], progress: bool,
              isolate: bool = True) -> list[dict[str, Any]]:
    """Cells one after the other (each trains and evaluates with all cores), each in a fresh process unless
    `isolate` is off (then in this one: a debugger reaches them, but peak memory includes earlier cells')."""
    results, start = [], time.perf_counter()
    for index, cell in enumerate(cells, start=1):
        if finished(cell) is None:
            echo(f"[{index}/{len(cells)}] {cell['id']} ... ({time.perf_counter() - start:.0f} s elapsed)")
        result = run_isolated(cell, progress) if isolate else run_cell(cell, progress=progress)
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
