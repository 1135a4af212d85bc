"""Nearest-neighbour search over a memory bank: FAISS (CPU, or GPU when faiss-gpu sees one) or torch on CUDA.

Never builds a full query x bank distance matrix on the CPU: FAISS searches in blocks. The torch path is
the CUDA fallback when faiss-gpu is missing; it chunks queries so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from linewatch.device import use_cuda

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf")
# FAISS's switch from its own SIMD scan to a BLAS matrix product (`distance_compute_blas_threshold`).
# faiss-cpu 1.15 ships 128,000, under which one frame of a 432-dim model (256 queries x 7.8k bank) took
# the SIMD scan: 152 ms on one core, against 27 ms through BLAS. 20, FAISS's long-standing value, sends
# every frame to BLAS.
BLAS_THRESHOLD = 20


def set_cpu_threads(threads: int) -> None:
    """FAISS's OpenMP threads for CPU search (process-wide).

    The runtime uses 1: its decode threads share the cores, and an OpenMP team whose member is preempted
    stalls at every barrier (bottle, 2 cores, batch 8: kNN 13.2 -> 8.6 ms/frame).
    """
    import faiss

    faiss.omp_set_num_threads(threads)


def faiss_gpu_count() -> int:
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def _cpu_index(bank: np.ndarray, index_type: str, seed: int):
    import faiss

    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    dims = bank.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatL2(dims)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dims, 32)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    elif index_type == "ivf":
        nlist = max(1, int(np.sqrt(len(bank))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dims), dims, nlist)  # faiss's wrapper keeps the quantizer alive
        index.cp.seed = seed
        index.train(bank)
        index.nprobe = min(nlist, max(4, nlist // 8))
    else:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {INDEX_TYPES}")
    index.add(bank)
    return index


class NearestNeighbours:
    """k nearest Euclidean distances from queries to a fixed bank."""

    def __init__(self, bank: np.ndarray, *, index_type: str = "flat", device: str = "cpu", seed: int = 0) -> None:
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.index_type = index_type
        self.backend = self._choose_backend(device)
        if self.backend == "torch-cuda":
            import torch

            self._bank_t = torch.from_numpy(self.bank).cuda()
            self._bank_sq = (self._bank_t * self._bank_t).sum(1)
        else:
            self.index = _cpu_index(self.bank, index_type, seed)
            if self.backend == "faiss-gpu":
                import faiss

                self.index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, self.index)
        log.info("kNN backend: %s (%s index, %d x %d bank)", self.backend, index_type, *self.bank.shape)

    def _choose_backend(self, device: str) -> str:
        """faiss-gpu for a flat index when it sees a GPU, else torch on CUDA, else FAISS on CPU."""
        if device in ("auto", "cuda") and self.index_type == "flat" and faiss_gpu_count() > 0:
            return "faiss-gpu"
        return "torch-cuda" if use_cuda(device) else "faiss-cpu"

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances (M, k) and bank indices (M, k), nearest first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.backend == "torch-cuda":
            return self._torch_search(queries, k)
        sq_dist, index = self.index.search(queries, k)
        return np.sqrt(np.maximum(sq_dist, 0.0)), index

    def _torch_search(self, queries: np.ndarray, k: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        import torch

        dists, indices = [], []
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[start : start + chunk]).cuda()
            sq = (q * q).sum(1, keepdim=True) - 2.0 * q @ self._bank_t.T + self._bank_sq
            values, idx = torch.topk(sq, k, dim=1, largest=False)
            dists.append(values.clamp_min(0).sqrt().cpu().numpy())
            indices.append(idx.cpu().numpy())
        return np.concatenate(dists), np.concatenate(indices)


class RememberedSearches:
    """A `NearestNeighbours` that keeps its results by query content, so passes that search the same patches
    again cost no search: training scores val-clean with 1, 3 and 5 map neighbours, then calibrates with the
    chosen count. A request is served by a kept search of the same k or, from the exact (flat) index, of a
    larger k when both exceed 1: those are the same distances, bit for bit, while FAISS's one-neighbour
    search rounds its own way (up to ~1e-6), so k = 1 is kept apart. Results beyond `limit_bytes` are not kept."""

    def __init__(self, knn: NearestNeighbours | RememberedSearches, limit_bytes: int) -> None:
        self.knn, self.limit_bytes, self.index_type = knn, limit_bytes, knn.index_type
        self.kept: dict[tuple[tuple[int, ...], bytes], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self.kept_bytes = self.searches = 0

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        key = (queries.shape, hashlib.blake2b(queries.tobytes(), digest_size=16).digest())
        for stored, (distances, indices) in self.kept.get(key, {}).items():
            if stored == k or (self.index_type == "flat" and 1 < k <= stored):
                return distances[:, :k], indices[:, :k]
        self.searches += 1
        found = self.knn.search(queries, k)
        size = found[0].nbytes + found[1].nbytes
        if self.kept_bytes + size <= self.limit_bytes:
            self.kept.setdefault(key, {})[k] = found
            self.kept_bytes += size
        return found
