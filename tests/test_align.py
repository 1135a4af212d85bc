"""--align lk / ecc: registration accuracy, maps moved back onto the frame, bundle round trip, regions in frame
pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.bundle import BundleError, read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.features import lucas_kanade
from linewatch.features.align import REFERENCE_FILE, Aligner, build_reference, margin_for
from linewatch.features.preprocess import Preprocessor
from linewatch.inspector import Inspector
from linewatch.models.patchcore.model import PatchCore, PatchCoreParams
from linewatch.scoring import leave_out, score_outputs
from linewatch.train.cli import main as train_main


def _part(size: int = 128, seed: int = 0) -> np.ndarray:
    """An asymmetric textured part, so rotation and shift are both observable."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 2)
    cv2.rectangle(image, (30, 40), (90, 70), (250, 200, 40), -1)
    cv2.circle(image, (85, 95), 14, (20, 60, 220), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def _moved(image: np.ndarray, angle: float, shift: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)


@pytest.mark.parametrize("method", ["lk", "ecc"])
@pytest.mark.parametrize(("angle", "shift"), [(7.0, (6.0, -4.0)), (-9.0, (-8.0, 5.0)), (0.0, (0.0, 0.0))])
def test_registration_recovers_rotation_and_shift(method: str, angle: float, shift: tuple[float, float]) -> None:
    reference = _part()
    aligner = build_reference([reference], method)
    warp = aligner.warp_matrix(_moved(reference, angle, shift))
    assert warp is not None
    assert math.degrees(math.atan2(warp[1, 0], warp[0, 0])) == pytest.approx(-angle, abs=0.5)
    aligned = aligner.apply(_moved(reference, angle, shift), warp)
    inner = (slice(24, 104), slice(24, 104))
    before = np.abs(_moved(reference, angle, shift)[inner].astype(float) - reference[inner]).mean()
    after = np.abs(aligned[inner].astype(float) - reference[inner]).mean()
    assert after < 6 and (after < before / 3 or before < 1)


@pytest.mark.parametrize("method", ["lk-affine", "ecc-affine"])
def test_affine_alignment_also_undoes_a_change_of_scale(method: str) -> None:
    reference = _part()
    frame = _moved(reference, 5.0, (4.0, 3.0), scale=1.08)
    warp = build_reference([reference], method).warp_matrix(frame)
    assert warp is not None and np.linalg.det(warp[:, :2]) == pytest.approx(1.08**2, rel=0.03)
    euclidean = build_reference([reference], method.removesuffix("-affine")).warp_matrix(frame)
    assert euclidean is not None and np.linalg.det(euclidean[:, :2]) == pytest.approx(1.0, abs=1e-4)


def _leads(size: int = 128) -> np.ndarray:
    """A transistor-like part: a body with three thin leads, whose turns have local optima for registration."""
    image = np.full((size, size, 3), 60, np.float32)
    cv2.rectangle(image, (34, 30), (94, 70), (200, 200, 200), -1)
    for x in (44, 64, 84):
        cv2.rectangle(image, (x - 3, 70), (x + 3, 118), (230, 230, 230), -1)
    image += np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("angle", [12.0, -10.0, 6.0])
def test_lucas_kanade_matches_the_true_motion_of_a_turned_and_brightened_part(angle: float) -> None:
    """Against the warp that made the frame (independent of either estimator): the part turned, shifted and lit
    1.3x brighter + 10. Turned 12 degrees, one start from 0 degrees stops 14 px off (hence the three starts)."""
    reference = _leads()
    h, w = reference.shape[:2]
    truth = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    truth[:, 2] += (5.0, -7.0)
    frame = np.clip(cv2.warpAffine(reference, truth, (w, h), borderMode=cv2.BORDER_REPLICATE) * 1.3 + 10, 0, 255)
    warp = build_reference([reference], "lk-affine").warp_matrix(frame.astype(np.uint8))
    assert warp is not None
    # The estimated warp maps reference pixels to frame pixels, as `truth` does: compare them on the part.
    ys, xs = np.mgrid[32:96:8, 32:96:8].astype(np.float64)
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    assert np.abs(warp.astype(np.float64) @ points - truth @ points).max() < 1.0


def test_a_degenerate_lucas_kanade_update_ends_the_registration_instead_of_raising() -> None:
    """An update whose matrix has no inverse (here forced: every error pixel 1, the solve's first row -1/N, so
    1 + p0 = 0) returns a non-finite warp, which `estimate` turns into None (the frame is scored unaligned)."""
    template = _part()[:32, :32, 0].astype(np.float32)
    level = lucas_kanade._Level(template, affine=True)
    level.solve = np.zeros_like(level.solve)
    level.solve[0] = -1.0 / template.size
    warp, _ = lucas_kanade._iterate(level, template + 1, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), 5, 0.01)
    assert not np.isfinite(warp).all()


@pytest.mark.parametrize("method", ["lk", "ecc"])
def test_a_frame_that_cannot_be_registered_is_left_as_it_is(method: str) -> None:
    aligner = build_reference([_part()], method)
    flat = np.full((128, 128, 3), 90, np.uint8)
    assert aligner.warp_matrix(flat) is None
    preprocess = Preprocessor((128, 128), align=aligner)
    inputs, warp = preprocess.prepare(flat)
    assert warp is None and np.array_equal(inputs, Preprocessor((128, 128))(flat))


def test_restore_puts_a_map_back_where_the_frame_had_it() -> None:
    reference = _part()
    preprocess = Preprocessor((128, 128), align=build_reference([reference]))
    frame = _moved(reference, 8.0, (10.0, -6.0))
    marked = frame.copy()
    cv2.circle(marked, (40, 90), 5, (255, 255, 255), -1)  # a "defect" at (40, 90) in frame pixels
    inputs, warp = preprocess.prepare(marked)
    aligned_map = (inputs.mean(axis=0) - preprocess(frame).mean(axis=0)) ** 2  # where the defect is, aligned
    restored = preprocess.restore(aligned_map.astype(np.float32), warp)
    y, x = np.unravel_index(np.argmax(restored), restored.shape)
    assert abs(x - 40) <= 3 and abs(y - 90) <= 3


def test_unseen_is_what_the_warp_brings_in_from_outside_the_frame_plus_the_margin() -> None:
    reference = _part()
    aligner = build_reference([reference])
    warp = aligner.warp_matrix(_moved(reference, 8.0, (10.0, -6.0)))
    assert warp is not None
    # Independent reference: send every aligned pixel through the warp and ask whether it lands in the frame.
    ys, xs = np.mgrid[0:128, 0:128].astype(np.float64)
    fx = warp[0, 0] * xs + warp[0, 1] * ys + warp[0, 2]
    fy = warp[1, 0] * xs + warp[1, 1] * ys + warp[1, 2]
    outside = (fx < -0.5) | (fx > 127.5) | (fy < -0.5) | (fy > 127.5)
    unseen = aligner.unseen(warp, (128, 128))
    assert unseen is not None and 0.02 < outside.mean() < 0.3
    assert (unseen != outside).mean() < 0.005
    widened = Aligner(aligner.reference, aligner.downscale, margin=8).unseen(warp, (128, 128))
    grown = cv2.dilate(outside.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    assert widened is not None and (widened != grown).mean() < 0.005 and widened.sum() > 2 * unseen.sum()
    assert aligner.unseen(np.eye(2, 3, dtype=np.float32), (128, 128)) is None
    assert margin_for(("layer2", "layer3")) == 32 and margin_for(("layer1",)) == 8


@pytest.mark.parametrize(("margin", "grid"), [(32, (16, 16)), (16, (16, 8)), (0, (8, 16)), (16, (32, 32))])
def test_unseen_cells_are_the_cells_holding_an_unseen_pixel(margin: int, grid: tuple[int, int]) -> None:
    """The patch-grid answer (cell corners) against the pixel mask (every pixel warped, then dilated) brought
    to that grid as `leave_out` does, over turned, shifted and scaled warps; a margin the cell side does not
    divide falls back to pixels."""
    aligner = Aligner(_part()[:32, :32, 0].astype(np.float32), 4, "lk", margin=margin)
    rng = np.random.default_rng(0)
    size = (128, 128)
    for _ in range(40):
        warp = cv2.getRotationMatrix2D((64, 64), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
        warp[:, 2] += rng.uniform(-12, 12, 2)
        pixels = aligner.unseen(warp, size)
        cells = aligner.unseen(warp, size, grid)
        assert pixels is not None and cells is not None and cells.shape == grid
        expected = cv2.resize(pixels.astype(np.float32), grid[::-1], interpolation=cv2.INTER_AREA) > 0
        assert np.array_equal(cells, expected)
        assert np.array_equal(leave_out(np.ones((1, *grid), np.float32), [cells]),
                              leave_out(np.ones((1, *grid), np.float32), [pixels]))
    assert aligner.unseen(np.eye(2, 3, dtype=np.float32), size, grid) is None
    uneven = Aligner(aligner.reference, 4, "lk", margin=12).unseen(warp, size, (16, 16))  # 12 px: not whole cells
    assert uneven is not None and uneven.shape == size


def test_left_out_patches_can_neither_raise_the_score_nor_mark_the_map() -> None:
    rng = np.random.default_rng(0)
    patch = rng.uniform(1, 2, (2, 8, 8)).astype(np.float32)
    patch[:, 0, 0] = 50  # padding in the corner scores far above the part
    patch[1, 5, 5] = 9  # a real defect on the second image
    corner = np.zeros((64, 64), bool)
    corner[:6, :6] = True  # touches exactly one 8 x 8 patch
    kept = leave_out(patch, [corner, corner])
    assert patch[0, 0, 0] == 50  # the caller's scores are not modified
    assert kept[0, 0, 0] == pytest.approx(np.median(patch[0].ravel()[1:]))
    assert kept[0].max() < 2 and kept[1].max() == 9
    assert np.array_equal(kept[:, 1:], patch[:, 1:])
    assert np.array_equal(leave_out(patch, [None, None]), patch)


def test_unseen_patches_are_left_out_of_both_the_map_and_the_image_score() -> None:
    """PatchCore's map and image score read different neighbours (`PatchScores`): padding must reach
    neither."""
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(50, 4)).astype(np.float32)
    features = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    features[0, :, 0, 0] = 40.0  # padding: far from every bank patch
    detector = PatchCore(bank, PatchCoreParams()).with_map_k(3)
    corner = np.zeros((64, 64), bool)
    corner[:6, :6] = True
    seen = score_outputs(detector, {"features": features}, (64, 64), 0.0)
    kept = score_outputs(detector, {"features": features}, (64, 64), 0.0, unseen=[corner])
    assert seen.maps[0, 0, 0] > 20 and kept.maps[0, :8, :8].max() < 10
    assert seen.scores[0] > 20 and kept.scores[0] < 10


@pytest.mark.parametrize("method", ["lk-affine", "ecc"])
def test_aligner_settings_that_differ_are_refused(tmp_path: Path, method: str) -> None:
    section, name = build_reference([_part()], method).save(tmp_path)
    loaded = Aligner.load(tmp_path, json.loads(json.dumps(section)))  # as the manifest holds it
    assert name == REFERENCE_FILE and loaded.reference.shape == (64, 64) and loaded.method == method
    frame = _moved(_part(), 6.0, (3.0, 2.0))
    assert np.array_equal(loaded.warp_matrix(frame), build_reference([_part()], method).warp_matrix(frame))
    with pytest.raises(BundleError, match="alignment settings"):
        Aligner.load(tmp_path, {**section, "iterations": 5})
    with pytest.raises(BundleError, match="unknown alignment"):
        Aligner.load(tmp_path, {**section, "method": "sift"})


def test_bundles_aligned_with_ecc_before_lucas_kanade_still_load(tmp_path: Path) -> None:
    """A manifest section as written before `--align lk` existed: no `estimator` key; it keeps aligning with ECC."""
    old = {"method": "ecc-affine", "motion": "affine", "reference": REFERENCE_FILE, "downscale": 2, "levels": 2,
           "iterations": 40, "eps": 1e-4, "max_angle_deg": 30.0, "max_shift": 0.25, "margin_px": 32}
    build_reference([_part()], "ecc-affine").save(tmp_path)
    aligner = Aligner.load(tmp_path, old)
    assert aligner.method == "ecc-affine" and aligner.lk is None and len(aligner.pyramid) == 2


def test_bundles_aligned_with_lucas_kanade_before_the_early_accept_search_every_start(tmp_path: Path) -> None:
    """A section without `accept_mse` (written before it) loads with 0: all three starts, as it was trained;
    a new section records the setting and reloads with it."""
    section, _ = build_reference([_part()], "lk-affine").save(tmp_path)
    assert section["accept_mse"] == lucas_kanade.ACCEPT_MSE > 0
    assert Aligner.load(tmp_path, section).lk.accept_mse == lucas_kanade.ACCEPT_MSE
    before = {k: v for k, v in section.items() if k != "accept_mse"}
    assert Aligner.load(tmp_path, before).lk.accept_mse == 0.0


def test_a_start_that_already_matches_skips_the_turned_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame whose start from 0 degrees ends within `ACCEPT_MSE` (here the part lit 1.1x + 5) is registered
    from that start alone, one half-size search instead of three, to the warp the full search finds; a turned
    frame still gets all three."""
    reference = _part()
    searches: list[tuple[int, int]] = []
    real = lucas_kanade._iterate

    def counted(level: lucas_kanade._Level, *args: object) -> tuple[lucas_kanade.Warp, float]:
        searches.append(level.size)
        return real(level, *args)

    monkeypatch.setattr(lucas_kanade, "_iterate", counted)
    early = build_reference([reference], "lk")
    full = Aligner(early.reference, early.downscale, "lk", accept_mse=0.0)
    lit = np.clip(reference * 1.1 + 5, 0, 255).astype(np.uint8)
    for frame, half_size_searches in ((lit, 1), (_moved(reference, 9.0, (3.0, -2.0)), 3)):
        searches.clear()
        accepted = early.warp_matrix(frame)
        assert searches.count(searches[0]) == half_size_searches and len(searches) == half_size_searches + 1
        searched = full.warp_matrix(frame)
        assert accepted is not None and searched is not None and np.abs(accepted - searched).max() < 0.01


def test_aligned_padim_bundle_reports_regions_on_the_rotated_frame(tmp_path: Path) -> None:
    category = make_synthetic_category(tmp_path / "cat", size=96, n_train=24, n_test_good=4, n_test_defect=3)
    bundle = tmp_path / "padim"
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--model", "padim",
                                             "--image-size", "96", "--padim-dims", "40", "--align", "ecc",
                                             "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(bundle)
    assert manifest["preprocess"]["align"]["method"] == "ecc" and REFERENCE_FILE in manifest["files"]
    layers = manifest["network"]["params"]["layers"]
    assert manifest["preprocess"]["align"]["margin_px"] == margin_for(layers) > 0
    inspector = Inspector.from_bundle(bundle)
    assert inspector.preprocessor.align is not None and inspector.preprocessor.align.margin == margin_for(layers)

    # A defective part rotated by 8 degrees: its map must come back in the rotated frame's pixels.
    image = cv2.cvtColor(cv2.imread(str(next((category / "test" / "hole").glob("*.png")))), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(next((category / "ground_truth" / "hole").glob("*.png"))), cv2.IMREAD_GRAYSCALE)
    frame, frame_mask = _moved(image, 8.0, (4.0, -3.0)), _moved(mask, 8.0, (4.0, -3.0)) > 127
    inputs, warp = inspector.preprocessor.prepare(frame)
    assert warp is not None
    prediction = inspector.score(inspector.reference_engine()(inputs[None]))
    restored = inspector.preprocessor.restore(prediction.maps[0], warp)
    y, x = np.unravel_index(np.argmax(restored), restored.shape)
    ys, xs = np.nonzero(frame_mask)
    assert ys.min() - 6 <= y <= ys.max() + 6 and xs.min() - 6 <= x <= xs.max() + 6

    report = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(report),
                                            "--split", "all", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["image_auroc"] > 0.85 and metrics["pixel_auroc"] > 0.8
