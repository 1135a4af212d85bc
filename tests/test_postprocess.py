from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.runtime.messages import (
    STATUS_SCHEMA,
    VERDICT_SCHEMA,
    build_header,
    encode_json,
    parse_message,
)
from linewatch.runtime.postprocess import (
    Region,
    decode_heatmap,
    encode_frame_jpeg,
    encode_heatmap,
    find_regions,
    heatmap_stride,
)

NORM = ScoreNormalizer(threshold=1.0, low=0.0, high=4.0)


@pytest.fixture
def two_blobs() -> np.ndarray:
    amap = np.zeros((64, 64), dtype=np.float32)
    amap[10:20, 10:20] = 2.0
    amap[12, 15] = 3.0
    amap[40:45, 30:50] = 1.5
    return amap


def _header(raw: float, regions: list[Region] | None = None, **overrides: object) -> dict:
    _, meta = encode_heatmap(np.zeros((8, 8), dtype=np.float32), NORM)
    kwargs = dict(
        seq=None,
        source="cam0",
        frame=7,
        path=None,
        t_capture=1.0,
        t_publish=None,
        raw_score=raw,
        normalizer=NORM,
        model="patchcore-bottle@abc",
        latency_ms={"infer": 10.0, "post": 2.5},
        heatmap_meta=meta,
        regions=regions or [],
        frame_shape=(480, 640, 3),
    )
    kwargs.update(overrides)
    return build_header(**kwargs)


def test_regions_scaled_to_frame_and_sorted_by_peak(two_blobs: np.ndarray) -> None:
    regions = find_regions(two_blobs, threshold=1.0, frame_shape=(128, 256), normalizer=NORM)
    assert regions == [
        Region(x=40, y=20, width=40, height=20, area=800, peak=1.0),
        Region(x=120, y=80, width=80, height=10, area=800, peak=pytest.approx(0.625)),
    ]
    assert regions[0].to_dict() == {"x": 40, "y": 20, "width": 40, "height": 20, "area": 800, "peak": 1.0}


def test_regions_threshold_is_inclusive_and_8_connected() -> None:
    amap = np.zeros((10, 10), dtype=np.float32)
    amap[2, 2] = amap[3, 3] = 1.0  # diagonal neighbours exactly at the threshold
    regions = find_regions(amap, threshold=1.0, frame_shape=(10, 10), normalizer=NORM)
    assert regions == [Region(x=2, y=2, width=2, height=2, area=2, peak=0.5)]


def test_regions_min_area_max_regions_and_bounds(two_blobs: np.ndarray) -> None:
    assert find_regions(np.zeros((16, 16)), 1.0, (100, 100), NORM) == []
    big_only = find_regions(two_blobs, 1.0, (128, 256), NORM, min_area=900)
    assert big_only == []
    assert len(find_regions(two_blobs, 1.0, (128, 256), NORM, max_regions=1)) == 1
    odd = find_regions(two_blobs, 1.0, (100, 90), NORM)  # non-integer scale factors
    for r in odd:
        assert r.x >= 0 and r.y >= 0 and r.x + r.width <= 90 and r.y + r.height <= 100
    with pytest.raises(ValueError, match="anomaly_map"):
        find_regions(np.zeros((2, 3, 4)), 1.0, (10, 10), NORM)
    with pytest.raises(ValueError, match="NaN"):
        encode_heatmap(np.full((4, 4), np.nan), NORM)


def test_regions_of_blurred_random_maps_equal_scipy_labelling() -> None:
    """Regions (labelled on the box around the set pixels only) against scipy's 8-connected labelling of the
    whole map: the same boxes, areas and peaks, scaled to a frame of another shape."""
    rng = np.random.default_rng(7)
    frame = (200, 512)
    normalizer = ScoreNormalizer(threshold=4.5, low=0.0, high=9.0)
    for _ in range(20):
        amap = cv2.GaussianBlur(rng.random((160, 416)).astype(np.float32), (0, 0), 4) * 9.0
        threshold = float(np.quantile(amap, rng.uniform(0.9, 0.999)))
        labels, count = ndimage.label(amap >= threshold, structure=np.ones((3, 3)))
        sy, sx = frame[0] / 160, frame[1] / 416
        expected = []
        for label, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            x0, y0 = math.floor(cols.start * sx + 1e-9), math.floor(rows.start * sy + 1e-9)
            x1, y1 = math.ceil(cols.stop * sx - 1e-9), math.ceil(rows.stop * sy - 1e-9)
            area = max(1, round(int((labels == label).sum()) * sx * sy))
            peak = round(float(normalizer.normalize(float(amap[labels == label].max()))), 6)
            expected.append((x0, y0, x1 - x0, y1 - y0, area, peak))
        found = find_regions(amap, threshold, frame, normalizer, max_regions=256)
        assert count and sorted((r.x, r.y, r.width, r.height, r.area, round(r.peak, 6)) for r in found) == sorted(
            expected)


@pytest.mark.parametrize("shape", [(256, 256), (160, 416), (75, 51)])
def test_heatmap_at_the_blur_stride_keeps_the_whole_map(shape: tuple[int, int]) -> None:
    """A map blurred with sigma 4 goes on the wire at half size; brought back to full size (bilinear) it is the
    full-size heatmap within 2.5 of 255 levels (two roundings of 0.5 each plus the resampling), within 5 where
    the normalisation saturates (a kink the blur did not smooth), the threshold still at 128."""
    assert [heatmap_stride(s) for s in (0.0, 1.0, 3.9, 4.0, 6.0)] == [1, 1, 1, 2, 3]
    rng = np.random.default_rng(0)
    coarse_scores = rng.random((shape[0] // 8 + 1, shape[1] // 8 + 1)).astype(np.float32) * 4.0
    amap = cv2.GaussianBlur(cv2.resize(coarse_scores, shape[::-1], interpolation=cv2.INTER_LINEAR), (33, 33), 4.0)
    for normalizer, levels in ((ScoreNormalizer(threshold=2.0, low=-1.0, high=5.0), 2.5), (NORM, 5.0)):
        full = decode_heatmap(*encode_heatmap(amap, normalizer))
        data, meta = encode_heatmap(amap, normalizer, heatmap_stride(4.0))
        assert (meta["height"], meta["width"]) == (round(shape[0] / 2), round(shape[1] / 2))
        restored = cv2.resize(decode_heatmap(data, meta), shape[::-1], interpolation=cv2.INTER_LINEAR)
        assert np.abs(restored - full).max() <= levels / 255
    at_threshold = np.full((8, 8), NORM.threshold, np.float32)
    assert set(np.unique(decode_heatmap(*encode_heatmap(at_threshold, NORM, 2)) * 255).round()) == {128.0}
    with pytest.raises(ValueError, match="stride"):
        encode_heatmap(amap, NORM, 0)


def test_heatmap_round_trip_with_threshold_at_half(two_blobs: np.ndarray) -> None:
    amap = two_blobs.copy()
    amap[0, 0] = NORM.threshold
    data, meta = encode_heatmap(amap, NORM)
    assert meta == {
        "encoding": "png-u8",
        "width": 64,
        "height": 64,
        "scale": "normalised score * 255, 128 = threshold",
    }
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = decode_heatmap(data, meta)
    assert decoded.dtype == np.float32 and decoded.shape == (64, 64)
    np.testing.assert_allclose(decoded, NORM.normalize(amap), atol=0.5 / 255 + 1e-6)
    assert round(float(decoded[0, 0]) * 255) == 128
    assert decoded[0, 0] == pytest.approx(0.5, abs=1 / 255)
    with pytest.raises(ValueError, match="encoding"):
        decode_heatmap(data, {**meta, "encoding": "raw-u8"})
    with pytest.raises(ValueError, match="decode"):
        decode_heatmap(data, {**meta, "width": 32})


def test_frame_jpeg_decodes() -> None:
    image = np.zeros((48, 80, 3), dtype=np.uint8)
    image[..., 0] = 200  # red in RGB
    data = encode_frame_jpeg(image, quality=90)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (48, 80, 3)
    assert abs(int(bgr[..., 2].mean()) - 200) <= 3 and bgr[..., 0].mean() < 5
    with pytest.raises(ValueError):
        encode_frame_jpeg(np.zeros((4, 4), dtype=np.uint8))


def test_verdict_at_threshold_is_defect_and_score_half() -> None:
    at = _header(1.0)
    assert at["verdict"] == "defect" and at["score"] == 0.5
    below = _header(0.999)
    assert below["verdict"] == "ok" and below["score"] < 0.5
    above = _header(9.0)
    assert above["verdict"] == "defect" and above["score"] == 1.0 and above["raw_score"] == 9.0


def test_header_fields() -> None:
    region = Region(1, 2, 3, 4, 12, 0.75)
    header = _header(2.0, regions=[region], path="/data/a.png")
    assert header["schema"] == VERDICT_SCHEMA
    assert header["image"] == {"width": 640, "height": 480}
    assert header["threshold"] == 1.0 and header["model"] == "patchcore-bottle@abc"
    assert header["latency_ms"] == {"infer": 10.0, "post": 2.5, "total": 12.5}
    assert header["regions"] == [region.to_dict()]
    assert header["path"] == "/data/a.png" and header["frame"] == 7
    assert _header(2.0, latency_ms={"infer": 1.0, "total": 5.0})["latency_ms"]["total"] == 5.0
    with pytest.raises(ValueError, match="finite"):
        _header(math.nan)


def test_parse_message_validates() -> None:
    header = _header(2.0, seq=3, t_publish=2.0)
    parts = [b"verdict.cam0", encode_json(header), b"png"]
    topic, parsed, heatmap, frame = parse_message(parts)
    assert (topic, parsed, heatmap, frame) == ("verdict.cam0", header, b"png", None)
    assert parse_message([*parts, b"jpg"])[3] == b"jpg"
    status = parse_message([b"status.rt", json.dumps({"schema": STATUS_SCHEMA, "fps": 1.0}).encode()])
    assert status == ("status.rt", {"schema": STATUS_SCHEMA, "fps": 1.0}, None, None)
    assert parse_message([parts[0], encode_json({**header, "schema": "linewatch.verdict/1"}), b"png"])[1]["seq"] == 3
    bad_schema = encode_json({**header, "schema": "linewatch.verdict/3"})
    for bad, match in [
        ([b"verdict.cam0"], "at least"),
        ([b"verdict.cam0", b"{not json", b""], "JSON"),
        ([b"verdict.cam0", b"[1]", b""], "object"),
        ([b"verdict.cam0", bad_schema, b""], "schema"),
        ([b"verdict.cam1", encode_json(header), b""], "match"),
        ([b"verdict.cam0", encode_json(header)], "parts"),
        ([b"other.x", encode_json(header), b""], "topic"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_message(bad)
