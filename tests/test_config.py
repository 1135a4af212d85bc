"""Configuration files: validation and precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from linewatch.config import ConfigError, resolve
from linewatch.train.options import TRAIN_OPTIONS


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_file_and_cli_precedence(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", f"data: {tmp_path}\nout: {tmp_path / 'b'}\nimage_size: 128\nseed: 3\n")
    merged = resolve(TRAIN_OPTIONS, cfg, {"seed": 9})
    assert merged["image_size"] == 128 and merged["seed"] == 9 and merged["coreset_ratio"] == 0.01
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


def test_shipped_configs_only_use_known_keys() -> None:
    from linewatch.config import read_config_file

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        read_config_file(path, TRAIN_OPTIONS)
