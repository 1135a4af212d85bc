"""PatchCore detector (Roth et al., CVPR 2022): fit = coreset of training patches; score = kNN distance.

The image score is the paper's: the largest distance of a patch to its nearest bank patch. The map may
average the `map_k` nearest instead: with a 1% coreset one neighbour's distance is a noisy density
estimate, and on textured or faint-defect products the noise lights up good patches (capsule, magnetic
tile's long tiles), while on others it costs sharpness (bottle). Training chooses `map_k` on val-clean
with the blur (`linewatch.train.blur`); one search serves both scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.models.base import PatchScores
from linewatch.models.patchcore.knn import INDEX_TYPES, NearestNeighbours, RememberedSearches

BANK_FILE = "memory_bank.npy"
LARGE_BANK = 40_000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchCoreParams:
    coreset_ratio: float = 0.01
    coreset_dims: int = 128
    k: int = 1
    map_k: int = 1
    index: str = "flat"
    reweight: bool = False
    reweight_neighbours: int = 9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.index not in INDEX_TYPES:
            raise ValueError(f"unknown index {self.index!r}; choose one of {INDEX_TYPES}")
        if self.k < 1 or self.map_k < 1:
            raise ValueError("k and map_k must be >= 1")


def flatten_patches(features: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N*h*w, C) rows, one per patch."""
    n, c, h, w = features.shape
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(n * h * w, c), dtype=np.float32)


class PatchCore:
    kind = "patchcore"
    scores_from_maps = False

    def __init__(self, memory_bank: np.ndarray, params: PatchCoreParams, device: str = "cpu",
                 knn: NearestNeighbours | RememberedSearches | None = None) -> None:
        """`knn`: an index already built over `memory_bank` (`with_map_k` shares it)."""
        self.memory_bank = np.ascontiguousarray(memory_bank, dtype=np.float32)
        self.params = params
        self.knn = knn or NearestNeighbours(self.memory_bank, index_type=params.index, device=device, seed=params.seed)

    @classmethod
    def fit(
        cls,
        feature_batches: Iterable[np.ndarray],
        params: PatchCoreParams,
        *,
        progress: Callable[[int, str], Callable[[int], None]] | None = None,
        device: str = "cpu",
    ) -> PatchCore:
        """Collect every training patch, then keep a greedy coreset of `coreset_ratio` of them."""
        from linewatch.models.patchcore.coreset import coreset_steps, greedy_coreset

        patches = np.concatenate([flatten_patches(batch) for batch in feature_batches])
        bank = len(patches) * params.coreset_ratio
        if bank > LARGE_BANK:
            log.warning("a %.0f-patch memory bank (%d patches x %.0f%%) makes coreset selection and scoring slow "
                        "(both grow with the bank); consider a smaller --coreset-ratio (see the README's trade-off "
                        "table)", bank, len(patches), 100 * params.coreset_ratio)
        step = progress(coreset_steps(len(patches), params.coreset_ratio), "coreset") if progress else None
        keep = greedy_coreset(
            patches, params.coreset_ratio, project_dims=params.coreset_dims, seed=params.seed, progress=step
        )
        return cls(patches[np.sort(keep)], params, device=device)

    def patch_scores(self, outputs: dict[str, np.ndarray]) -> PatchScores:
        """Mean distance to the `map_k` nearest bank patches (the map) and to the `k` nearest (the image
        score), from one search. A patch whose features are not finite scores NaN: FAISS would return a huge
        finite distance for it (1.8e19 for +inf), hiding a broken network from the checks that refuse
        non-finite scores (export, evaluation, the runtime's heatmap)."""
        features = outputs["features"]
        n, _, h, w = features.shape
        queries = flatten_patches(features)
        k, map_k = (min(value, len(self.memory_bank)) for value in (self.params.k, self.params.map_k))
        distances, _ = self.knn.search(queries, max(k, map_k))
        finite = np.isfinite(queries).all(axis=1)

        def mean_of(count: int) -> np.ndarray:
            scores = distances[:, :count].mean(axis=1)
            scores[~finite] = np.nan
            return scores.reshape(n, h, w).astype(np.float32)

        image = mean_of(k)
        return PatchScores(map=image if map_k == k else mean_of(map_k), image=image)

    def with_map_k(self, map_k: int) -> PatchCore:
        """The same bank and index, averaging `map_k` neighbours for the map (the map choice's candidates)."""
        return PatchCore(self.memory_bank, replace(self.params, map_k=map_k), knn=self.knn)

    def remembering(self, limit_bytes: int) -> PatchCore:
        """The same bank and index, keeping its searches (`RememberedSearches`) for passes over the same images;
        `with_map_k` of it shares them."""
        return PatchCore(self.memory_bank, self.params, knn=RememberedSearches(self.knn, limit_bytes))

    def image_scores(self, patch_scores: np.ndarray, maps: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Max patch score; with `reweight`, scaled by the paper's neighbourhood-density weight (eq. 7)."""
        flat = patch_scores.reshape(len(patch_scores), -1)
        scores = flat.max(axis=1)
        if not self.params.reweight:
            return scores
        patches = flatten_patches(outputs["features"]).reshape(len(flat), flat.shape[1], -1)
        worst = patches[np.arange(len(flat)), flat.argmax(axis=1)]
        _, nearest = self.knn.search(worst, 1)
        _, neighbourhood = self.knn.search(self.memory_bank[nearest[:, 0]], self.params.reweight_neighbours)
        dists = np.linalg.norm(self.memory_bank[neighbourhood] - worst[:, None, :], axis=2)
        dists = dists - dists.max(axis=1, keepdims=True)
        weight = 1.0 - np.exp(dists[:, 0]) / np.exp(dists).sum(axis=1)
        return (weight * scores).astype(np.float32)

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        np.save(Path(directory) / BANK_FILE, self.memory_bank, allow_pickle=False)
        section = {"kind": self.kind, "memory_bank": BANK_FILE, "bank_shape": list(self.memory_bank.shape),
                   **asdict(self.params)}
        return section, [BANK_FILE]

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any], device: str = "cpu") -> PatchCore:
        bank = np.load(Path(directory) / section["memory_bank"], allow_pickle=False)
        fields = PatchCoreParams.__dataclass_fields__
        params = PatchCoreParams(**{k: v for k, v in section.items() if k in fields})
        if "map_k" not in section:  # bundles from before map_k: one k for the map and the image score
            params = replace(params, map_k=params.k)
        return cls(bank, params, device=device)
