"""inspect-bench end to end on configs/bench-tiny.yaml: cells, resume, results, the report (the grid runs in
this process, `--in-process`); one fresh process per cell (the default) and Ray in their own tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from linewatch.config import ConfigError
from linewatch.data.shift import SINGLE_GROUPS
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.bench.cli import main
from linewatch.evaluate.bench.config import load_config

TINY = Path(__file__).resolve().parents[1] / "configs" / "bench-tiny.yaml"


def tiny_data(root: Path) -> None:
    """The generated categories configs/bench-tiny.yaml points at (relative to the working directory)."""
    for name, seed in (("synthetic", 0), ("synthetic_b", 1)):
        make_synthetic_category(root / "bench-out" / "tiny-data" / name, n_train=10, n_test_good=4,
                                n_test_defect=3, size=48, seed=seed)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny grid, run once through the CLI; returns (output folder, CLI output)."""
    root = tmp_path_factory.mktemp("bench")
    tiny_data(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        result = CliRunner().invoke(main, ["--config", str(TINY), "--out", "out", "--quiet", "--in-process"])
    assert result.exit_code == 0, result.output
    return root / "out", result.output


def test_every_cell_trains_or_reuses_and_evaluates(bench: tuple[Path, str]) -> None:
    out, output = bench
    cells = json.loads((out / "cells.json").read_text())
    config = yaml.safe_load(TINY.read_text())
    per_category = sum(len(d.get("seeds", [0])) * len(config["settings"]) for d in config["detectors"].values())
    ablation = len(SINGLE_GROUPS) + 1  # each transform group alone on the clean PatchCore (+ vignetting)
    assert len(cells) == len(config["categories"]) * (per_category + ablation) + 1  # + the global PatchCore
    for cell in cells:
        result = json.loads((Path(cell["folder"]) / "result.json").read_text())
        assert result["status"] == "ok"
        if cell["setting"].startswith("shift"):  # the clean model on shifted images, not retrained
            assert result["train"] is None and not (Path(cell["folder"]) / "bundle").exists()
            assert result["bundle"].endswith(f"clean-s{cell['seed']}/bundle")
            group = cell["setting"].removeprefix("shift").removeprefix("-")
            where = f"ablation/{cell['category']}/{group}" if group else "shifted"
            assert where in result["evals"][cell["category"]]["metrics"]["data"]
        else:
            assert result["train"]["seconds"] > 0 and result["train"]["bundle_mb"] > 0
        for entry in result["evals"].values():
            metrics = entry["metrics"]
            assert metrics["image_auroc"] is not None and metrics["inference_ms_per_image"] > 0
            assert metrics["peak_rss_mb"] > 0
            assert (Path(entry["report"]) / "pro_curve.csv").is_file()
    assert f"{len(cells)} of {len(cells)} cells finished" in output
    global_cell = next(c for c in cells if c["category"] == "global")
    assert sorted(json.loads((Path(global_cell["folder"]) / "result.json").read_text())["evals"]) == [
        "synthetic", "synthetic_b"]
    assert global_cell["options"]["intensity"] == "none"  # the config's global options over the detector's
    manifest = json.loads((Path(global_cell["bundle"]) / "manifest.json").read_text())
    assert manifest["training"]["options"]["intensity"] == "none"


def test_adapted_cells_train_on_the_shifted_copy_with_the_same_split(bench: tuple[Path, str]) -> None:
    out, _ = bench
    clean = json.loads((out / "cells/synthetic/patchcore/clean-s0/bundle/splits.json").read_text())
    adapted = json.loads((out / "cells/synthetic/patchcore/adapted-s0/bundle/splits.json").read_text())
    assert clean["train"] == adapted["train"] and clean["test"] == adapted["test"]
    manifest = json.loads((out / "cells/synthetic/patchcore/adapted-s0/bundle/manifest.json").read_text())
    assert manifest["training"]["data"] == str((out / "shifted" / "synthetic").resolve())
    assert json.loads((out / "shifted/synthetic/shift.json").read_text())["vignetting"] is True


def test_results_hold_tables_spreads_and_targets(bench: tuple[Path, str]) -> None:
    out, _ = bench
    results = json.loads((out / "results.json").read_text())
    autoencoder = next(c for c in results["cells"] if (c["category"], c["detector"], c["setting"]) ==
                       ("synthetic", "autoencoder", "clean"))
    assert autoencoder["image_auroc"]["n"] == 2 and autoencoder["image_auroc"]["std"] is not None
    macro = {(m["detector"], m["setting"]) for m in results["macro"]}
    assert ("patchcore", "shift") in macro and ("autoencoder", "adapted") in macro
    shift = next(s for s in results["shift"] if (s["category"], s["detector"]) == ("synthetic", "patchcore"))
    image = shift["image_auroc"]
    assert image["drop"] == pytest.approx(image["clean"] - image["shift"])
    assert image["recovery"] == pytest.approx(image["adapted"] - image["shift"])
    assert {t["category"] for t in results["targets"]} == {"synthetic", "synthetic_b"}
    rows = {(r["category"], r["detector"]) for r in results["rows"]}
    assert ("synthetic_b", "patchcore (global)") in rows
    features = results["rows"][0]["metrics"]["defect_types_features"]
    assert features["labels"][0] == "good" and len(features["confusion"]) == len(features["labels"])
    report = (out / "report.md").read_text()
    for heading in ("Macro averages", "Domain shift", "Targets", "Seed spread", "## synthetic"):
        assert heading in report
    clean = next(r for r in results["rows"] if (r["detector"], r["setting"]) == ("patchcore", "clean"))
    assert clean["values"]["mask_combined"] is not None and clean["values"]["types_mask"] is not None
    assert "| - |" in report or "| - " in report  # what a cell does not have (a shift cell's train time) stays -


def test_the_report_names_which_shift_transform_costs_what(bench: tuple[Path, str]) -> None:
    out, _ = bench
    results = json.loads((out / "results.json").read_text())
    assert {r["setting"] for r in results["rows"]} == {"clean", "shift", "adapted"}  # ablation stays apart
    entry = next(e for e in results["ablation"] if (e["category"], e["detector"]) == ("synthetic", "patchcore"))
    assert list(entry["groups"]) == [*SINGLE_GROUPS, "vignetting"]
    for group, value in entry["groups"].items():  # each value is that cell's evaluation of the clean bundle
        cell = out / f"cells/synthetic/patchcore/shift-{group}-s0/result.json"
        assert value == json.loads(cell.read_text())["evals"]["synthetic"]["metrics"]["image_auroc"]
    shift = next(c for c in results["cells"] if (c["category"], c["detector"], c["setting"]) ==
                 ("synthetic", "patchcore", "shift"))
    assert entry["shift"] == shift["image_auroc"]["values"][0]
    for check in (t for t in results["targets"] if t["category"] == "synthetic" and "PatchCore" in t["check"]):
        drops = sorted(((entry["clean"] - v, g) for g, v in entry["groups"].items()), reverse=True)
        expected = [g for d, g in drops[:2] if d > 0.005]
        assert [cause.split(" alone ")[0] for cause in check["causes"]] == expected
    assert any(t["causes"] for t in results["targets"])  # the tiny shift does cost something somewhere
    report = (out / "report.md").read_text()
    assert "Which transform costs what" in report and "costliest transforms alone" in report
    assert (out / "figures/ablation.png").stat().st_size > 10_000


def test_a_second_run_skips_finished_cells_and_redoes_an_interrupted_one(bench: tuple[Path, str]) -> None:
    out, _ = bench
    root = out.parent
    victim = root / "out/cells/synthetic/autoencoder/adapted-s1"
    (victim / "result.json").unlink()  # as if the run had been killed inside this cell
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        result = CliRunner().invoke(main, ["--config", str(TINY), "--out", "out", "--quiet", "--in-process"])
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier, skipped") == len(json.loads((out / "cells.json").read_text())) - 1
    assert "synthetic/autoencoder/adapted/seed1: done in" in result.output
    assert (victim / "result.json").is_file()


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    config = yaml.safe_load(TINY.read_text())
    tiny_data(tmp_path)
    cases = [({"detectors": {"patchcore": {"options": {"coreset_ration": 0.1}}}}, "coreset_ration"),
             ({"detectors": {"nope": {}}}, "'nope' is not one of"),
             ({"settings": ["clean", "rotated"]}, "settings must be some of"),
             ({"categories": {"x": "missing/folder"}}, "not a category folder"),
             ({"detectors": {"patchcore": {"options": {"epochs": 3}}}}, "patchcore has no option(s) epochs"),
             ({"global": {"options": {"patchcore": {"intensity": "bright"}}}}, "global.options.patchcore"),
             ({"global": {"options": {"padim": {}}}}, "'padim' is not a detector of this grid"),
             ({"global": {"seed": 3}}, "global: unknown key(s) seed"),
             ({"shift": {"ablation": ["padim"]}}, "shift.ablation: ['padim'] are not all detectors"),
             ({"settings": ["clean", "adapted"]}, "shift.ablation needs the 'shift' setting")]
    for change, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**config, **change}))
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)
            with pytest.raises(ConfigError, match="bad.yaml") as info:
                load_config(path)
        assert message in str(info.value)


def test_report_only_rewrites_the_report_without_running(bench: tuple[Path, str]) -> None:
    out, _ = bench
    (out / "report.html").unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out.parent)
        result = CliRunner().invoke(main, ["--config", str(TINY), "--out", "out", "--report-only"])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").stat().st_size > 10_000 and "done in" not in result.output


def test_the_report_renders_in_headless_chromium_with_tables_and_images(bench: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    from linewatch.evaluate.bench.browser import INSTALL, BrowserUnavailable, find_chromium, render

    try:
        find_chromium()
    except BrowserUnavailable:
        pytest.skip(f"no Chromium to render the report with; install it with: {INSTALL}")
    out, _ = bench
    facts = render(out / "report.html", screenshot=tmp_path / "shot.png")
    assert facts["outside_requests"] == []  # self-contained: nothing fetched from anywhere
    assert facts["tables"] >= 6 and facts["rows"] >= 20
    assert any("Macro averages" in h for h in facts["headings"])
    assert facts["images"] >= 8 and facts["broken"] == 0 and facts["smallest"] > 100
    assert (tmp_path / "shot.png").stat().st_size > 20_000


def two_cell_grid(root: Path) -> Path:
    """PatchCore clean + shift on one tiny category: the smallest grid with a dependent cell."""
    tiny_data(root)
    config = yaml.safe_load(TINY.read_text())
    config.update(settings=["clean", "shift"], categories={"synthetic": config["categories"]["synthetic"]},
                  detectors={"patchcore": config["detectors"]["patchcore"]})
    config.pop("global")
    config["shift"].pop("ablation")
    (root / "two.yaml").write_text(yaml.safe_dump(config))
    return root / "two.yaml"


def cell_results(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    cells = out / "cells/synthetic/patchcore"
    return (json.loads((cells / "clean-s0/result.json").read_text()),
            json.loads((cells / "shift-s0/result.json").read_text()))


def test_by_default_every_cell_runs_in_a_fresh_process(tmp_path: Path) -> None:
    grid = two_cell_grid(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = CliRunner().invoke(main, ["--config", str(grid), "--out", "out", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 cells finished" in result.output
    clean, shift = cell_results(tmp_path / "out")
    assert clean["status"] == shift["status"] == "ok"
    assert shift["evals"]["synthetic"]["metrics"]["image_auroc"] is not None
    # neither ran here nor in the other's process, so each peak memory is the cell's own
    assert len({clean["pid"], shift["pid"], os.getpid()}) == 3
    assert clean["train"]["peak_rss_mb"] > 0


def _killed(cell: dict[str, Any], progress: bool) -> None:
    """A cell process that dies as under the kernel's out-of-memory killer: no result, no error.json."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_cell_whose_process_dies_is_recorded_as_failed(tmp_path: Path) -> None:
    from linewatch.evaluate.bench.cell import finished, stored_failure
    from linewatch.evaluate.bench.runner import run_isolated

    cell = {"id": "synthetic/patchcore/clean/seed0", "category": "synthetic", "detector": "patchcore",
            "kind": "patchcore", "setting": "clean", "seed": 0, "fingerprint": "f00d",
            "folder": str(tmp_path / "cell")}
    result = run_isolated(cell, progress=False, target=_killed)
    assert result["status"] == "failed" and "killed by SIGKILL" in result["error"]
    assert "out-of-memory" in result["error"] and result["pid"] not in (0, os.getpid())
    assert stored_failure(cell) == result and finished(cell) is None  # the next run retries it


def _sleeping(cell: dict[str, Any], progress: bool) -> None:
    """A cell that says where it runs and then takes long."""
    Path(cell["folder"]).mkdir(parents=True, exist_ok=True)
    (Path(cell["folder"]) / "pid").write_text(str(os.getpid()))
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the cell's parent-death signal is Linux's prctl")
def test_a_killed_driver_takes_its_running_cell_with_it(tmp_path: Path) -> None:
    cell = {"id": "synthetic/patchcore/clean/seed0", "fingerprint": "f00d", "folder": str(tmp_path / "cell")}
    driver_code = ("import json, sys; from test_bench import _sleeping; "
                   "from linewatch.evaluate.bench.runner import run_isolated; "
                   "run_isolated(json.loads(sys.argv[1]), False, target=_sleeping)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-c", driver_code, json.dumps(cell)], env=env)
    pid_file = tmp_path / "cell" / "pid"
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
        assert pid_file.is_file(), "the cell never started"
        child = int(pid_file.read_text())
        assert _alive(child)
        driver.kill()  # SIGKILL: the driver runs no clean-up of its own
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the cell outlived its driver"
    finally:
        if driver.poll() is None:
            driver.kill()
        if pid_file.is_file() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_in_process_and_ray_exclude_each_other(tmp_path: Path) -> None:
    grid = two_cell_grid(tmp_path)
    result = CliRunner().invoke(main, ["--config", str(grid), "--out", str(tmp_path / "out"), "--ray", "auto",
                                       "--in-process"])
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_tiny_grid_runs_as_tasks_on_a_local_ray_instance(tmp_path: Path) -> None:
    import ray

    grid = two_cell_grid(tmp_path)
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)
            result = CliRunner().invoke(main, ["--config", str(grid), "--out", "out", "--ray", "auto"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert "[2/2]" in result.output and "2 of 2 cells finished" in result.output
    clean, shift = cell_results(tmp_path / "out")
    assert shift["status"] == "ok" and shift["evals"]["synthetic"]["metrics"]["image_auroc"] is not None
    # each cell in its own worker process, so no cell's peak memory includes an earlier cell's
    assert len({clean["pid"], shift["pid"], os.getpid()}) == 3
    assert (tmp_path / "out/report.html").is_file()


def test_ray_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from linewatch.evaluate.bench.runner import RayUnavailable, import_ray

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RayUnavailable, match=r"pip install -e '\.\[ray\]'"):
        import_ray()
