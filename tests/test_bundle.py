"""The bundle contract: manifest validation, hashes, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from linewatch.bundle import SCHEMA, BundleError, bundle_id, read_manifest, write_manifest


def _bundle(tmp_path: Path) -> Path:
    np.save(tmp_path / "memory_bank.npy", np.ones((3, 2), np.float32))
    manifest = {"detector": {"kind": "patchcore"}, "network": {}, "calibration": {}}
    write_manifest(tmp_path, manifest, ["memory_bank.npy"])
    return tmp_path


def test_round_trip_records_hashes_and_schema(tmp_path: Path) -> None:
    manifest = read_manifest(_bundle(tmp_path))
    assert manifest["schema"] == SCHEMA
    assert manifest["files"]["memory_bank.npy"]["bytes"] > 0
    assert bundle_id(manifest).startswith("patchcore-")


def test_modified_file_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    np.save(bundle / "memory_bank.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(BundleError, match="memory_bank.npy does not match its SHA-256"):
        read_manifest(bundle)


def test_missing_file_and_missing_manifest_are_explained(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "memory_bank.npy").unlink()
    with pytest.raises(BundleError, match="memory_bank.npy listed in the manifest is missing"):
        read_manifest(bundle)
    with pytest.raises(BundleError, match="no manifest.json"):
        read_manifest(tmp_path / "..")
    with pytest.raises(BundleError, match="not found"):
        read_manifest(tmp_path / "nope")


def test_unknown_schema_and_broken_json_are_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "schema": "linewatch.bundle/99"}))
    with pytest.raises(BundleError, match="not supported"):
        read_manifest(bundle)
    del manifest["calibration"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="missing section"):
        read_manifest(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(bundle)
