"""The GAN detector through the whole product on tiny, non-square images: inspect-train, the bundle, inspect-eval,
export-model (ONNX parity), inspect-run (raw scores equal inspect-eval's, defect types published),
inspect-generate, and the refusal of latent refinement outside PyTorch."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.bundle import read_manifest, write_manifest
from linewatch.data import read_image
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.export.cli import main as export_main
from linewatch.inspector import Inspector
from linewatch.models.gan.generate import main as generate_main
from linewatch.models.registry import get_spec
from linewatch.runtime.cli import main as run_main
from linewatch.runtime.pipeline import RunOptions
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

SIZE = (16, 24)  # height x width, not square
MASK_KEYS = {"ssim", "iou", "dice", "pixel_accuracy", "combined", "per_defect"}
CLASS_KEYS = {"binary_accuracy", "accuracy", "labels", "confusion", "per_class"}


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("gan") / "part", size=48, n_train=20, n_test_good=4,
                                   n_test_defect=3)


@pytest.fixture(scope="module")
def bundle(category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gan-bundles") / "gan"
    options = {**get_spec("gan").quick, "data": category, "out": out, "model": "gan", "image_size": "16x24"}
    train(resolve_training(None, options), progress=False)
    result = CliRunner().invoke(export_main, [str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def report(bundle: Path, category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gan-report")
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(out),
                                            "--split", "all", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_bundle_holds_bank_generator_history_and_plots(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    detector, network = manifest["detector"], manifest["network"]
    assert detector["kind"] == "gan" and detector["bank_size"] == 16 and detector["refine_steps"] == 0
    assert network["input"]["size"] == list(SIZE) and network["outputs"] == ["embedding", "pixels"]
    images = np.load(bundle / detector["bank_images"])
    assert images.shape == (16, 3, *SIZE) and images.dtype == np.uint8
    assert np.load(bundle / detector["bank_embeddings"]).shape[0] == 16
    assert {"generator.safetensors", "network.onnx", "history.json"} <= set(manifest["files"])
    history = json.loads((bundle / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all("frechet" in r["extra"] for r in history)
    assert {"critic", "wasserstein", "gp", "generator"} <= set(history[0]["train"])
    assert manifest["training"]["frechet"]["first_epoch"] == 1
    training = bundle / "training"
    plotted = json.loads((training / "history.json").read_text())
    assert len(plotted["extra"]["frechet"]) == 2 and (training / "history.png").stat().st_size > 0
    assert (training / "samples.gif").is_file() and len(list((training / "samples").glob("epoch-*.png"))) == 2
    assert manifest["masks"]["classifier"]["types"] == ["hole", "scratch", "spot"]


def test_eval_reports_mask_metrics_and_defect_types(report: Path) -> None:
    metrics = json.loads((report / "metrics.json").read_text())
    assert isinstance(metrics["pixel_threshold"], float)
    assert set(metrics["mask_metrics"]) >= MASK_KEYS
    assert set(metrics["mask_metrics"]["per_defect"]) == {"good", "hole", "scratch", "spot"}
    classes = metrics["defect_types"]
    assert set(classes) >= CLASS_KEYS and classes["labels"] == ["good", "hole", "scratch", "spot"]
    assert sum(map(sum, classes["confusion"])) == metrics["images"]
    assert (report / "confusion.png").is_file()
    with open(report / "defect_types.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["images"] and {r["predicted"] for r in rows} <= set(classes["labels"])


def test_runtime_raw_scores_equal_eval_and_carry_defect_types(bundle: Path, category: Path, report: Path,
                                                              tmp_path: Path) -> None:
    from tests.test_runtime import run_with_listener

    options = RunOptions(bundle=bundle, sources=(str(category / "test"),), publish="tcp://127.0.0.1:*",
                         wait_subscribers=1, engine="onnxruntime", device="cpu")
    summary, result = run_with_listener(options, len(list((category / "test").rglob("*.png"))))
    with open(report / "scores.csv") as handle:
        expected = {row["path"]: float(row["score"]) for row in csv.DictReader(handle)}
    published = {Path(h["path"]).relative_to(category).as_posix(): h for h in result.headers}
    assert published.keys() == expected.keys() and summary["errors"] == 0
    for path, score in expected.items():
        assert published[path]["raw_score"] == pytest.approx(score, rel=1e-4, abs=1e-7), path
    types = {"hole", "scratch", "spot"}
    for header in result.headers:
        if header["verdict"] == "defect":
            assert header["defect_type"] in types and -0.1 <= header["defect_similarity"] <= 1.0
        else:
            assert header["defect_type"] is None and header["defect_similarity"] is None


def test_a_bank_image_finds_itself_with_zero_residual(bundle: Path, tmp_path: Path) -> None:
    inspector = Inspector.from_bundle(bundle)
    bank = np.load(bundle / inspector.manifest["detector"]["bank_images"])
    path = tmp_path / "bank-5.png"
    cv2.imwrite(str(path), cv2.cvtColor(bank[5].transpose(1, 2, 0), cv2.COLOR_RGB2BGR))
    inputs = inspector.preprocessor.batch([read_image(path)])
    outputs = inspector.reference_engine()(inputs)
    index, _ = inspector.detector.match(outputs)
    prediction = inspector.score(outputs)
    assert index.tolist() == [5] and float(np.abs(prediction.maps).max()) == 0.0 and prediction.scores[0] == 0.0


def test_generate_writes_seeded_images_at_the_trained_size(bundle: Path, category: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(generate_main, ["--bundle", str(bundle), "--count", "5", "--out", str(tmp_path / name),
                                               "--seed", "3"])
        assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "a").glob("*.png"))
    assert len(files) == 5 and read_image(files[0]).shape == (*SIZE, 3)
    assert all(np.array_equal(read_image(f), read_image(tmp_path / "b" / f.name)) for f in files)
    other = tmp_path / "patchcore"
    train(resolve_training(None, {"data": category, "out": other, "weights": "none", "image_size": 32}),
          progress=False)
    refused = runner.invoke(generate_main, ["--bundle", str(other), "--out", str(tmp_path / "c")])
    assert refused.exit_code != 0 and "inspect-train --model gan" in refused.output


def test_latent_refinement_evaluates_but_is_refused_by_export_and_runtime(bundle: Path, category: Path,
                                                                          tmp_path: Path) -> None:
    refined = tmp_path / "refined"
    shutil.copytree(bundle, refined)
    manifest = read_manifest(refined)
    manifest["detector"]["refine_steps"] = 3
    write_manifest(refined, manifest, list(manifest["files"]))
    out = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(refined), "--data", str(category), "--out", str(out),
                                            "--quiet"])
    assert result.exit_code == 0, result.output
    for command, args in ((export_main, [str(refined)]),
                          (run_main, ["--bundle", str(refined), "--source", str(category / "test" / "good")])):
        refused = CliRunner().invoke(command, args)
        assert refused.exit_code != 0 and "cannot be exported or run by inspect-run" in refused.output
