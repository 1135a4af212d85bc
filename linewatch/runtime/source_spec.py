"""What a source argument means: "camera0", a device index, a stream URL, a video, a folder, a glob or
"name=spec", parsed into a SourceSpec before any thread starts, so a typo fails at start-up with a clear error.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from linewatch.config import ConfigError
from linewatch.data.io import is_image_file

SourceKind = Literal["camera", "stream", "video", "folder", "glob"]

_NAMED = re.compile(r"^(\w[\w.-]*)=(.+)$")
_NAME = re.compile(r"^\w[\w.-]*$")
_CAMERA = re.compile(r"^(?:camera)?(\d+)$", re.IGNORECASE)
URL = re.compile(r"^(?:rtsps?|rtmp|https?)://", re.IGNORECASE)


@dataclass
class SourceSpec:
    name: str
    kind: SourceKind
    target: str | int  # device index, URL, or path/pattern as given
    live: bool  # live sources drop their oldest frames instead of blocking
    watch: bool = False  # folder/glob: keep polling for new files until stopped
    loop: bool = False  # video/folder/glob: start again at the end


def redact(target: str | int) -> str:
    """The target for messages, without a URL password (events end up in logs and status messages)."""
    text = str(target)
    parts = urlparse(text) if isinstance(target, str) and URL.match(text) else None
    if parts is None or parts.password is None:
        return text
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _clean_name(raw: str, fallback: str) -> str:
    """A default name safe for topics and logs: word characters, dots and dashes only."""
    name = re.sub(r"[^\w.-]+", "-", raw).strip("-.")
    return name or fallback


def _split_name(text: str) -> tuple[str | None, str]:
    """Separate "name=spec" (unless the whole text is an existing path that happens to hold '=')."""
    text = text.strip()
    named = _NAMED.match(text)
    if named and not Path(text).exists():
        return named.group(1), named.group(2).strip()
    return None, text


def parse_source(text: str, name: str | None = None, watch: bool = False, loop: bool = False) -> SourceSpec:
    """Turn a command-line source ("camera0", "3", a URL, a path, a glob, "name=spec") into a spec.

    Digits always mean a camera index; write "./3" for a file or folder called 3. A single image
    file becomes a one-file glob. ``watch`` applies to folders and globs, ``loop`` to files (not with watch).
    """
    explicit, text = _split_name(text)
    name = name if name is not None else explicit
    if name is not None and not _NAME.match(name):
        raise ConfigError(f"source name {name!r} must be letters, digits, '_', '.' or '-'")
    if not text:
        raise ConfigError("empty source (expected cameraN, a device index, a URL, a path or a glob)")
    camera = _CAMERA.match(text)
    if camera:
        index = int(camera.group(1))
        return SourceSpec(name or f"camera{index}", "camera", index, live=True)
    if URL.match(text):
        host = urlparse(text).hostname or ""
        return SourceSpec(name or _clean_name(host, "stream"), "stream", text, live=True)
    path = Path(text)
    if path.is_dir():
        folder = path.name or path.resolve().name
        return SourceSpec(name or _clean_name(folder, "folder"), "folder", text, live=False, watch=watch,
                          loop=loop and not watch)
    if path.is_file():
        if is_image_file(path):
            stem = _clean_name(path.stem, "image")
            return SourceSpec(name or stem, "glob", glob.escape(text), live=False, watch=watch, loop=loop and not watch)
        return SourceSpec(name or _clean_name(path.stem, "video"), "video", text, live=False, loop=loop)
    if any(char in text for char in "*?["):
        if not watch and next(glob.iglob(text, recursive=True), None) is None:
            raise ConfigError(f"source {text!r}: the glob pattern matches no files")
        return SourceSpec(name or "glob", "glob", text, live=False, watch=watch, loop=loop and not watch)
    raise ConfigError(
        f"source {text!r}: no such file or folder, and not a camera (cameraN or a device index), "
        "a stream URL (rtsp://, http(s)://) or a glob pattern"
    )


def parse_sources(texts: Iterable[str], watch: bool = False, loop: bool = False) -> list[SourceSpec]:
    """Parse several sources; explicit names must be unique, default names get -2, -3 suffixes."""
    parsed = [(_split_name(text)[0] is not None, parse_source(text, watch=watch, loop=loop)) for text in texts]
    explicit: set[str] = set()
    for is_explicit, spec in parsed:
        if is_explicit:
            if spec.name in explicit:
                raise ConfigError(f"two sources are both named {spec.name!r}")
            explicit.add(spec.name)
    taken = set(explicit)
    for is_explicit, spec in parsed:
        if not is_explicit:
            base, number = spec.name, 2
            while spec.name in taken:
                spec.name, number = f"{base}-{number}", number + 1
            taken.add(spec.name)
    return [spec for _, spec in parsed]
