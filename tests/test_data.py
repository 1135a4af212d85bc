from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.data import (
    Category,
    DataError,
    Sample,
    Splits,
    decode_image,
    is_image_file,
    make_splits,
    read_image,
    read_mask,
    scan_category,
    to_rgb,
)
from linewatch.data.synthetic import DEFECT_TYPES, main, make_synthetic_category


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture
def category_copy(synthetic: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic, tmp_path / "copy"))


def write(path: Path, image: np.ndarray, ext: str = ".png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imencode(ext, image)[1].tofile(path)
    return path


def fake_category(goods: int, defects: dict[str, int]) -> Category:
    """A category of Samples without files: enough for make_splits."""
    root = Path("/nowhere")
    train = [Sample(root / f"train/good/{i:03d}.png", f"train/good/{i:03d}.png", 0, "good", None)
             for i in range(goods)]
    test = [Sample(root / f"test/{d}/{i:03d}.png", f"test/{d}/{i:03d}.png", 1, d, None)
            for d, n in defects.items() for i in range(n)]
    return Category(root, "fake", train, sorted(test, key=lambda s: s.rel))


# --- scanning -----------------------------------------------------------------------------------------


def test_scan_synthetic_category(synthetic: Path) -> None:
    cat = scan_category(synthetic)
    assert cat.name == "synthetic" and cat.root == synthetic.absolute()
    assert len(cat.train) == 40 and len(cat.test) == 10 + 3 * 6
    assert all(s.label == 0 and s.defect == "good" and s.mask is None for s in cat.train)
    assert cat.train[0].rel == "train/good/000.png" and cat.train[0].path.is_absolute()
    assert [s.rel for s in cat.test] == sorted(s.rel for s in cat.test)
    for s in cat.test:
        assert (s.label == 1) == (s.defect != "good")
        assert s.path == synthetic / s.rel
        if s.label:
            assert s.mask == synthetic / "ground_truth" / s.defect / f"{Path(s.rel).stem}_mask.png"
        else:
            assert s.mask is None
    assert {s.defect for s in cat.test} == {"good", *DEFECT_TYPES}


def test_scan_ignores_non_images_and_allows_defects_without_masks(category_copy: Path) -> None:
    root = category_copy
    for junk in ("readme.txt", "train/good/notes.txt", "train/good/.DS_Store", "train/good/._000.png",
                 "test/scratch/labels.csv", "ground_truth/scratch/info.txt"):
        (root / junk).write_bytes(b"not an image")
    (root / "test" / ".hidden").mkdir()
    shutil.copy(root / "train/good/000.png", root / "train/good/EXTRA.PNG")
    (root / "test/spot-2").mkdir()
    shutil.copy(root / "test/spot/000.png", root / "test/spot-2/000.png")
    (root / "ground_truth/spot/002_mask.png").unlink()
    cat = scan_category(root)
    assert len(cat.train) == 41 and "train/good/EXTRA.PNG" in {s.rel for s in cat.train}
    assert len(cat.test) == 29 and [s.rel for s in cat.test] == sorted(s.rel for s in cat.test)
    by_rel = {s.rel: s for s in cat.test}
    assert by_rel["test/spot/002.png"].mask is None and by_rel["test/spot/002.png"].label == 1
    assert by_rel["test/spot/001.png"].mask is not None and by_rel["test/spot-2/000.png"].mask is None


def test_mask_lookup_accepts_other_extensions_and_good_never_has_masks(category_copy: Path) -> None:
    root = category_copy
    mask = read_image(root / "ground_truth/hole/000_mask.png")
    (root / "ground_truth/hole/000_mask.png").unlink()
    write(root / "ground_truth/hole/000_mask.bmp", mask)
    write(root / "ground_truth/good/000_mask.png", mask)
    by_rel = {s.rel: s for s in scan_category(root).test}
    assert by_rel["test/hole/000.png"].mask == root / "ground_truth/hole/000_mask.bmp"
    assert by_rel["test/good/000.png"].mask is None


def test_is_image_file() -> None:
    assert is_image_file("a/b.PNG") and is_image_file(Path("x.JpEg")) and is_image_file("y.tiff")
    assert not is_image_file("notes.txt") and not is_image_file("png")


def test_scan_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        scan_category(tmp_path / "absent")
    with pytest.raises(DataError, match=str(tmp_path / "train" / "good")):
        scan_category(tmp_path)
    (tmp_path / "train" / "good").mkdir(parents=True)
    (tmp_path / "train" / "good" / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match=f"{tmp_path / 'train' / 'good'}.*no image"):
        scan_category(tmp_path)


# --- reading ------------------------------------------------------------------------------------------


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (garbage, empty, tmp_path / "missing.png", tmp_path):
        with pytest.raises(DataError) as info:
            read_image(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_files_are_rejected(tmp_path: Path, ext: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(ext, image)[1].tobytes()
    good = tmp_path / f"good{ext}"
    good.write_bytes(data + b"\x00" * 4 if ext == ".jpg" else data)
    assert read_image(good).shape == (64, 64, 3)
    # Cut inside the end marker (the case OpenCV may decode with grey fill), before it, and half-way.
    for cut in (len(data) - 2, len(data) - 12, len(data) // 2):
        bad = tmp_path / f"cut{cut}{ext}"
        bad.write_bytes(data[:cut])
        with pytest.raises(DataError, match="image is truncated") as info:
            read_image(bad)
        assert str(bad) in str(info.value)


def test_grayscale_16bit_and_alpha_read_as_rgb_uint8(tmp_path: Path) -> None:
    gray = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 256
    rgb = read_image(write(tmp_path / "gray.png", gray.astype(np.uint8)))
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    assert (rgb == gray[:, :, None]).all()
    deep = read_image(write(tmp_path / "deep.png", np.array([[0, 1000, 32896, 65535]], np.uint16)))
    assert deep.dtype == np.uint8 and (deep[0, :, 0] == [0, 4, 128, 255]).all()
    assert read_image(write(tmp_path / "gray.jpg", gray.astype(np.uint8), ".jpg")).shape == (48, 64, 3)
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[...] = (10, 20, 30, 40)
    assert (read_image(write(tmp_path / "alpha.png", bgra)) == (30, 20, 10)).all()
    bgr = np.zeros((8, 8, 3), np.uint16)
    bgr[...] = (0, 0, 65535)
    assert (read_image(write(tmp_path / "red16.png", bgr)) == (255, 0, 0)).all()


def test_to_rgb_and_decode_image() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200
    assert (to_rgb(bgr) == (0, 0, 200)).all() and to_rgb(bgr).flags.c_contiguous
    assert to_rgb(np.full((4, 5), 7, np.uint8)).shape == (4, 5, 3)
    assert to_rgb(np.full((4, 5, 1), 7, np.uint8)).shape == (4, 5, 3)
    with pytest.raises(ValueError):
        to_rgb(np.zeros((4, 5, 3), np.float32))
    encoded = cv2.imencode(".png", bgr)[1]
    assert (decode_image(encoded, "frame") == to_rgb(bgr)).all()
    assert (decode_image(encoded.tobytes(), "frame") == to_rgb(bgr)).all()
    with pytest.raises(DataError, match="camera-7"):
        decode_image(b"\xff\xd8\xff\xe0 cut", "camera-7")


def test_read_mask(tmp_path: Path) -> None:
    mask = np.zeros((30, 40), np.uint8)
    mask[5:10, 5:10] = 255
    mask[20, 20] = 100
    path = write(tmp_path / "000_mask.png", mask)
    got = read_mask(path, (30, 40))
    assert got.dtype == bool and got.sum() == 25 and not got[20, 20]
    with pytest.raises(DataError) as info:
        read_mask(path, (60, 80))
    assert str(path) in str(info.value) and "80x60" in str(info.value) and "40x30" in str(info.value)


# --- splits -------------------------------------------------------------------------------------------


def test_split_fractions_and_stratification(synthetic: Path) -> None:
    cat = scan_category(synthetic)
    splits = make_splits(cat)
    assert len(splits.train) == 32
    val_good = [s for s in splits.val if s.label == 0]
    assert len(val_good) == 8 and all(s.rel.startswith("train/good/") for s in val_good)
    for defect in DEFECT_TYPES:
        assert sum(s.defect == defect for s in splits.val) == 2  # round(6 * 0.3)
        assert sum(s.defect == defect for s in splits.test) == 4
    assert {s.rel for s in splits.test if s.label == 0} == {s.rel for s in cat.test if s.label == 0}
    rels = [{s.rel for s in part} for part in (splits.train, splits.val, splits.test)]
    assert not (rels[0] & rels[1] or rels[0] & rels[2] or rels[1] & rels[2])
    assert set.union(*rels) == {s.rel for s in (*cat.train, *cat.test)}
    for part in (splits.train, splits.val, splits.test):
        assert [s.rel for s in part] == sorted(s.rel for s in part)


def test_splits_are_deterministic_per_seed(synthetic: Path) -> None:
    cat = scan_category(synthetic)
    assert make_splits(cat, seed=3) == make_splits(scan_category(synthetic), seed=3)
    assert make_splits(cat, seed=3).train != make_splits(cat, seed=4).train


def test_split_edge_cases() -> None:
    lone = make_splits(fake_category(1, {"a": 1, "b": 2, "c": 3}))
    assert len(lone.train) == 1 and not [s for s in lone.val if s.label == 0]
    assert [s.defect for s in lone.val] == ["b", "c"]  # one each; a single image stays in test
    assert sorted(s.defect for s in lone.test) == ["a", "b", "c", "c"]
    everything = make_splits(fake_category(10, {"a": 4}), train_fraction=0.01, val_anomalous_fraction=1.0)
    assert len(everything.train) == 1 and len(everything.val) == 9 + 3 and len(everything.test) == 1
    none = make_splits(fake_category(10, {"a": 4}), val_anomalous_fraction=0.0)
    assert len(none.val) == 2 and len(none.test) == 4
    few = make_splits(fake_category(10, {"a": 2, "b": 3, "c": 10}), val_anomalous_fraction=0.1)
    assert sorted(s.defect for s in few.val if s.label) == ["a", "b", "c"]  # at least one of each type
    with pytest.raises(ValueError):
        make_splits(fake_category(10, {}), train_fraction=0.0)


def test_splits_json_round_trip(category_copy: Path, tmp_path: Path) -> None:
    cat = scan_category(category_copy)
    splits = make_splits(cat, seed=7)
    path = tmp_path / "splits.json"
    splits.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["seed"] == 7 and doc["fractions"] == {"train": 0.8, "val_anomalous": 0.3}
    assert doc["counts"] == {"train": 32, "val": 14, "test": 22}
    assert doc["test"] == [s.rel for s in splits.test]
    assert Splits.load(path, cat) == splits
    (category_copy / splits.test[0].rel).unlink()
    with pytest.raises(DataError) as info:
        Splits.load(path, scan_category(category_copy))
    assert str(category_copy / splits.test[0].rel) in str(info.value) and str(path) in str(info.value)
    path.write_text("{not json")
    with pytest.raises(DataError, match=str(path)):
        Splits.load(path, cat)


# --- synthetic ----------------------------------------------------------------------------------------


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_is_deterministic(synthetic: Path, tmp_path: Path) -> None:
    again = make_synthetic_category(tmp_path / "again")
    assert files(again) == files(synthetic)
    other = files(make_synthetic_category(tmp_path / "other", seed=1))
    assert other.keys() == files(synthetic).keys() and other["train/good/000.png"] != files(synthetic)[
        "train/good/000.png"]


def test_synthetic_defects_lie_inside_their_masks(synthetic: Path) -> None:
    cat = scan_category(synthetic)
    goods = np.stack([read_image(s.path).astype(np.float32) for s in cat.train])
    look = np.median(goods, axis=0)
    spread = np.abs(goods - look).max(axis=3).mean()
    for s in cat.test:
        if not s.label:
            continue
        assert s.mask is not None
        mask = read_mask(s.mask, (128, 128))
        assert mask.sum() >= 20, s.rel
        diff = np.abs(read_image(s.path).astype(np.float32) - look).max(axis=2)
        assert diff[mask].mean() > 50 and diff[mask].mean() > 5 * diff[~mask].mean(), s.rel
        assert diff[~mask].mean() < 2 * spread, s.rel


def test_synthetic_replaces_itself_but_not_other_folders(tmp_path: Path) -> None:
    out = make_synthetic_category(tmp_path / "cat", n_train=3, n_test_good=2, n_test_defect=2, size=32)
    make_synthetic_category(out, n_train=2, n_test_good=1, n_test_defect=1, size=32)
    cat = scan_category(out)
    assert len(cat.train) == 2 and len(cat.test) == 4
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(DataError, match=str(tmp_path / "mine")):
        make_synthetic_category(tmp_path / "mine")


def test_synthetic_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "cli"), "--size", "32", "--n-train", "2",
                                       "--n-test-good", "1", "--n-test-defect", "1", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "cli/test/scratch/000.png").shape == (32, 32, 3)
    assert json.loads((tmp_path / "cli/synthetic.json").read_text())["seed"] == 5


# --- real data ----------------------------------------------------------------------------------------


def test_real_mvtec_bottle(shared_data: Path) -> None:
    root = shared_data / "mvtec_ad" / "bottle"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    cat = scan_category(root)
    assert len(cat.train) > 100 and {s.defect for s in cat.test} >= {"good", "broken_large"}
    defective = [s for s in cat.test if s.label]
    assert defective and all(s.mask is not None for s in defective)
    image = read_image(defective[0].path)
    assert image.dtype == np.uint8 and image.shape == (900, 900, 3)
    assert read_mask(defective[0].mask, image.shape[:2]).any()
    splits = make_splits(cat)
    assert {s.defect for s in splits.val if s.label} == {s.defect for s in defective}
