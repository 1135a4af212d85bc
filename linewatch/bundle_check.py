"""Structural checks of a bundle manifest: its sections, its file list, and where its files really are.

The hashes in `files` prove that the listed files are unchanged, but only if every file a loader opens
is listed and lies inside the bundle. So a manifest is refused when a listed name is absolute, climbs
out with `..`, or resolves (through a symbolic link) outside the bundle directory, and when a section
that names data files (`detector`, `export`, `network`) names one that `files` does not list. Two
entries name files that are not the bundle's and are not checked: `network.pretrained` (the weights
the network was built from) and `export.triton` (the Triton model repository), whose `from` is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

SECTIONS = ("detector", "calibration", "files")  # must be JSON objects
OPTIONAL_SECTIONS = ("features", "network", "export")  # JSON objects when present (v1: features; v2: network)
CONTENT_SECTIONS = ("detector", "export", "network")  # sections whose strings name files inside the bundle
OUTSIDE = {"network": "pretrained", "export": "triton"}  # the entry of a content section that names other files
DATA_SUFFIXES = (".npy", ".safetensors", ".onnx", ".plan", ".faiss", ".json", ".bin")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def member_problem(directory: Path, name: Any) -> str | None:
    """Why `name` is not a plain file name inside `directory` (None when it is)."""
    if not isinstance(name, str) or not name.strip():
        return f"file name {name!r} is not a non-empty string"
    pure = PurePosixPath(name)
    if "\\" in name or "\0" in name or pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return f"file name {name!r} is not a relative path"
    if ".." in pure.parts:
        return f"file name {name!r} points outside the bundle ('..')"
    root = Path(directory).resolve()
    try:
        target = (root / name).resolve()
        target.is_file()  # raises for names the file system refuses (too long, ...)
    except OSError as exc:
        return f"file name {name!r} cannot be used ({exc.strerror or exc})"
    if not target.is_relative_to(root):
        return f"file {name!r} resolves outside the bundle (symbolic link to {target})"
    return None


def _named_files(manifest: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(section, string) for every string of a content section that may name a bundle file."""
    for section in CONTENT_SECTIONS:
        value = manifest.get(section)
        if isinstance(value, dict):
            value = {key: item for key, item in value.items() if key != OUTSIDE.get(section)}
        for text in _strings(value):
            yield section, text
    triton = manifest.get("export", {}).get("triton")
    if isinstance(triton, dict):
        for record in triton.values():
            if isinstance(record, dict):
                yield from (("export", text) for text in _strings(record.get("from")))


def manifest_problems(directory: Path, manifest: dict[str, Any]) -> Iterator[str]:
    """Every structural problem of a manifest whose schema is known, most basic first."""
    for section in (*SECTIONS, *(name for name in OPTIONAL_SECTIONS if name in manifest)):
        if not isinstance(manifest.get(section), dict):
            yield f"section {section!r} must be an object, got {type(manifest.get(section)).__name__}"
            return
    for name, entry in manifest["files"].items():
        if (problem := member_problem(directory, name)) is not None:
            yield problem
        elif not isinstance(entry, dict) or not _SHA256.match(str(entry.get("sha256", ""))):
            yield f"file {name!r} has no valid sha256 in the manifest"
    for section, text in _named_files(manifest):
        if text.endswith(DATA_SUFFIXES) and not any(c.isspace() for c in text) and text not in manifest["files"]:
            yield f"section {section!r} names {text!r}, which the manifest's file list does not hold"
