"""The verdict/status wire format: one place that builds, serialises and validates message headers.

Headers are strict JSON (no NaN/Infinity) so subscribers in any language can parse them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.runtime.message_check import MessageError, check_verdict_fields
from linewatch.runtime.postprocess import Region

VERDICT_SCHEMA = "linewatch.verdict/2"
# Subscribers still read version 1 (its latency stage `network` was called `backbone`; nothing else differs).
READABLE_VERDICT_SCHEMAS = (VERDICT_SCHEMA, "linewatch.verdict/1")
STATUS_SCHEMA = "linewatch.status/1"
VERDICT_PREFIX = "verdict."
STATUS_PREFIX = "status."
_VERDICT_KEYS = ("seq", "source", "frame", "verdict", "score", "raw_score", "threshold", "image", "heatmap", "regions")


def encode_json(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; the publisher and the journal use it so both hold identical text."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def verdict_topic(source: str) -> str:
    return f"{VERDICT_PREFIX}{source}"


def build_header(
    *,
    seq: int | None,
    source: str,
    runtime: str | None = None,
    frame: int,
    path: str | None,
    t_capture: float,
    t_publish: float | None,
    raw_score: float,
    normalizer: ScoreNormalizer,
    model: str,
    latency_ms: dict[str, float],
    heatmap_meta: dict[str, Any],
    regions: list[Region],
    frame_shape: tuple[int, ...],
) -> dict[str, Any]:
    """Verdict header; ``seq``/``t_publish`` may be None because the publisher stamps them.

    ``latency_ms`` gets a ``total`` (sum of the stages) when the caller did not measure one. ``runtime``
    names the publishing runtime (as in ``status.<runtime>``), so subscribers can keep runtimes apart.
    """
    raw = float(raw_score)
    if not math.isfinite(raw):
        raise ValueError(f"raw_score must be finite, got {raw_score!r} (source {source!r}, frame {frame})")
    latency = {str(k): round(float(v), 3) for k, v in latency_ms.items()}
    latency.setdefault("total", round(sum(latency.values()), 3))
    return {
        "schema": VERDICT_SCHEMA,
        "seq": seq,
        "source": source,
        "runtime": runtime,
        "frame": int(frame),
        "path": path,
        "t_capture": float(t_capture),
        "t_publish": t_publish,
        "verdict": "defect" if raw >= normalizer.threshold else "ok",
        "score": float(normalizer.normalize(raw)),
        "raw_score": raw,
        "threshold": float(normalizer.threshold),
        "model": model,
        "latency_ms": latency,
        "image": {"width": int(frame_shape[1]), "height": int(frame_shape[0])},
        "heatmap": dict(heatmap_meta),
        "regions": [region.to_dict() for region in regions],
    }


def _check_header(topic: str, header: dict[str, Any], n_parts: int) -> bool:
    """Raise on anything a subscriber could not rely on; True for verdicts, False for status."""
    schema = header.get("schema")
    if topic.startswith(STATUS_PREFIX):
        if schema != STATUS_SCHEMA:
            raise MessageError(f"status message on {topic!r} has schema {schema!r}; expected {STATUS_SCHEMA!r}")
        return False
    if not topic.startswith(VERDICT_PREFIX):
        raise MessageError(f"unknown topic {topic!r}; expected {VERDICT_PREFIX!r}* or {STATUS_PREFIX!r}*")
    if schema not in READABLE_VERDICT_SCHEMAS:
        raise MessageError(f"verdict message on {topic!r} has schema {schema!r}; expected one of "
                           f"{', '.join(READABLE_VERDICT_SCHEMAS)}")
    if n_parts not in (3, 4):
        raise MessageError(f"verdict message must have 3 or 4 parts, got {n_parts}")
    missing = [key for key in _VERDICT_KEYS if key not in header]
    if missing:
        raise MessageError(f"verdict header on {topic!r} lacks {missing}")
    if topic != verdict_topic(str(header["source"])):
        raise MessageError(f"topic {topic!r} does not match source {header['source']!r}")
    check_verdict_fields(header)
    return True


def parse_message(parts: list[bytes]) -> tuple[str, dict[str, Any], bytes | None, bytes | None]:
    """Multipart message -> (topic, header, heatmap, frame); status messages have neither binary part."""
    if len(parts) < 2:
        raise MessageError(f"message needs at least [topic, header], got {len(parts)} part(s)")
    try:
        topic = bytes(parts[0]).decode("utf-8")
        header = json.loads(bytes(parts[1]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a 5000-digit number, nesting too deep
        raise MessageError(f"message topic/header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageError(f"message header must be a JSON object, got {type(header).__name__}")
    if not _check_header(topic, header, len(parts)):
        return topic, header, None, None
    heatmap = bytes(parts[2])
    frame = bytes(parts[3]) if len(parts) > 3 else None
    return topic, header, heatmap, frame
