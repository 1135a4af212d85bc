"""Wire headers -> the dashboard's own records: typed, size-limited, and only the fields it shows.

`parse_message` (the wire-format module) has already checked topic, schema and required keys; this
checks the *values*, because anything on the network may send anything, and the dashboard keeps and
re-serves what it accepts: every string is truncated and every list capped, so one message cannot
make the dashboard's memory or its browsers' pages grow without bound.
"""

from __future__ import annotations

import math
from typing import Any

MAX_TEXT = 300  # characters kept of any free-text field (paths, messages, model ids)
MAX_NAME = 200  # source and runtime names longer than this are refused, not truncated (they are keys)
MAX_REGIONS = 32
MAX_STAGES = 16
MAX_STATUS_EVENTS = 20
_REGION_INTS = ("x", "y", "width", "height", "area")
_SOURCE_STATUS_INTS = ("frames", "drops", "errors", "reopens", "queue")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """Any JSON value as a bounded string (non-strings are shown as their JSON-ish text)."""
    out = value if isinstance(value, str) else str(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def integer(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def optional(value: Any, convert: Any, what: str) -> Any:
    return None if value is None else convert(value, what)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    return value


def _region(raw: Any) -> dict[str, Any]:
    region = _mapping(raw, "region")
    out: dict[str, Any] = {key: integer(region.get(key), f"region {key}") for key in _REGION_INTS}
    out["peak"] = number(region.get("peak"), "region peak")
    return out


def verdict_record(header: dict[str, Any]) -> dict[str, Any]:
    """The fields of a verdict header the dashboard shows, validated; raises ValueError otherwise.

    Latency stages are read generically (``/1`` has ``backbone``, ``/2`` calls it ``network``).
    """
    verdict = header.get("verdict")
    if verdict not in ("ok", "defect"):
        raise ValueError(f"verdict must be 'ok' or 'defect', got {text(verdict, 40)!r}")
    regions = header.get("regions")
    if not isinstance(regions, list):
        raise ValueError("regions must be a list")
    latency = _mapping(header.get("latency_ms", {}), "latency_ms")
    image = _mapping(header.get("image", {}), "image")
    heatmap = _mapping(header.get("heatmap"), "heatmap")
    return {
        "schema": text(header.get("schema"), 40),
        "seq": integer(header.get("seq"), "seq"),
        "source": name(header.get("source"), "source"),
        "runtime": optional(header.get("runtime"), name, "runtime"),
        "frame": integer(header.get("frame"), "frame"),
        "path": optional(header.get("path"), lambda v, _: text(v), "path"),
        "t_capture": optional(header.get("t_capture"), number, "t_capture"),
        "t_publish": optional(header.get("t_publish"), number, "t_publish"),
        "verdict": verdict,
        "score": number(header.get("score"), "score"),
        "raw_score": number(header.get("raw_score"), "raw_score"),
        "threshold": number(header.get("threshold"), "threshold"),
        "model": text(header.get("model", "")),
        "latency_ms": {text(k, 40): number(v, f"latency_ms.{k}") for k, v in list(latency.items())[:MAX_STAGES]},
        "image": {"width": integer(image.get("width", 0), "image width"),
                  "height": integer(image.get("height", 0), "image height")},
        "heatmap": {"width": integer(heatmap.get("width"), "heatmap width"),
                    "height": integer(heatmap.get("height"), "heatmap height"),
                    "encoding": text(heatmap.get("encoding"), 40)},
        "regions": [_region(r) for r in regions[:MAX_REGIONS]],
        "defect_type": optional(header.get("defect_type"), lambda v, _: text(v, 100), "defect_type"),
        "defect_similarity": optional(header.get("defect_similarity"), number, "defect_similarity"),
    }


def _source_status(raw: Any) -> dict[str, Any]:
    entry = _mapping(raw, "status source")
    out: dict[str, Any] = {key: integer(entry.get(key, 0), f"source {key}") for key in _SOURCE_STATUS_INTS}
    out["state"] = text(entry.get("state", "unknown"), 40)
    return out


def _event(raw: Any) -> dict[str, Any]:
    event = _mapping(raw, "status event")
    return {"kind": text(event.get("kind", ""), 40), "source": text(event.get("source", ""), MAX_NAME),
            "message": text(event.get("message", "")), "t": optional(event.get("t"), number, "event t")}


def status_record(header: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``status.<runtime>`` header the dashboard shows, validated."""
    sources = _mapping(header.get("sources", {}), "sources")
    events = header.get("events", [])
    if not isinstance(events, list):
        raise ValueError("events must be a list")
    return {
        "runtime": name(header.get("runtime"), "runtime"),
        "t_publish": optional(header.get("t_publish"), number, "t_publish"),
        "published": integer(header.get("published", 0), "published"),
        "subscribers": integer(header.get("subscribers", 0), "subscribers"),
        "fps": number(header.get("fps", 0.0), "fps"),
        "frames": integer(header.get("frames", 0), "frames"),
        "errors": integer(header.get("errors", 0), "errors"),
        "uptime_s": number(header.get("uptime_s", 0.0), "uptime_s"),
        "engine": text(header.get("engine", "")),
        "sources": {name(k, "status source name"): _source_status(v) for k, v in sources.items()},
        "events": [_event(e) for e in events[-MAX_STATUS_EVENTS:]],
    }


def image_type(data: bytes | None) -> str | None:
    """The media type the browser may be given for these bytes, from their magic number; None = unusable."""
    if data is None:
        return None
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    return None
