"""The anomaly map's blur, chosen on val-clean's masks where the detector leaves it unset (PatchCore).

A wider blur joins the patches of a large defect and hides a thin one, so the best sigma depends on the
product's defects: by val-clean PRO, capsule preferred sigma 4, transistor and magnetic tile 8, and
val-clean's first choice was test-clean's best on five of six data sets, its second on the sixth (README,
"Map blur"). The candidates start at the
default: below it the wire heatmap goes at full size (`runtime.postprocess.heatmap_stride`), ~4x the PNG
encoding (0.20 -> 0.78 ms per 256 px frame) for at most +0.002 PRO (bottle, sigma 2), so the choice never
makes the runtime slower. PatchCore's image score is the maximum patch score, before the blur, so choosing
the blur moves only the maps (regions, heatmaps, pixel metrics), never a verdict. Detectors whose image
score is the blurred map's maximum (PaDiM, the reconstruction detectors) keep a fixed sigma.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from linewatch.metrics.pixel import pro_score
from linewatch.models.anomaly_map import blur_map

DEFAULT_SIGMA = 4.0  # anomalib's and the PatchCore paper's; kept where val-clean cannot decide
CANDIDATES = (4.0, 6.0, 8.0)
MIN_REGIONS = 3  # fewer masked defects on val-clean than this: too few to choose by


def choose_sigma(unblurred: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> tuple[float, dict[str, Any]]:
    """The candidate sigma with the highest val-clean PRO (ties: the smallest) and the table.

    `unblurred` are val-clean's maps with sigma 0, `masks` their ground truth at the map size (empty for good
    images, None for defects without a mask, which are left out)."""
    pairs = [(mask, amap) for mask, amap in zip(masks, unblurred, strict=True) if mask is not None]
    defects = sum(bool(mask.any()) for mask, _ in pairs)
    if defects < MIN_REGIONS:
        return DEFAULT_SIGMA, {"method": "default", "reason": f"{defects} masked defects on val-clean", "pro": {}}
    truth = [mask for mask, _ in pairs]
    pro = {sigma: pro_score(truth, [blur_map(amap, sigma) for _, amap in pairs]) for sigma in CANDIDATES}
    best = max(pro.values())
    chosen = min(s for s, value in pro.items() if value == best)
    return chosen, {"method": "val-clean PRO", "masked_defects": defects,
                    "pro": {f"{sigma:g}": round(value, 4) for sigma, value in pro.items()}}
