"""The anomaly map's blur and neighbours, chosen on val-clean's masks where the detector leaves them unset
(PatchCore).

A wider blur joins the patches of a large defect and hides a thin one, so the best sigma depends on the
product's defects: by val-clean PRO, capsule preferred sigma 4, transistor and magnetic tile 8, and
val-clean's first choice was test-clean's best on five of six data sets, its second on the sixth (README,
"Map blur"). The candidates start at the
default: below it the wire heatmap goes at full size (`runtime.postprocess.heatmap_stride`), ~4x the PNG
encoding (0.20 -> 0.78 ms per 256 px frame) for at most +0.002 PRO (bottle, sigma 2), so the choice never
makes the runtime slower. PatchCore's image score is the maximum patch score, before the blur, so choosing
the blur moves only the maps (regions, heatmaps, pixel metrics), never a verdict. Detectors whose image
score is the blurred map's maximum (PaDiM, the reconstruction detectors) keep a fixed sigma.

PatchCore's map may also average more than the nearest bank patch (`models.patchcore.model`): a smoother
density estimate that raised val-clean PRO on capsule and the long tiles and lowered it on bottle, so the
number of neighbours is chosen with the sigma, from the same unblurred val-clean maps, one pass for all counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from linewatch.metrics.pixel import pro_score
from linewatch.models.anomaly_map import blur_map

DEFAULT_SIGMA = 4.0  # anomalib's and the PatchCore paper's; kept where val-clean cannot decide
CANDIDATES = (4.0, 6.0, 8.0)
NEIGHBOURS = (1, 3, 5)  # PatchCore's map neighbours offered; 1 is the paper's, kept where val-clean cannot decide
MIN_REGIONS = 3  # fewer masked defects on val-clean than this: too few to choose by


def map_choice(detector_options: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[
        tuple[int | None, ...], tuple[float, ...]] | None:
    """What the final training chooses among, as (neighbour counts, sigmas), or None when both are pinned.

    Neighbours are offered where the detector has `map_knn` (PatchCore) and it is unset (`--map-knn`), else
    one count, None (the detector's own); sigmas where `blur_sigma` is unset, else the given one. Training
    scores each val-clean batch once per count (`train.pipeline`), and `--tune`'s budget reserves the kNN
    searches that adds to calibration's."""
    counts = NEIGHBOURS if "map_knn" in detector_options and options.get("map_knn") is None else (None,)
    sigma = options.get("blur_sigma")
    if sigma is not None and counts == (None,):
        return None
    return counts, CANDIDATES if sigma is None else (float(sigma),)


def choose_map(unblurred: Mapping[int | None, Sequence[np.ndarray]], masks: Sequence[np.ndarray | None],
               sigmas: Sequence[float] = CANDIDATES) -> tuple[int | None, float, dict[str, Any]]:
    """The (map neighbours, sigma) pair with the highest val-clean PRO (ties: fewer neighbours, then the
    smaller sigma) and the table.

    `unblurred` maps each candidate neighbour count (None for detectors without one) to val-clean's maps with
    sigma 0; `masks` are their ground truth at the map size (empty for good images, None for defects without a
    mask, which are left out). With too few masked defects: the first candidate and `DEFAULT_SIGMA` (or the
    only sigma offered)."""
    keep = [i for i, mask in enumerate(masks) if mask is not None]
    truth = [masks[i] for i in keep]
    defects = sum(bool(mask.any()) for mask in truth)
    first = min(unblurred, key=lambda k: k or 0)
    if defects < MIN_REGIONS:
        sigma = sigmas[0] if len(sigmas) == 1 else DEFAULT_SIGMA
        return first, sigma, {"method": "default", "reason": f"{defects} masked defects on val-clean", "pro": {},
                              **({"neighbours": first} if first is not None else {})}
    pro = {(k, sigma): pro_score(truth, [blur_map(maps[i], sigma) for i in keep])
           for k, maps in unblurred.items() for sigma in sigmas}
    best = max(pro.values())
    neighbours, sigma = min((key for key, value in pro.items() if value == best), key=lambda key: (key[0] or 0, key[1]))
    table: dict[str, Any] = {"method": "val-clean PRO", "masked_defects": defects,
                             "pro": {f"{s:g}": round(pro[neighbours, s], 4) for s in sigmas}}
    if neighbours is not None:
        table["neighbours"] = neighbours
        table["pro_by_neighbours"] = {str(k): {f"{s:g}": round(pro[k, s], 4) for s in sigmas} for k in unblurred}
    return neighbours, sigma, table
