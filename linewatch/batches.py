"""Decode and preprocess images in background threads so decoding overlaps with the backbone.

OpenCV releases the GIL while decoding and resizing, so a small thread pool keeps the next batch
ready while the current one runs through the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from linewatch.data import Sample, read_image
from linewatch.features.preprocess import Preprocessor


@dataclass(frozen=True)
class Batch:
    samples: list[Sample]
    images: list[np.ndarray]  # original RGB uint8, for metrics at full resolution and overlays
    inputs: np.ndarray  # (N, 3, H, W) float32, ready for the feature extractor
    warps: list[np.ndarray | None]  # per image: the alignment warp (None without alignment)


Transform = Callable[[np.ndarray, Sample], np.ndarray]  # decoded image, its sample -> the image to preprocess


def _load(sample: Sample, preprocessor: Preprocessor,
          transform: Transform | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image = read_image(sample.path)
    if transform is not None:
        image = transform(image, sample)
    return image, *preprocessor.prepare(image)


def iter_batches(
    samples: Sequence[Sample], preprocessor: Preprocessor, batch_size: int, workers: int = 2,
    transform: Transform | None = None,
) -> Iterator[Batch]:
    """Yield batches in order; the next batch is decoded while the caller works on this one. `transform`
    changes each decoded image before preprocessing (training's photometric copies, `data.augment`)."""
    chunks = [list(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.map(_load, chunk, [preprocessor] * len(chunk), [transform] * len(chunk))
                   for chunk in chunks[:1]]
        for index, chunk in enumerate(chunks):
            if index + 1 < len(chunks):
                following = chunks[index + 1]
                pending.append(pool.map(_load, following, [preprocessor] * len(following),
                                        [transform] * len(following)))
            loaded = list(pending.pop(0))
            yield Batch(chunk, [image for image, _, _ in loaded], np.stack([x for _, x, _ in loaded]),
                        [warp for _, _, warp in loaded])
