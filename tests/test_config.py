"""Configuration files: validation and precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from linewatch.config import AutoSize, ConfigError, resolve
from linewatch.models.registry import DETECTOR_KINDS, all_specs
from linewatch.train.options import all_options, options_for, resolve_training

TRAIN_OPTIONS = options_for("patchcore")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_file_and_cli_precedence(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", f"data: {tmp_path}\nout: {tmp_path / 'b'}\nimage_size: 128\nseed: 3\n")
    merged = resolve(TRAIN_OPTIONS, cfg, {"seed": 9})
    assert merged["image_size"] == (128, 128) and merged["seed"] == 9 and merged["coreset_ratio"] == 0.01
    assert merged["data"] == tmp_path


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "image_sise: 128\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'image_sise'"):
        resolve(TRAIN_OPTIONS, cfg, {})


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", f"data: {tmp_path}\nout: x\ncoreset_ratio: lots\n")
    with pytest.raises(ConfigError, match=r"'coreset_ratio' \(.*c\.yaml\): expected float"):
        resolve(TRAIN_OPTIONS, cfg, {})


def test_missing_path_names_key(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", f"data: {tmp_path / 'nowhere'}\nout: x\n")
    with pytest.raises(ConfigError, match="'data'.*does not exist"):
        resolve(TRAIN_OPTIONS, cfg, {})


def test_required_choice_and_range_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'data' is required"):
        resolve(TRAIN_OPTIONS, None, {"out": "x"})
    with pytest.raises(ConfigError, match="'model' .*--model.*not one of"):
        resolve(TRAIN_OPTIONS, None, {"data": tmp_path, "out": "x", "model": "svm"})
    with pytest.raises(ConfigError, match="above the maximum"):
        resolve(TRAIN_OPTIONS, None, {"data": tmp_path, "out": "x", "coreset_ratio": 2.0})
    with pytest.raises(ConfigError, match="not found"):
        resolve(TRAIN_OPTIONS, tmp_path / "none.yaml", {})
    bad = _write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(TRAIN_OPTIONS, bad, {})


def test_shipped_training_configs_resolve_for_their_model(tmp_path: Path) -> None:
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        if path.name.startswith(("bench-", "site-")):
            continue
        options = resolve_training(path, {"data": tmp_path, "out": tmp_path / "b"})
        assert options["model"] in DETECTOR_KINDS, path


def test_each_detector_gets_its_own_defaults(tmp_path: Path) -> None:
    base = {"data": tmp_path, "out": tmp_path / "b"}
    assert resolve_training(None, {**base, "model": "patchcore"})["image_size"] == AutoSize(256)
    assert resolve_training(None, {**base, "model": "padim"})["align"] == "lk-affine"
    assert resolve_training(None, {**base, "model": "patchcore"})["align"] == "none"
    ganomaly = resolve_training(None, {**base, "model": "ganomaly"})
    assert ganomaly["lr"] == 2e-4 and ganomaly["image_size"] == (64, 64) and ganomaly["channels"] == 3
    assert resolve_training(None, {**base, "model": "autoencoder"})["lr"] == 1e-3


def test_an_option_of_another_detector_is_refused_naming_who_takes_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'coreset_ratio' \(--coreset-ratio\) does not apply to model "
                                          r"'autoencoder'; it is an option of patchcore"):
        resolve_training(None, {"data": tmp_path, "out": "x", "model": "autoencoder", "coreset_ratio": 0.1})
    cfg = _write(tmp_path / "c.yaml", "model: padim\nepochs: 3\n")
    with pytest.raises(ConfigError, match=r"'epochs' \(.*c\.yaml\) does not apply to model 'padim'"):
        resolve_training(cfg, {"data": tmp_path, "out": "x"})


def test_options_shared_by_detectors_agree_on_their_type() -> None:
    merged = all_options()
    assert set(merged["layers"][1]) == {"patchcore", "padim"}
    assert set(merged["epochs"][1]) == {spec.kind for spec in all_specs() if spec.trained}
    assert {"autoencoder", "ganomaly", "gan"} <= set(merged["epochs"][1])
    assert set(merged["seed"][1]) == set(DETECTOR_KINDS)


@pytest.mark.parametrize(("given", "size"), [(128, (128, 128)), ("144x256", (144, 256)), ("144,256", (144, 256)),
                                             ([96, 160], (96, 160)), ("200", (200, 200))])
def test_image_size_is_height_by_width(tmp_path: Path, given: object, size: tuple[int, int]) -> None:
    assert resolve_training(None, {"data": tmp_path, "out": "x", "image_size": given})["image_size"] == size


def test_a_bad_image_size_names_the_expected_form(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'image_size' \(--image-size\): expected a size such as 256 or 144x256"):
        resolve_training(None, {"data": tmp_path, "out": "x", "image_size": "wide"})
    with pytest.raises(ConfigError, match="below the minimum"):
        resolve_training(None, {"data": tmp_path, "out": "x", "image_size": "8x256"})
