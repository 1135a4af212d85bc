"""YAML configuration with validation, and its merge with command-line options.

Precedence: built-in defaults < `--config FILE` < options given on the command line. Unknown keys,
wrong types and missing input paths stop with a message naming the key and where it came from.
Relative paths in a file are taken relative to the current directory, as on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from linewatch.errors import LinewatchError


class ConfigError(LinewatchError, ValueError):
    """A configuration value is unknown, of the wrong type, or points nowhere."""


class ImageSize(tuple):
    """Option type of an image size: `256` (square), `144x256` / `144,256`, a YAML list [H, W] -> (H, W),
    or `auto` / `auto:320` -> AutoSize (the training images' aspect ratio, resolved when training starts)."""


@dataclass(frozen=True)
class AutoSize:
    """About `side` x `side` pixels in the training images' median aspect ratio (see `features.geometry`)."""

    side: int = 256

    def __str__(self) -> str:
        return f"auto:{self.side}"


def parse_size(value: Any, where: str) -> tuple[int, int] | AutoSize:
    """(height, width) from an int, an 'HxW' / 'H,W' string or a two-item list; AutoSize from 'auto[:N]'."""
    if isinstance(value, AutoSize):
        return value
    if isinstance(value, str) and value.strip().lower().startswith("auto"):
        rest = value.strip().lower().removeprefix("auto").removeprefix(":")
        if rest and not rest.isdigit():
            raise ConfigError(f"{where}: expected auto or auto:N (N = the square side whose area is kept), "
                              f"got {value!r}")
        return AutoSize(int(rest)) if rest else AutoSize()
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").replace(" ", ",").split(",")
        value = [p for p in parts if p]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, list | tuple) and len(value) == 1:
        value = [value[0], value[0]]
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a size such as 256 or 144x256 (height x width) or auto[:N], "
                          f"got {value!r}") from None
    return height, width


@dataclass(frozen=True)
class Option:
    """One configurable value: its type, default and (optionally) allowed values or path check."""

    type: type
    default: Any = None
    choices: tuple[Any, ...] | None = None
    must_exist: bool = False
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


def _check(key: str, option: Option, value: Any, origin: str) -> Any:
    where = f"{key!r} ({origin})"
    if value is None:
        return None
    if option.type is ImageSize:
        size = parse_size(value, where)
        for side in (size.side,) if isinstance(size, AutoSize) else size:
            _bounds(where, option, side)
        return size
    if option.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if option.type is Path and isinstance(value, str | Path):
        value = Path(value).expanduser()
    if option.type is tuple and isinstance(value, list | tuple):
        value = tuple(value)
    if not isinstance(value, option.type) or (option.type is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {option.type.__name__}, got {type(value).__name__} {value!r}")
    if option.choices is not None and value not in option.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, option.choices))}")
    _bounds(where, option, value)
    if option.must_exist and not value.exists():
        raise ConfigError(f"{where}: path does not exist: {value}")
    return value


def _bounds(where: str, option: Option, value: Any) -> None:
    if option.minimum is not None and value < option.minimum:
        raise ConfigError(f"{where}: {value!r} is below the minimum {option.minimum}")
    if option.maximum is not None and value > option.maximum:
        raise ConfigError(f"{where}: {value!r} is above the maximum {option.maximum}")


def load_yaml(path: Path, what: str = "config file") -> Any:
    """A YAML document, or a ConfigError naming the file when it is missing or not YAML; empty is {}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def read_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file, bad YAML or another type stops with the path."""
    data = load_yaml(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return data


def read_config_file(path: Path, options: Mapping[str, Option]) -> dict[str, Any]:
    """Parse a YAML mapping and reject keys the command does not know."""
    data = read_yaml_mapping(path)
    normalized = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(normalized) - set(options))
    if unknown:
        known = ", ".join(sorted(options))
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; known: {known}")
    return normalized


def check_mapping(options: Mapping[str, Option], data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Validate a mapping read from somewhere other than a whole config file (e.g. one section of a YAML file)."""
    normalized = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(normalized) - set(options))
    if unknown:
        known = ", ".join(sorted(options))
        raise ConfigError(f"{origin}: unknown key(s) {', '.join(map(repr, unknown))}; known: {known}")
    return {key: _check(key, options[key], value, origin) for key, value in normalized.items()}


def resolve(options: Mapping[str, Option], config_file: Path | None, cli: Mapping[str, Any]) -> dict[str, Any]:
    """Merge defaults, the config file and explicit CLI values, validating each against its option."""
    from_file = read_config_file(config_file, options) if config_file else {}
    merged: dict[str, Any] = {}
    for key, option in options.items():
        if cli.get(key) is not None:
            merged[key] = _check(key, option, cli[key], f"--{key.replace('_', '-')}")
        elif key in from_file:
            merged[key] = _check(key, option, from_file[key], str(config_file))
        else:
            merged[key] = option.default
        if merged[key] is None and option.required:
            raise ConfigError(f"{key!r} is required: pass --{key.replace('_', '-')} or set it in a config file")
    return merged
