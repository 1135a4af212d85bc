"""The model bundle: a directory with `manifest.json` plus data files (npy, safetensors, ONNX). No pickle.

It is the contract between training, export and the runtime. Reading validates the schema version,
the required sections and the SHA-256 of every listed file, and says exactly what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from linewatch import __version__
from linewatch.bundle_check import manifest_problems
from linewatch.errors import LinewatchError

SCHEMA = "linewatch.bundle/2"
SCHEMA_V1 = "linewatch.bundle/1"
MANIFEST = "manifest.json"
REQUIRED = ("schema", "detector", "network", "calibration", "files")
REQUIRED_V1 = ("schema", "detector", "features", "calibration", "files")
V1_WEIGHTS = "extractor.safetensors"


class BundleError(LinewatchError, ValueError):
    """A bundle is missing, corrupt, or of a kind this version does not understand."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Hash `files` (relative to `directory`) and write the manifest last, so a half-written bundle never validates."""
    directory = Path(directory)
    manifest = {key: value for key, value in manifest.items() if key != "read_as"}
    manifest["schema"] = SCHEMA
    manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    manifest["code_version"] = __version__
    manifest["files"] = {name: {"sha256": sha256(directory / name), "bytes": (directory / name).stat().st_size}
                         for name in sorted(set(files))}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / MANIFEST)
    return manifest


def read_manifest(directory: Path, verify: bool = True) -> dict[str, Any]:
    """Load and validate a bundle's manifest; `verify` also checks every file's hash."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BundleError(f"bundle directory not found: {directory}")
    if not path.is_file():
        raise BundleError(f"{directory} is not a linewatch bundle: no {MANIFEST} (train one with inspect-train)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8 or JSON, a 5000-digit number, nesting too deep
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    if schema not in (SCHEMA, SCHEMA_V1):
        raise BundleError(f"{path}: schema {schema!r} is not supported by linewatch {__version__} "
                          f"(reads {SCHEMA!r} and {SCHEMA_V1!r})")
    missing = [key for key in (REQUIRED if schema == SCHEMA else REQUIRED_V1) if key not in manifest]
    if missing:
        raise BundleError(f"{path}: missing section(s) {', '.join(missing)}")
    problems = list(manifest_problems(directory, manifest))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BundleError(f"{path}: {problems[0]}{more}; the bundle was modified or is corrupt")
    if verify:
        for name, entry in manifest["files"].items():
            file = directory / name
            if not file.is_file():
                raise BundleError(f"{directory}: file {name} listed in the manifest is missing")
            if sha256(file) != entry["sha256"]:
                raise BundleError(
                    f"{directory}: file {name} does not match its SHA-256 in the manifest (modified or corrupt)"
                )
    return upgrade_v1(manifest) if schema == SCHEMA_V1 else manifest


def upgrade_v1(manifest: dict[str, Any]) -> dict[str, Any]:
    """Read a v1 bundle (feature-memory detectors only) as v2: its `features` section becomes `network`.

    v1 held the feature extractor's config in `features`, its weights in `extractor.safetensors` and its
    export as `backbone.onnx` (recorded under `export`), all of which v2 names in the network section.
    """
    features = dict(manifest["features"])
    pretrained = {"source": features.pop("weights", None), "sha256": features.pop("weights_sha256", None)}
    network = {
        "architecture": "feature_extractor",
        "params": features,
        "input": {"name": "images", "size": list(features["image_size"]), "channels": 3,
                  "dtype": "float32", "range": [0, 255], "layout": "NCHW RGB"},
        "normalization": "backbone mean/std, inside the network",
        "outputs": ["features"],
        "weights": V1_WEIGHTS,
        "pretrained": pretrained,
    }
    return {**manifest, "network": network, "read_as": SCHEMA}


def bundle_id(manifest: dict[str, Any]) -> str:
    """Short stable id of a bundle's content (its data files' hashes), published with every verdict."""
    digest = hashlib.sha256()
    for name, entry in sorted(manifest["files"].items()):
        if name.endswith((".onnx", ".plan")):
            continue
        digest.update(f"{name}:{entry['sha256']}".encode())
    return f"{manifest['detector']['kind']}-{digest.hexdigest()[:12]}"
