"""`inspect-train --tune`: ranking rules, pinned options, budget, val-clean only, the tuned bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import linewatch.batches
from linewatch.bundle import read_manifest
from linewatch.data import make_splits, scan_category
from linewatch.data.synthetic import make_synthetic_category
from linewatch.train.cli import main as train_main
from linewatch.train.options import resolve_training
from linewatch.train.tune import AUROC_TIE, choose, run_search


def _row(auroc: float, pixel: float | None, pro: float | None, ms: float, status: str = "done") -> dict:
    return {"image_auroc": auroc, "pixel_auroc": pixel, "pro": pro, "ms_per_image": ms, "status": status}


def test_choose_ranks_by_auroc_then_pixel_metrics_then_speed() -> None:
    slow_best, fast_worse = _row(0.95, 0.9, 0.8, 50), _row(0.94, 0.99, 0.99, 5)
    assert choose([fast_worse, slow_best]) is slow_best
    tie_pixel_better = _row(0.95 - AUROC_TIE / 2, 0.95, 0.85, 80)
    assert choose([slow_best, tie_pixel_better]) is tie_pixel_better
    tie_faster = _row(0.95, 0.95, 0.853, 20)
    assert choose([tie_pixel_better, tie_faster]) is tie_faster
    no_masks_slow, no_masks_fast = _row(1.0, None, None, 30), _row(1.0, None, None, 10)
    assert choose([no_masks_slow, no_masks_fast]) is no_masks_fast
    assert choose([_row(1.0, 1.0, 1.0, 1, "skipped: budget"), slow_best]) is slow_best
    with pytest.raises(RuntimeError, match="no tuning candidate"):
        choose([_row(1.0, 1.0, 1.0, 1, "skipped: budget")])


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("tune") / "cat", size=64, n_train=30, n_test_good=6,
                                   n_test_defect=4)


def _options(category: Path, out: Path, **given: object) -> dict:
    return resolve_training(None, {"data": category, "out": out, "weights": "none", **given})


def test_search_reads_only_train_and_val_and_holds_given_options(category: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    original = linewatch.batches.read_image
    monkeypatch.setattr(linewatch.batches, "read_image", lambda path: read.append(str(path)) or original(path))
    options = _options(category, tmp_path / "b", image_size=64, backbone="efficientnet_lite0")
    result = run_search(options, {"image_size", "backbone", "weights"}, budget_min=30, progress=False)
    splits = make_splits(scan_category(category))
    assert set(read) == {str(s.path) for s in (*splits.train, *splits.val)}
    assert not set(read) & {str(s.path) for s in splits.test}
    rows = result.rows
    assert {r["backbone"] for r in rows} == {"efficientnet_lite0"} and {tuple(r["image_size"]) for r in rows} == {
        (64, 64)}
    assert [r["stage"] for r in rows] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert all(r["status"] in ("done", "chosen") and r["image_auroc"] is not None for r in rows)
    # `--intensity auto` is decided once from train-clean's lighting, not searched
    auto = result.section["intensity_auto"]
    assert {r["intensity"] for r in rows} == {auto["chosen"]} == set(result.section["space"]["intensity"])
    assert result.section["colour_auto"]["chosen"] == "rgb" == result.options["colour"]  # so is `--colour auto`
    assert result.section["space"]["colour"] == ["rgb"]
    assert {tuple(r["layers"]) for r in rows[3:]} == {tuple(choose(rows[:3])["layers"])}
    assert [r for r in rows if r["status"] == "chosen"] == [choose(rows)]
    winner = choose(rows)
    assert {k: result.options[k] for k in ("layers", "coreset_ratio", "projection_dims", "intensity")} == {
        "layers": tuple(winner["layers"]), "coreset_ratio": winner["coreset_ratio"],
        "projection_dims": winner["projection_dims"], "intensity": winner["intensity"]}
    assert result.section["chosen"]["layers"] == winner["layers"] and result.section["table"] == rows


def test_a_budget_too_small_for_more_still_trains_the_first_candidate(category: Path, tmp_path: Path) -> None:
    options = _options(category, tmp_path / "b", image_size=64, model="padim", padim_dims=20)
    result = run_search(options, {"image_size", "weights", "padim_dims"}, budget_min=0.001, progress=False)
    done = [r for r in result.rows if r["status"] != "skipped: budget"]
    assert len(done) == 1 and done[0]["status"] == "chosen" and done[0]["backbone"] == "efficientnet_lite0"
    assert len(result.rows) > 1 and "padim_pool" in done[0] and "padim_radius" in done[0]


def test_tune_cli_writes_the_table_into_the_bundle_and_the_output(category: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "tuned"
    args = ["--data", str(category), "--out", str(bundle), "--weights", "none", "--image-size", "64",
            "--backbone", "efficientnet_lite0", "--layers", "layer2,layer3", "--tune", "--budget", "5", "--quiet"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert "tuning on val-clean" in result.output and "chosen" in result.output
    manifest = read_manifest(bundle)
    tuning = manifest["tuning"]
    assert tuning["pinned"] == ["backbone", "image_size", "layers"]
    assert len(tuning["table"]) == 6 and tuning["budget_min"] == 5
    chosen = tuning["chosen"]
    assert manifest["preprocess"]["intensity"] == chosen["intensity"] == manifest["training"]["options"]["intensity"]
    assert chosen["intensity"] == tuning["intensity_auto"]["chosen"]
    assert manifest["detector"]["coreset_ratio"] == chosen["coreset_ratio"]
    assert manifest["network"]["params"]["projection_dims"] == chosen["projection_dims"]
    assert manifest["training"]["options"]["coreset_ratio"] == chosen["coreset_ratio"]


def test_tune_refuses_trained_detectors_and_budget_without_tune(category: Path, tmp_path: Path) -> None:
    base = ["--data", str(category), "--out", str(tmp_path / "x"), "--quiet"]
    result = CliRunner().invoke(train_main, [*base, "--model", "autoencoder", "--tune"])
    assert result.exit_code != 0 and "--tune searches feature-memory detectors" in result.output
    result = CliRunner().invoke(train_main, [*base, "--budget", "3"])
    assert result.exit_code != 0 and "--budget applies to --tune only" in result.output


def test_the_budget_counts_the_held_out_fits_of_val_goods() -> None:
    """With val_goods the final training fits three times on more patches; the budget must reserve that."""
    from linewatch.train.tune import FINAL_OVERHEAD_S, _final_seconds

    pinned = {"model": "patchcore", "val_goods": False, "blur_sigma": 4.0, "map_knn": 1}
    plain = _final_seconds(20.0, 5.0, 2.0, pinned)
    assert plain == 20.0 + 5.0 + FINAL_OVERHEAD_S
    assert _final_seconds(20.0, 5.0, 2.0, {**pinned, "val_goods": True}) - plain >= 3 * 5.0


def test_the_budget_counts_the_map_choice_passes_over_val_clean() -> None:
    """PatchCore's final training searches val-clean once more when it chooses the map's neighbours (one
    search for 3 and 5, FAISS's own for 1; calibration reuses them), not when it chooses only the blur;
    PaDiM's fixed blur adds none."""
    from linewatch.train.tune import _final_seconds

    pinned = {"model": "patchcore", "val_goods": False, "blur_sigma": 4.0, "map_knn": 1}
    plain = _final_seconds(20.0, 5.0, 2.0, pinned)
    assert _final_seconds(20.0, 5.0, 2.0, {**pinned, "map_knn": None}) - plain == 2.0
    assert _final_seconds(20.0, 5.0, 2.0, {**pinned, "blur_sigma": None}) == plain
    padim = {"model": "padim", "val_goods": False, "blur_sigma": 4.0}
    assert _final_seconds(20.0, 5.0, 2.0, padim) == plain


def test_a_given_intensity_is_held_and_standardize_reaches_the_bundle(category: Path, tmp_path: Path) -> None:
    options = _options(category, tmp_path / "b", image_size=64, backbone="efficientnet_lite0", layers=("layer2",),
                       coreset_ratio=0.1, projection_dims=None, intensity="standardize")
    pinned = {"image_size", "backbone", "weights", "layers", "coreset_ratio", "projection_dims", "intensity"}
    result = run_search(options, pinned, budget_min=5, progress=False)
    assert [(r["intensity"], r["status"]) for r in result.rows] == [("standardize", "chosen")]
    assert result.options["intensity"] == "standardize" and "intensity" in result.section["pinned"]
    assert "intensity_auto" not in result.section


def test_candidates_are_fitted_on_the_photometric_copies_training_adds(category: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`--photometric-copies` is held, and every candidate's memory holds the copies `inspect-train` adds."""
    import linewatch.data.augment as augment

    drawn: list[tuple[str, int]] = []
    original = augment.perturbed
    monkeypatch.setattr(augment, "perturbed",
                        lambda image, sample, copy, seed: drawn.append((sample.rel, copy)) or original(
                            image, sample, copy, seed))
    options = _options(category, tmp_path / "b", image_size=64, backbone="efficientnet_lite0", layers=("layer2",),
                       coreset_ratio=0.1, projection_dims=None, photometric_copies=2)
    pinned = {"image_size", "backbone", "weights", "layers", "coreset_ratio", "projection_dims", "photometric_copies"}
    result = run_search(options, pinned, budget_min=5, progress=False)
    train = make_splits(scan_category(category)).train
    assert sorted(drawn) == sorted((s.rel, copy) for s in train for copy in (1, 2))
    assert result.options["photometric_copies"] == 2
