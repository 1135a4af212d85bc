"""Coreset selection, kNN scoring and PatchCore bundle I/O."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from linewatch.models.anomaly_map import anomaly_maps, blur_kernel_size, resize_map
from linewatch.models.patchcore.coreset import coreset_steps, greedy_coreset
from linewatch.models.patchcore.knn import NearestNeighbours, RememberedSearches
from linewatch.models.patchcore.model import PatchCore, PatchCoreParams, flatten_patches


def test_coreset_picks_every_cluster_before_repeating() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 50
    points = np.concatenate([c + rng.normal(size=(200, 16)) for c in centres]).astype(np.float32)
    chosen = greedy_coreset(points, 5 / len(points), project_dims=8, seed=1)
    assert sorted(set(chosen // 200)) == [0, 1, 2, 3, 4]


def test_coreset_is_seeded_and_sized() -> None:
    points = np.random.default_rng(1).normal(size=(1000, 32)).astype(np.float32)
    a = greedy_coreset(points, 0.1, seed=4)
    assert len(a) == 100 and len(set(a.tolist())) == 100
    assert np.array_equal(a, greedy_coreset(points, 0.1, seed=4))
    assert len(greedy_coreset(points, 1.0)) == 1000
    with pytest.raises(ValueError, match="ratio"):
        greedy_coreset(points, 0.0)


def test_coreset_covers_better_than_random() -> None:
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.normal(size=(2000, 24)), rng.normal(size=(20, 24)) + 12]).astype(np.float32)
    chosen = greedy_coreset(points, 0.02)
    random = rng.choice(len(points), len(chosen), replace=False)
    cover = lambda idx: NearestNeighbours(points[idx]).search(points)[0].max()  # noqa: E731
    assert cover(chosen) < cover(random)


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf"])
def test_knn_matches_brute_force(index: str) -> None:
    rng = np.random.default_rng(3)
    bank, queries = rng.normal(size=(2000, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    dist, idx = NearestNeighbours(bank, index_type=index).search(queries, 2)
    brute = np.sqrt(((queries[:, None] - bank[None]) ** 2).sum(-1))
    expected = np.sort(brute, axis=1)[:, :2]
    if index == "flat":
        assert np.allclose(dist, expected, atol=1e-4)
        assert np.array_equal(idx[:, 0], brute.argmin(1))
    else:
        assert np.mean(np.isclose(dist[:, 0], expected[:, 0], atol=1e-4)) > 0.8


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_remembered_searches_answer_again_exactly_what_a_search_would(index: str) -> None:
    """Kept by content: the same queries at the same k cost no search; on the exact index a smaller k above one
    is the larger search's first columns, equal to its own search bit for bit; k = 1 (FAISS rounds it its own
    way) and an approximate index search again; other queries and results beyond the limit are searched."""
    rng = np.random.default_rng(4)
    bank, queries = rng.normal(size=(3000, 16)).astype(np.float32), rng.normal(size=(400, 16)).astype(np.float32)
    knn = NearestNeighbours(bank, index_type=index)
    memo = RememberedSearches(knn, limit_bytes=1 << 20)
    for k, searches in ((5, 1), (5, 1), (3, 1 if index == "flat" else 2), (1, 2 if index == "flat" else 3),
                        (1, 2 if index == "flat" else 3)):
        distances, indices = memo.search(queries.copy(), k)  # a copy: kept by content, not by object
        expected = knn.search(queries, k)
        assert np.array_equal(distances, expected[0]) and np.array_equal(indices, expected[1])
        assert memo.searches == searches, k
    memo.search(queries[:10], 5)
    assert memo.searches == (3 if index == "flat" else 4)
    small = RememberedSearches(knn, limit_bytes=0)
    small.search(queries, 5)
    small.search(queries, 5)
    assert small.searches == 2 and not small.kept


def test_flat_knn_takes_the_blas_path_for_one_frame_of_queries() -> None:
    import faiss

    from linewatch.models.patchcore.knn import BLAS_THRESHOLD

    rng = np.random.default_rng(4)
    bank, queries = rng.normal(size=(3000, 432)).astype(np.float32), rng.normal(size=(256, 432)).astype(np.float32)
    dist, idx = NearestNeighbours(bank).search(queries, 1)
    assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD < len(queries)
    brute = ((queries[:, None] - bank[None]) ** 2).sum(-1)
    assert np.array_equal(idx[:, 0], brute.argmin(1))
    assert np.allclose(dist[:, 0], np.sqrt(brute.min(1)), rtol=1e-4)


def test_knn_cuda_without_gpu_is_refused() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; this checks the CPU-only refusal")
    with pytest.raises(RuntimeError, match="GPU"):
        NearestNeighbours(np.zeros((4, 2), np.float32), device="cuda")


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, 6, 4, 4)).astype(np.float32)


def test_patchcore_scores_outliers_high_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(4)
    train = [_features(rng, 8), _features(rng, 8)]
    model = PatchCore.fit(iter(train), PatchCoreParams(coreset_ratio=0.5))
    assert model.memory_bank.shape == (128, 6)
    test = _features(rng, 2)
    test[1, :, 2, 2] += 10
    patch = model.patch_scores({"features": test})
    assert patch.map.shape == patch.image.shape == (2, 4, 4) and patch.image[1].argmax() == 2 * 4 + 2
    scores = model.image_scores(patch.image, anomaly_maps(patch.map, (16, 16), 1.0), {"features": test})
    assert scores[1] > scores[0]
    section, files = model.save(tmp_path)
    loaded = PatchCore.load(tmp_path, section)
    assert files == ["memory_bank.npy"] and section["map_k"] == 1
    again = loaded.patch_scores({"features": test})
    assert np.array_equal(again.map, patch.map) and np.array_equal(again.image, patch.image)


def test_map_averages_map_k_neighbours_and_image_score_reads_k_from_one_search() -> None:
    """Against brute force: the map is the mean distance to the 3 nearest bank patches, the image score's
    patches the distance to the nearest one."""
    rng = np.random.default_rng(7)
    bank = rng.normal(size=(40, 6)).astype(np.float32)
    test = _features(rng, 2)
    model = PatchCore(bank, PatchCoreParams(k=1)).with_map_k(3)
    patch = model.patch_scores({"features": test})
    dists = np.sort(np.linalg.norm(flatten_patches(test)[:, None] - bank[None], axis=2), axis=1)
    assert np.allclose(patch.image.ravel(), dists[:, 0], rtol=1e-4)
    assert np.allclose(patch.map.ravel(), dists[:, :3].mean(axis=1), rtol=1e-4)
    assert (patch.map >= patch.image - 1e-5).all() and not np.allclose(patch.map, patch.image)
    single = PatchCore(bank, PatchCoreParams(k=2, map_k=2)).patch_scores({"features": test})
    assert single.map is single.image and np.allclose(single.image.ravel(), dists[:, :2].mean(axis=1), rtol=1e-4)


def test_map_k_beyond_the_bank_averages_what_the_bank_holds() -> None:
    """A bank smaller than map_k (a tiny product, a quick run): FAISS pads missing neighbours with -1 and a
    huge distance; the map averages the bank's patches instead."""
    bank = np.array([[0.0, 0], [3.0, 4.0]], np.float32)
    features = np.zeros((1, 2, 1, 1), np.float32)
    patch = PatchCore(bank, PatchCoreParams(map_k=5)).patch_scores({"features": features})
    assert patch.map[0, 0, 0] == pytest.approx(2.5) and patch.image[0, 0, 0] == pytest.approx(0.0)


def test_bundles_from_before_map_k_keep_one_k_for_map_and_image(tmp_path) -> None:
    rng = np.random.default_rng(8)
    model = PatchCore(rng.normal(size=(30, 6)).astype(np.float32), PatchCoreParams(k=2))
    section, _ = model.save(tmp_path)
    del section["map_k"]
    old = PatchCore.load(tmp_path, section)
    assert old.params.map_k == 2
    patch = old.patch_scores({"features": _features(rng, 1)})
    assert patch.map is patch.image


def test_patches_with_non_finite_features_score_nan_instead_of_a_saturated_distance() -> None:
    rng = np.random.default_rng(6)
    model = PatchCore.fit(iter([_features(rng, 4)]), PatchCoreParams(coreset_ratio=0.5))
    test = _features(rng, 2)
    test[0, 3, 1, 2] = np.inf
    test[1, 0, 0, 0] = np.nan
    for patch in model.patch_scores({"features": test}):
        assert np.isnan(patch[0, 1, 2]) and np.isnan(patch[1, 0, 0]) and np.isfinite(patch).sum() == patch.size - 2


def test_patchcore_memory_bank_is_a_subset_of_training_patches() -> None:
    rng = np.random.default_rng(5)
    batch = _features(rng, 4)
    model = PatchCore.fit(iter([batch]), PatchCoreParams(coreset_ratio=0.25))
    rows = {tuple(r) for r in flatten_patches(batch)}
    assert all(tuple(r) in rows for r in model.memory_bank)


def test_reweighting_downweights_patches_in_dense_neighbourhoods() -> None:
    """Eq. 7: equally distant test patches score lower near a dense part of the bank than near a lone patch.

    Bank: a tight cluster of 20 patches around 0, and a lone patch at (10, 0, 0, 0) whose nearest other bank
    patches are 5 away. Each test image holds one patch 0.5 from the cluster (A) or from the lone patch (B);
    its other patches are bank patches. With b = 3 neighbours, A's weight is ~1 - 1/3 (its three neighbours are
    about as far as its nearest one) and B's is ~1 (its other two neighbours are ~10x farther).
    """
    rng = np.random.default_rng(6)
    cluster = rng.normal(scale=0.01, size=(20, 4))
    lone = np.array([[10.0, 0, 0, 0]])
    far = np.array([[10.0, 5, 0, 0], [10.0, -5, 0, 0], [10.0, 0, 5, 0]])
    bank = np.concatenate([cluster, lone, far]).astype(np.float32)
    model = PatchCore(bank, PatchCoreParams(reweight=True, reweight_neighbours=3))
    offset = np.array([0, 0, 0, 0.5])
    images = np.stack([np.stack([cluster[0] + offset, cluster[1], cluster[2], far[0]]),
                       np.stack([lone[0] + offset, cluster[1], cluster[2], far[0]])]).astype(np.float32)
    features = images.reshape(2, 2, 2, 4).transpose(0, 3, 1, 2)  # (N, C, h, w), patch 0 at the top left
    patch = model.patch_scores({"features": features}).image
    assert patch[:, 0, 0] == pytest.approx([0.5, 0.5], abs=0.03) and patch.reshape(2, -1)[:, 1:].max() < 2e-3
    weighted = model.image_scores(patch, anomaly_maps(patch, (4, 4), 0), {"features": features})
    dense, sparse = weighted / patch.reshape(2, -1).max(axis=1)
    assert dense == pytest.approx(2 / 3, abs=0.01)
    assert sparse == pytest.approx(1.0, abs=0.01) and sparse > dense + 0.3


def test_anomaly_map_upsamples_and_blurs() -> None:
    patch = np.zeros((1, 4, 4), np.float32)
    patch[0, 1, 1] = 1.0
    maps = anomaly_maps(patch, (32, 32), sigma=2.0)
    assert maps.shape == (1, 32, 32)
    assert np.unravel_index(maps[0].argmax(), (32, 32)) in {(11, 11), (12, 12), (11, 12), (12, 11)}
    assert maps[0].max() < 1.0
    assert blur_kernel_size(4.0) == 33
    assert resize_map(maps[0], (10, 20)).shape == (10, 20)


@pytest.mark.parametrize(("grid", "size", "sigma"), [((4, 4), (32, 32), 2.0), ((10, 26), (160, 416), 4.0),
                                                     ((8, 8), (64, 64), 0.0), ((32, 32), (32, 32), 4.0)])
def test_anomaly_maps_equal_upsampling_then_blurring(grid: tuple[int, int], size: tuple[int, int],
                                                     sigma: float) -> None:
    """The separable-matrix path (patch grids) and the direct path (full-size maps) both equal cv2's bilinear
    upsampling followed by its 2-D Gaussian blur, the definition the maps had before the matrices."""
    patch = np.random.default_rng(3).gamma(2.0, size=(2, *grid)).astype(np.float32)
    maps = anomaly_maps(patch, size, sigma)
    ksize = blur_kernel_size(sigma)
    for got, one in zip(maps, patch, strict=True):
        up = cv2.resize(one, size[::-1], interpolation=cv2.INTER_LINEAR)
        want = cv2.GaussianBlur(up, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT) if sigma else up
        assert got.dtype == np.float32 and got.shape == size
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(np.abs(want).max()))


def test_two_stage_coreset_keeps_rare_clusters_and_reports_its_steps() -> None:
    rng = np.random.default_rng(7)
    common = rng.normal(size=(6000, 16))
    rare = rng.normal(size=(12, 16)) * 0.1 + 25  # 0.2% of the data, far away
    points = np.concatenate([common, rare]).astype(np.float32)
    steps: list[int] = []
    chosen = greedy_coreset(points, 0.01, block_size=1000, progress=steps.append)
    assert len(chosen) == 60 and len(set(chosen.tolist())) == 60
    assert any(index >= 6000 for index in chosen)
    assert len(steps) == coreset_steps(len(points), 0.01, block_size=1000) > 60
