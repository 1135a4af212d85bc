"""Heatmap overlays with OpenCV only, so the runtime can save them without importing matplotlib."""

from __future__ import annotations

import cv2
import numpy as np


def overlay_heatmap(
    image_rgb: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5
) -> np.ndarray:
    """Blend a JET-coloured anomaly map over an RGB uint8 image; returns HxWx3 uint8 RGB.

    ``vmin``/``vmax`` are fixed by the caller (not per image) so colours compare across images.
    The map is resized to the image if the model worked at a lower resolution.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image_rgb must be HxWx3 uint8, got {image_rgb.shape} {image_rgb.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image_rgb.shape[:2]
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape != (height, width):
        amap = cv2.resize(amap, (width, height), interpolation=cv2.INTER_LINEAR)
    span = vmax - vmin if vmax > vmin else 1.0
    level = np.clip((amap - vmin) / span, 0.0, 1.0)
    heat_bgr = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat_rgb = cv2.cvtColor(heat_bgr, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image_rgb, 1.0 - alpha, heat_rgb, alpha, 0.0)
