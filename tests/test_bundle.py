"""The bundle contract: manifest validation, hashes, clear refusals."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewatch.bundle import SCHEMA, BundleError, bundle_id, read_manifest, write_manifest


def _bundle(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
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


# --- tampering ----------------------------------------------------------------------------------------


def _rewrite(bundle: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name, problem", [
    ("../outside.npy", "points outside the bundle ('..')"),
    ("sub/../../outside.npy", "points outside the bundle ('..')"),
    ("/etc/passwd", "is not a relative path"),
    ("C:/x.npy", "is not a relative path"),
    ("a\\..\\b.npy", "is not a relative path"),
    ("", "is not a non-empty string"),
])
def test_manifest_naming_files_outside_the_bundle_is_refused(tmp_path: Path, name: str, problem: str) -> None:
    bundle = _bundle(tmp_path / "b")
    (tmp_path / "outside.npy").write_bytes((bundle / "memory_bank.npy").read_bytes())
    _rewrite(bundle, lambda m: m["files"].update({name: m["files"]["memory_bank.npy"]}))
    with pytest.raises(BundleError, match=re.escape(problem)) as info:
        read_manifest(bundle)
    assert "modified or is corrupt" in str(info.value)


def test_symbolic_link_escaping_the_bundle_is_refused_even_with_the_right_hash(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b")
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes((bundle / "memory_bank.npy").read_bytes())
    (bundle / "memory_bank.npy").unlink()
    (bundle / "memory_bank.npy").symlink_to(outside)
    with pytest.raises(BundleError, match=r"'memory_bank.npy' resolves outside the bundle \(symbolic link to .*where"):
        read_manifest(bundle)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_bytes(outside.read_bytes())
    (bundle / "sub").symlink_to(tmp_path / "data", target_is_directory=True)
    _rewrite(bundle, lambda m: m["files"].update({"sub/x.npy": m["files"]["memory_bank.npy"]}))
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        read_manifest(bundle)


def test_sections_naming_unlisted_files_and_bad_entries_are_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    _rewrite(bundle, lambda m: m["detector"].update({"memory_bank": "../other/memory_bank.npy"}))
    with pytest.raises(BundleError, match="section 'detector' names '../other/memory_bank.npy', which the manifest"):
        read_manifest(bundle)
    _rewrite(bundle, lambda m: m["detector"].update({"memory_bank": "memory_bank.npy"}))
    assert read_manifest(bundle)["detector"]["memory_bank"] == "memory_bank.npy"
    _rewrite(bundle, lambda m: m["files"]["memory_bank.npy"].pop("sha256"))
    with pytest.raises(BundleError, match="has no valid sha256"):
        read_manifest(bundle)
    _rewrite(bundle, lambda m: m.update({"files": ["memory_bank.npy"]}))
    with pytest.raises(BundleError, match="section 'files' must be an object, got list"):
        read_manifest(bundle)


def test_network_and_export_sections_name_only_listed_files(tmp_path: Path) -> None:
    """v2: the network's weights and an export's file must be listed; the pretrained weights the network was
    built from and the Triton repository's copy are outside the bundle by design (a Triton record's `from` is not)."""
    bundle = _bundle(tmp_path)
    outside = {"pretrained": {"source": "/cache/tf_efficientnet_lite0.safetensors", "sha256": None}}
    _rewrite(bundle, lambda m: m["network"].update({"weights": "memory_bank.npy", **outside}))
    _rewrite(bundle, lambda m: m.update({"export": {"triton": {"fp32": {"file": "m/1/model.onnx",
                                                                          "from": "memory_bank.npy"}}}}))
    assert read_manifest(bundle)["network"]["weights"] == "memory_bank.npy"
    _rewrite(bundle, lambda m: m["network"].update({"weights": "network.safetensors"}))
    with pytest.raises(BundleError, match="section 'network' names 'network.safetensors', which the manifest"):
        read_manifest(bundle)
    _rewrite(bundle, lambda m: m["network"].update({"weights": "memory_bank.npy"}))
    _rewrite(bundle, lambda m: m["export"]["triton"]["fp32"].update({"from": "network.onnx"}))
    with pytest.raises(BundleError, match="section 'export' names 'network.onnx'"):
        read_manifest(bundle)
    _rewrite(bundle, lambda m: m.update({"export": [], "network": {}}))
    with pytest.raises(BundleError, match="section 'export' must be an object, got list"):
        read_manifest(bundle)


def test_tampered_bundle_stops_the_runtime_with_one_line(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b")
    np.save(bundle / "memory_bank.npy", np.zeros((3, 2), np.float32))
    images = tmp_path / "images"
    images.mkdir()
    command = [sys.executable, "-c", "from linewatch.runtime.cli import main; main()", "--bundle", str(bundle),
               "--source", str(images),
               "--publish", "tcp://127.0.0.1:*"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"Error: {bundle}: file memory_bank.npy does not match its SHA-256 "
                                                   "in the manifest (modified or corrupt)")


# --- fuzzing ------------------------------------------------------------------------------------------


def _bank_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((3, 2), np.float32))
    return buffer.getvalue()


BANK = _bank_bytes()
VALID = {"schema": SCHEMA, "detector": {"kind": "patchcore", "memory_bank": "memory_bank.npy"}, "network": {},
         "calibration": {}, "files": {"memory_bank.npy": {"sha256": hashlib.sha256(BANK).hexdigest(), "bytes": 1}}}
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                            max_size=3), max_leaves=10)
_names = st.one_of(st.text(max_size=12), st.sampled_from(["memory_bank.npy", "../x.npy", "/etc/hosts", "a/../../b",
                                                          "link.npy", "x" * 300, "sub/ok.npy", "nul\0.npy"]))


SECTIONS_TO_FUZZ = ["detector", "network", "calibration", "files", "files", "files", "export", "schema"]


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    """A valid manifest with sections replaced or dropped, files renamed, or plain random JSON / bytes."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=64))
    if choice == 1:
        return json.dumps(draw(_json)).encode()
    manifest = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(SECTIONS_TO_FUZZ))
        if key == "files" and draw(st.booleans()):
            entry = draw(st.sampled_from([VALID["files"]["memory_bank.npy"], {}, {"sha256": "0" * 64}]))
            manifest["files"] = {draw(_names): entry for _ in range(draw(st.integers(0, 3)))}
        elif draw(st.booleans()):
            manifest.pop(key, None)
        else:
            manifest[key] = draw(_json)
    return json.dumps(manifest, allow_nan=True).encode()


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("fuzz")
    (bundle / "memory_bank.npy").write_bytes(BANK)
    (bundle / "link.npy").symlink_to(bundle.parent)
    (bundle / "sub").mkdir()
    return bundle


@settings(max_examples=200)
@given(manifests())
def test_fuzz_random_manifests_load_or_raise_bundle_error(fuzz_bundle: Path, data: bytes) -> None:
    (fuzz_bundle / "manifest.json").write_bytes(data)
    try:
        manifest = read_manifest(fuzz_bundle)
    except BundleError as exc:
        assert str(exc).startswith(str(fuzz_bundle))
        return
    assert list(manifest["files"]) in ([], ["memory_bank.npy"])
