"""A site file: the lines of a site in one YAML file, read by `inspect-run --config FILE --line NAME`.

```yaml
defaults:                # optional; every line starts from these
  engine: triton
  triton_url: gpu-1:8001
  publish_connect: tcp://proxy-1:5557
lines:
  bottle-1:
    bundle: /srv/linewatch/bundles/bottle
    sources: [cam1=rtsp://cam-bottle-1/stream]
```
Keys are `inspect-run`'s option names with `_`. Precedence: options given on the command line, then
the line, then `defaults`, then the command's own defaults. A line's runtime name defaults to the
line's key. Unknown keys, wrong types and unknown lines stop with a message naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linewatch.config import ConfigError, Option, check_mapping, load_yaml
from linewatch.engines.base import DEVICE_CHOICES, ENGINE_CHOICES, PRECISION_CHOICES
from linewatch.runtime.journal import ON_ERROR_CHOICES

SECTIONS = ("site", "defaults", "lines")

# Types and limits only: the defaults are inspect-run's own (an unset key keeps them).
LINE_OPTIONS: dict[str, Option] = {
    "bundle": Option(Path),
    "sources": Option(tuple),
    "watch": Option(bool),
    "loop": Option(bool),
    "batch": Option(int, minimum=1, maximum=256),
    "max_wait_ms": Option(float, minimum=0),
    "engine": Option(str, choices=ENGINE_CHOICES),
    "device": Option(str, choices=DEVICE_CHOICES),
    "precision": Option(str, choices=PRECISION_CHOICES),
    "threads": Option(int, minimum=1),
    "triton_url": Option(str),
    "triton_model": Option(str),
    "triton_timeout": Option(float, minimum=0),
    "triton_retry": Option(float, minimum=0),
    "publish": Option(str),
    "publish_connect": Option(str),
    "send_frames": Option(bool),
    "wait_subscribers": Option(int, minimum=0),
    "wait_timeout": Option(float, minimum=0),
    "journal": Option(Path),
    "on_journal_error": Option(str, choices=ON_ERROR_CHOICES),
    "send_hwm": Option(int, minimum=1),
    "summary": Option(Path),
    "name": Option(str),
    "queue_size": Option(int, minimum=1),
}
_PARAMETER = {"name": "runtime_name", "summary": "summary_file"}  # inspect-run's parameter names for --name, --summary


def _section(data: Any, origin: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of inspect-run options, got {type(data).__name__}")
    mapped = {str(key).replace("-", "_"): value for key, value in data.items()}
    if isinstance(mapped.get("sources"), str):
        mapped["sources"] = [mapped["sources"]]
    checked = check_mapping(LINE_OPTIONS, mapped, origin)
    return {_PARAMETER.get(key, key): value for key, value in checked.items()}


def read_site(path: Path) -> dict[str, dict[str, Any]]:
    """Every line of the site file, each merged over `defaults` and validated: {line name: options}."""
    data = load_yaml(path, "site file")
    if not isinstance(data, dict) or not isinstance(data.get("lines"), dict) or not data["lines"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'lines' mapping (line name -> options)")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(map(repr, unknown))}; known: {', '.join(SECTIONS)}")
    defaults = _section(data.get("defaults"), f"{path}: defaults")
    lines = {}
    for name, section in data["lines"].items():
        values = {"runtime_name": str(name), **defaults, **_section(section, f"{path}: line {name!r}")}
        missing = [key for key in ("bundle", "sources") if not values.get(key)]
        if missing:
            raise ConfigError(f"{path}: line {name!r} has no {' or '.join(missing)} (set it in the line or defaults)")
        lines[str(name)] = values
    return lines


def line_options(path: Path, line: str | None) -> dict[str, Any]:
    """The options of one line; `line` may be omitted when the file has exactly one."""
    lines = read_site(path)
    if line is None:
        if len(lines) > 1:
            raise ConfigError(f"{path} describes {len(lines)} lines ({', '.join(lines)}): choose one with --line NAME "
                              f"(one inspect-run per line)")
        line = next(iter(lines))
    if line not in lines:
        raise ConfigError(f"{path}: no line {line!r}; lines: {', '.join(lines)}")
    return lines[line]
