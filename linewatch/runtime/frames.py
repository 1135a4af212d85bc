"""The unit of work flowing through the runtime: one decoded frame and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    source: str  # source name, e.g. "camera0" or "folder"
    index: int  # frame index within its source, from 0
    image: np.ndarray  # RGB uint8 HxWx3
    t_capture: float  # unix seconds when the frame was read
    path: str | None = None  # file sources: the file, as given
    decode_ms: float = 0.0
    inputs: np.ndarray | None = None  # the model input (CHW float32), prepared in the source's thread
    warp: np.ndarray | None = None  # alignment warp of the input (maps are moved back with it), if aligned
    preprocess_ms: float = 0.0  # CPU time of `inputs` in the source's thread (`SourceRunner._push` says why)
    timings: dict[str, float] = field(default_factory=dict)  # per-stage milliseconds, filled downstream
