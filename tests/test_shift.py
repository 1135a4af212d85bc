"""MVTec-Shift: paired geometric transforms, photometric ones, the parameter log, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.data import read_image, scan_category
from linewatch.data.shift import (
    GROUPS,
    IDENTITY,
    SINGLE_GROUPS,
    ShiftRanges,
    affine_matrix,
    draw_params,
    fill_region,
    is_shifted,
    main,
    shift_category,
)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def _category(root: Path, grey: bool, size: tuple[int, int] = (72, 96)) -> Path:
    """Dark textured parts; test/spot images carry a bright disc and its exact mask."""
    rng = np.random.default_rng(0)
    shape = size if grey else (*size, 3)
    for i in range(4):
        _write(root / "train" / "good" / f"{i:03d}.png", rng.integers(40, 60, shape, dtype=np.uint8))
    _write(root / "test" / "good" / "000.png", rng.integers(40, 60, shape, dtype=np.uint8))
    for i, center in enumerate([(30, 25), (60, 45), (15, 50)]):
        image = rng.integers(40, 60, shape, dtype=np.uint8)
        mask = np.zeros(size, np.uint8)
        cv2.circle(mask, center, 7, 255, -1)
        image[mask > 0] = 250
        _write(root / "test" / "spot" / f"{i:03d}.png", image)
        _write(root / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask)
    return root


@pytest.mark.parametrize("grey", [True, False])
def test_drawn_defect_stays_inside_its_transformed_mask(tmp_path: Path, grey: bool) -> None:
    source = _category(tmp_path / "src", grey)
    log = shift_category(source, tmp_path / "out", seed=3, progress=False)
    shifted = scan_category(tmp_path / "out")
    assert [s.rel for s in shifted.test] == [s.rel for s in scan_category(source).test]
    for sample in shifted.test:
        if not sample.label:
            continue
        image = cv2.imread(str(sample.path), cv2.IMREAD_UNCHANGED)
        assert image.ndim == (2 if grey else 3)  # grey stays grey
        mask = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(mask)) <= {0, 255} and mask.shape == image.shape[:2]
        brightness = image if grey else image.mean(axis=2)
        bright = brightness > (brightness.max() + np.median(brightness)) / 2
        near = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0  # blur spreads the edge by a pixel or two
        assert bright.sum() > 50
        assert (bright & near).sum() / bright.sum() > 0.97
        assert brightness[mask > 0].mean() > brightness[mask == 0].mean() + 60
        params = log["images"][sample.rel]
        assert params["grey"] is grey and params["mask"] == f"ground_truth/spot/{Path(sample.rel).stem}_mask.png"


def test_parameters_stay_within_their_ranges() -> None:
    ranges = ShiftRanges()
    for i in range(300):
        p = draw_params(np.random.default_rng([1, i]), (90, 120), ranges, vignetting=True)
        assert ranges.rotation_deg[0] <= p["rotation_deg"] <= ranges.rotation_deg[1]
        assert ranges.crop_scale[0] <= p["crop_scale"] <= ranges.crop_scale[1]
        assert ranges.crop_aspect[0] <= p["crop_aspect"] <= ranges.crop_aspect[1]
        x0, y0, w, h = p["crop"]
        assert x0 >= 0 and x0 + w <= 120 + 1e-6 and y0 >= 0 and y0 + h <= 90 + 1e-6
        assert abs(p["translate"][0]) <= 0.03 * 120 + 1e-6 and abs(p["translate"][1]) <= 0.03 * 90 + 1e-6
        for key in ("brightness", "contrast", "saturation", "noise_sigma"):
            assert getattr(ranges, key)[0] <= p[key] <= getattr(ranges, key)[1]
        assert p["blur_kernel"] in (3, 5)
        assert ranges.vignetting[0] <= p["vignetting"]["strength"] <= ranges.vignetting[1]


def test_identity_parameters_give_the_identity_matrix() -> None:
    params = {"crop": [0.0, 0.0, 120.0, 90.0], "rotation_deg": 0.0, "translate": [0.0, 0.0]}
    np.testing.assert_allclose(affine_matrix(params, (90, 120)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_fill_region_is_what_the_mirrored_border_brought_in() -> None:
    size = (90, 120)
    params = draw_params(np.random.default_rng(3), size, ShiftRanges(rotation_deg=(8, 8)), vignetting=False)
    fill = fill_region(params, size)
    # independent reference: map every output pixel back to its source and ask whether that lies in the frame
    inverse = cv2.invertAffineTransform(affine_matrix(params, size))
    ys, xs = np.mgrid[0:size[0], 0:size[1]].astype(np.float64)
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    outside = (src_x < -0.5) | (src_x > size[1] - 0.5) | (src_y < -0.5) | (src_y > size[0] - 0.5)
    assert outside.mean() > 0.01 and (fill != outside).mean() < 0.01
    identity = draw_params(np.random.default_rng(3), size, ShiftRanges(
        rotation_deg=(0, 0), crop_scale=(1, 1), crop_aspect=(1, 1), translate=(0, 0)), vignetting=False)
    assert not fill_region(identity, size).any()


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    source = _category(tmp_path / "src", grey=False)
    runner = CliRunner()
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        result = runner.invoke(main, ["--data", str(source), "--out", str(tmp_path / name), "--seed", str(seed),
                                      "--vignetting", "--quiet"])
        assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 4 + 1 + 3 + 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert any((tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes() for rel in files)
    log = json.loads((tmp_path / "a" / "shift.json").read_text())
    assert log["seed"] == 5 and log["vignetting"] is True and len(log["images"]) == 8
    assert is_shifted(tmp_path / "a", source, 5, True) and not is_shifted(tmp_path / "a", source, 6, True)


def test_photometric_shift_changes_the_image(tmp_path: Path) -> None:
    source = _category(tmp_path / "src", grey=False)
    shift_category(source, tmp_path / "out", progress=False)
    before = read_image(source / "train/good/000.png").astype(float)
    after = read_image(tmp_path / "out/train/good/000.png").astype(float)
    assert after.shape == before.shape and np.abs(after - before).mean() > 1.0


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    source = _category(tmp_path / "src", grey=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["--data", str(source), "--out", str(tmp_path / "busy"), "--quiet"])
    assert result.exit_code != 0 and "refusing" in result.output
    result = CliRunner().invoke(main, ["--data", str(source), "--out", str(source), "--quiet"])
    assert result.exit_code != 0 and "input category" in result.output


def test_an_interrupted_shift_continues_to_the_same_files(tmp_path: Path) -> None:
    source = _category(tmp_path / "src", grey=False)
    shift_category(source, tmp_path / "fresh", seed=2, progress=False)
    shift_category(source, tmp_path / "resumed", seed=2, progress=False)
    log = json.loads((tmp_path / "resumed" / "shift.json").read_text())
    (tmp_path / "resumed" / "shift.json").write_text(json.dumps({**log, "complete": False}))  # killed midway
    (tmp_path / "resumed" / "test/spot/001.png").unlink()
    (tmp_path / "resumed" / "train/good/002.png").unlink()
    assert not is_shifted(tmp_path / "resumed", source, 2, False)
    shift_category(source, tmp_path / "resumed", seed=2, progress=False)
    assert is_shifted(tmp_path / "resumed", source, 2, False)
    for path in (tmp_path / "fresh").rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "resumed" / path.relative_to(tmp_path / "fresh")).read_bytes()
    shift_category(source, tmp_path / "resumed", seed=3, progress=False)  # other settings: everything redone
    assert json.loads((tmp_path / "resumed" / "shift.json").read_text())["seed"] == 3


def test_one_group_alone_keeps_the_full_shifts_draw_of_that_group_and_nothing_else(tmp_path: Path) -> None:
    source = _category(tmp_path / "src", grey=False)
    full = shift_category(source, tmp_path / "full", seed=4, vignetting=True, progress=False)["images"]
    for group in (*SINGLE_GROUPS, "vignetting"):
        alone = shift_category(source, tmp_path / group, seed=4, vignetting=True, progress=False,
                               group=group)["images"]
        assert set(alone) == {s.rel for s in scan_category(source).test}  # test/ only
        for rel, params in alone.items():
            height, width = cv2.imread(str(source / rel)).shape[:2]
            identity = {**IDENTITY, "crop": [0.0, 0.0, float(width), float(height)]}
            for key, value in identity.items():
                assert params[key] == (full[rel][key] if key in GROUPS[group] else value), (group, rel, key)
            # the noise pattern too: a draw from narrowed ranges would have moved every draw after the blur
            assert params["noise_seed"] == full[rel]["noise_seed"]


def test_a_group_shift_links_train_and_replacing_it_never_deletes_the_source(tmp_path: Path) -> None:
    source = _category(tmp_path / "src", grey=True)
    before = sorted(p.name for p in (source / "train" / "good").iterdir())
    out = tmp_path / "rotation"
    result = CliRunner().invoke(main, ["--data", str(source), "--out", str(out), "--seed", "1", "--group", "rotation",
                                       "--quiet"])
    assert result.exit_code == 0 and "(rotation alone, seed 1)" in result.output, result.output
    assert (out / "train").is_symlink() and is_shifted(out, source, 1, False, "rotation")
    assert not is_shifted(out, source, 1, False) and not is_shifted(out, source, 1, False, "noise")
    shift_category(source, out, seed=1, progress=False)  # the full shift, same seed, replaces it
    assert sorted(p.name for p in (source / "train" / "good").iterdir()) == before
    assert not (out / "train").is_symlink() and is_shifted(out, source, 1, False)
