"""The map blur and neighbours PatchCore chooses on val-clean's masks (`linewatch.train.blur`) and where they go."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.bundle import read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.inspector import Inspector
from linewatch.models.anomaly_map import anomaly_maps, blur_map
from linewatch.train.blur import CANDIDATES, DEFAULT_SIGMA, NEIGHBOURS, choose_map
from linewatch.train.cli import main as train_main

SIZE = 64


def val_set(defect: np.ndarray, rng: np.random.Generator, noise: str, amplitude: float = 1.0,
            n: int = 8) -> tuple[list, list]:
    """(maps, masks): n good and n defective unblurred maps, the defect raised by `amplitude` over noise of unit
    spread, either independent per pixel (`fine`, which a wide blur averages away) or smooth (`coarse`, which
    it does not)."""
    masks, maps = [], []
    for label in (0, 1):
        for _ in range(n):
            field = rng.normal(size=(SIZE, SIZE)).astype(np.float32)
            if noise == "coarse":
                field = blur_map(field, 3.0)
                field /= field.std()
            mask = defect if label else np.zeros_like(defect)
            masks.append(mask)
            maps.append(field + amplitude * mask)
    return maps, masks


def test_a_faint_large_defect_in_fine_noise_gets_the_widest_blur_and_a_thin_one_the_narrowest() -> None:
    rng = np.random.default_rng(0)
    blob = np.zeros((SIZE, SIZE), bool)
    blob[16:48, 16:48] = True
    line = np.zeros((SIZE, SIZE), bool)
    line[:, 31] = True
    maps, masks = val_set(blob, rng, "fine", amplitude=0.3)
    none, wide, table = choose_map({None: maps}, masks)
    maps, masks = val_set(line, rng, "coarse")
    _, narrow, _ = choose_map({None: maps}, masks)
    assert wide == max(CANDIDATES) and narrow == min(CANDIDATES) and none is None
    assert table["method"] == "val-clean PRO" and set(table["pro"]) == {f"{s:g}" for s in CANDIDATES}
    assert "neighbours" not in table
    assert table["pro"]["8"] > table["pro"]["4"]


def test_too_few_masked_defects_keep_the_default() -> None:
    rng = np.random.default_rng(1)
    maps, masks = val_set(np.eye(SIZE, dtype=bool), rng, "fine", n=2)
    masks[-1] = None  # a defect without a mask is left out
    neighbours, sigma, table = choose_map({1: maps, 3: maps}, masks)
    assert sigma == DEFAULT_SIGMA and table["method"] == "default" and "1 masked defects" in table["reason"]
    assert neighbours == table["neighbours"] == 1
    assert choose_map({None: maps}, masks, sigmas=(5.0,))[1] == 5.0


def test_neighbours_are_chosen_with_the_sigma_and_ties_keep_the_fewest() -> None:
    """Three candidates' maps: noisier for one neighbour (a single distance), smoother for more; the faint
    large defect is found best by the smoothest. Identical maps tie, and the tie keeps the fewest."""
    rng = np.random.default_rng(3)
    blob = np.zeros((SIZE, SIZE), bool)
    blob[20:44, 20:44] = True
    maps, masks = val_set(blob, rng, "fine", amplitude=0.4)
    smooth = [m + 0.0 for m in maps]
    for m, mask in zip(smooth, masks, strict=True):
        m -= 0.6 * (m - 0.4 * mask)  # the same defect over less noise
    neighbours, sigma, table = choose_map({1: maps, 3: smooth, 5: smooth}, masks, sigmas=(4.0,))
    assert (neighbours, sigma) == (3, 4.0) and table["neighbours"] == 3
    assert table["pro_by_neighbours"]["3"]["4"] > table["pro_by_neighbours"]["1"]["4"]
    assert table["pro"] == table["pro_by_neighbours"]["3"]


@pytest.mark.parametrize("sigma", CANDIDATES)
def test_blurring_the_unblurred_map_is_the_map_at_that_sigma(sigma: float) -> None:
    """The choice blurs sigma-0 maps; the runtime blurs through `anomaly_maps`: the same map."""
    patches = np.random.default_rng(2).random((2, 12, 20)).astype(np.float32)
    direct = anomaly_maps(patches, (96, 160), sigma)
    via = np.stack([blur_map(m, sigma) for m in anomaly_maps(patches, (96, 160), 0.0)])
    np.testing.assert_allclose(via, direct, rtol=0, atol=1e-5 * float(np.abs(direct).max()))


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("data") / "synthetic", size=64)


def _train(category: Path, out: Path, *extra: str) -> dict:
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(out), "--image-size", "64",
                                             "--weights", "none", "--coreset-ratio", "0.1", *extra])
    assert result.exit_code == 0, result.output
    return {"manifest": read_manifest(out), "output": result.output}


def test_patchcore_chooses_its_blur_and_neighbours_records_them_and_the_bundle_applies_them(
        category: Path, tmp_path: Path) -> None:
    chosen = _train(category, tmp_path / "chosen")
    post = chosen["manifest"]["postprocess"]
    assert post["blur_sigma"] in CANDIDATES and post["blur"]["method"] == "val-clean PRO"
    table = post["blur"]["pro_by_neighbours"]
    assert set(table) == {str(k) for k in NEIGHBOURS}
    best = max(pro for row in table.values() for pro in row.values())
    assert table[str(post["blur"]["neighbours"])][f"{post['blur_sigma']:g}"] == best
    assert f"map blur sigma {post['blur_sigma']:g}" in chosen["output"]
    assert f"map neighbours {post['blur']['neighbours']}" in chosen["output"]
    inspector = Inspector.from_bundle(tmp_path / "chosen")
    assert inspector.blur_sigma == post["blur_sigma"]
    assert inspector.detector.params.map_k == chosen["manifest"]["detector"]["map_k"] == post["blur"]["neighbours"]
    pinned = _train(category, tmp_path / "pinned", "--blur-sigma", "5", "--map-knn", "3")
    assert pinned["manifest"]["postprocess"]["blur_sigma"] == 5.0 and "blur" not in pinned["manifest"]["postprocess"]
    assert pinned["manifest"]["detector"]["map_k"] == 3
    sigma_only = _train(category, tmp_path / "sigma-only", "--blur-sigma", "5")["manifest"]["postprocess"]
    assert sigma_only["blur_sigma"] == 5.0 and set(sigma_only["blur"]["pro"]) == {"5"}
    # the blur and the map's neighbours shape maps only: PatchCore's image scores, hence its threshold, do not move
    thresholds = [run["manifest"]["calibration"]["threshold"] for run in (pinned, chosen)]
    assert thresholds[0] == pytest.approx(thresholds[1])


def test_the_map_choice_runs_val_clean_once_and_calibration_reuses_it_to_the_last_bit(
        category: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass for every neighbour count: each val-clean batch runs the network once and needs two kNN
    searches (5 neighbours also serve 3; FAISS's one-neighbour search is its own), and calibration reuses both.
    So a training that chooses runs the network as often as one whose map is pinned to its choice, searches
    twice as often, and calibrates exactly as it does."""
    from collections import Counter

    from linewatch.engines.torch_engine import TorchEngine
    from linewatch.models.patchcore.knn import NearestNeighbours

    calls: Counter = Counter()
    search, run = NearestNeighbours.search, TorchEngine.__call__
    monkeypatch.setattr(NearestNeighbours, "search",
                        lambda self, queries, k=1: calls.update(["search"]) or search(self, queries, k))
    monkeypatch.setattr(TorchEngine, "__call__", lambda self, batch: calls.update(["network"]) or run(self, batch))
    chosen = _train(category, tmp_path / "chosen")["manifest"]
    choosing, calls = calls, Counter()
    post = chosen["postprocess"]
    pinned = _train(category, tmp_path / "pinned", "--blur-sigma", f"{post['blur_sigma']:g}", "--map-knn",
                    str(post["blur"]["neighbours"]))["manifest"]
    assert choosing["network"] == calls["network"] > 0 and choosing["search"] == 2 * calls["search"]
    assert chosen["calibration"] == pinned["calibration"]
    assert chosen["masks"]["pixel_threshold"] == pinned["masks"]["pixel_threshold"]


def test_the_map_choice_replays_network_outputs_within_its_memory_limit() -> None:
    """Calibration replays the map choice's pass over val-clean: the network runs once per batch while the
    outputs fit the limit, and again for the batches beyond it (never a wrong batch's outputs)."""
    from linewatch.train.pipeline import _Replay

    calls: list[float] = []

    def network(inputs: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(float(inputs.flat[0]))
        return {"features": np.full(4, inputs.flat[0], np.float32)}  # 16 bytes

    replay = _Replay(network, limit_bytes=32)
    batches = [np.full((1, 1, 1), float(i)) for i in range(4)]
    for _ in range(3):
        replay.rewind()
        assert [float(replay(b)["features"][0]) for b in batches] == [0.0, 1.0, 2.0, 3.0]
    assert calls == [0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]
    replay.rewind()
    with pytest.raises(RuntimeError, match="different batches"):
        replay(batches[1])
