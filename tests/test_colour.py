"""`--colour`: a monochrome line gets a one-channel network whose features are the RGB network's, end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import eval_scores, published_headers

from linewatch.bundle import read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.export.cli import main as export_main
from linewatch.inspector import Inspector
from linewatch.train.cli import main as train_main

MODELS = {
    "patchcore": ["--model", "patchcore"],
    "padim-aligned": ["--model", "padim", "--padim-dims", "40", "--align", "lk"],
}


@pytest.fixture(scope="module")
def colour_category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("colour") / "cat", size=64, n_train=16, n_test_good=4,
                                   n_test_defect=4)


@pytest.fixture(scope="module")
def grey_category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic line as a monochrome camera sees it: every image a one-channel PNG (masks unchanged)."""
    category = make_synthetic_category(tmp_path_factory.mktemp("grey") / "cat", size=64, n_train=16,
                                       n_test_good=4, n_test_defect=4)
    for path in category.rglob("*.png"):
        if "ground_truth" not in path.parts:
            assert cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    return category


def _train(category: Path, out: Path, *args: str) -> dict:
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(out), "--image-size", "64",
                                             "--quiet", *args])
    assert result.exit_code == 0, result.output
    return read_manifest(out)


@pytest.mark.parametrize("model", MODELS)
def test_a_grey_line_gets_a_one_channel_network_with_the_rgb_networks_scores(model: str, grey_category: Path,
                                                                             tmp_path: Path) -> None:
    """`--colour auto` on grey images: one input channel, recorded with why; calibration and every inspect-eval
    score equal the same training's with `--colour rgb` (the features are the same); the exported ONNX takes one
    channel and the runtime publishes inspect-eval's raw scores."""
    grey = _train(grey_category, tmp_path / "grey", *MODELS[model])
    assert grey["network"]["input"]["channels"] == 1 and grey["preprocess"]["channels"].startswith("grey")
    facts = grey["training"]["colour_auto"]
    assert facts["chosen"] == "grey" and facts["grey_images"] == facts["images"] > 0
    assert grey["training"]["options"]["colour"] == "auto"
    assert Inspector.from_bundle(tmp_path / "grey").preprocessor.channels == 1
    rgb = _train(grey_category, tmp_path / "rgb", *MODELS[model], "--colour", "rgb")
    assert rgb["network"]["input"]["channels"] == 3 and "colour_auto" not in rgb["training"]
    for ours, theirs in ((grey["calibration"], rgb["calibration"]), (grey["calibration"]["map"],
                                                                       rgb["calibration"]["map"])):
        assert [ours[k] for k in ("threshold", "low", "high")] == pytest.approx(
            [theirs[k] for k in ("threshold", "low", "high")], rel=1e-6)
    grey_scores = eval_scores(tmp_path / "grey", grey_category, tmp_path / "grey-report")
    rgb_scores = eval_scores(tmp_path / "rgb", grey_category, tmp_path / "rgb-report")
    assert grey_scores.keys() == rgb_scores.keys() and len(grey_scores) >= 8
    for path, score in rgb_scores.items():
        assert grey_scores[path] == pytest.approx(score, rel=1e-5), path

    result = CliRunner().invoke(export_main, [str(tmp_path / "grey")])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "grey" / "network.onnx"))
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim][1:] == [1, 64, 64]
    headers = published_headers(tmp_path / "grey", grey_category / "test")
    published = {Path(h["path"]).relative_to(grey_category).as_posix(): h["raw_score"] for h in headers}
    test_scores = {path: score for path, score in grey_scores.items() if path.startswith("test/")}
    assert published.keys() == test_scores.keys()
    for path, score in test_scores.items():
        assert published[path] == pytest.approx(score, rel=1e-4), path


def test_a_colour_line_stays_rgb_unless_told_grey(colour_category: Path, tmp_path: Path) -> None:
    """One colour image among those read keeps the colour (`auto` never throws it away); `--colour grey` turns
    every frame grey before the network, in training and in the runtime's preprocessing."""
    auto = _train(colour_category, tmp_path / "auto", "--weights", "none")
    facts = auto["training"]["colour_auto"]
    assert facts["chosen"] == "rgb" and facts["grey_images"] == 0 and facts["images"] > 0
    assert auto["network"]["input"]["channels"] == 3
    grey = _train(colour_category, tmp_path / "grey", "--weights", "none", "--colour", "grey")
    assert grey["network"]["input"]["channels"] == 1 and "colour_auto" not in grey["training"]
    inspector = Inspector.from_bundle(tmp_path / "grey")
    frame = cv2.cvtColor(cv2.imread(str(next((colour_category / "test" / "good").iterdir()))), cv2.COLOR_BGR2RGB)
    assert inspector.preprocessor(frame).shape == (1, 64, 64)
    assert not np.array_equal(frame[:, :, 0], frame[:, :, 2])  # the premise: the frame has colour
