"""Structural checks of a bundle manifest: its sections, its file list, and where its files really are.

The hashes in `files` prove that the listed files are unchanged, but only if every file a loader opens
is listed and lies inside the bundle. So a manifest is refused when a listed name is absolute, climbs
out with `..`, or resolves (through a symbolic link) outside the bundle directory, and when a section
that names data files (`detector`, `export`, `network`) names one that `files` does not list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

SECTIONS = ("detector", "features", "calibration", "files")  # must be JSON objects
CONTENT_SECTIONS = ("detector", "export", "network")  # sections whose strings name files inside the bundle
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


def manifest_problems(directory: Path, manifest: dict[str, Any]) -> Iterator[str]:
    """Every structural problem of a manifest whose schema is known, most basic first."""
    for section in SECTIONS:
        if not isinstance(manifest.get(section), dict):
            yield f"section {section!r} must be an object, got {type(manifest.get(section)).__name__}"
            return
    for name, entry in manifest["files"].items():
        if (problem := member_problem(directory, name)) is not None:
            yield problem
        elif not isinstance(entry, dict) or not _SHA256.match(str(entry.get("sha256", ""))):
            yield f"file {name!r} has no valid sha256 in the manifest"
    for section in CONTENT_SECTIONS:
        for text in _strings(manifest.get(section)):
            if text.endswith(DATA_SUFFIXES) and not any(c.isspace() for c in text) and text not in manifest["files"]:
                yield f"section {section!r} names {text!r}, which the manifest's file list does not hold"
