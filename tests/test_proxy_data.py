"""tools/proxy_data.py: the misaligned proxy's true warps, which tools/bench_align.py measures registration
against, replay the very warps the proxy's images were made with."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from linewatch.data import read_image, scan_category
from linewatch.data.synthetic import make_synthetic_category

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _proxy_data():
    spec = importlib.util.spec_from_file_location("proxy_data", TOOLS / "proxy_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("proxy_data", module)
    spec.loader.exec_module(module)
    return module


def test_replayed_matrices_remake_every_proxy_image(tmp_path: Path) -> None:
    proxy_data = _proxy_data()
    source = make_synthetic_category(tmp_path / "source", size=64, n_train=8, n_test_good=2, n_test_defect=3)
    proxy = tmp_path / "proxy"
    result = CliRunner().invoke(proxy_data.main, ["misalign", "--data", str(source), "--out", str(proxy),
                                                  "--train", "5", "--drop-defects", "hole"])
    assert result.exit_code == 0, result.output
    matrices = proxy_data.misalign_matrices(proxy)
    written = scan_category(proxy)
    samples = [*written.train, *written.test]
    assert len(written.train) == 5 and samples and all(s.defect != "hole" for s in samples)
    moved = 0
    for sample in samples:
        original = read_image(source / sample.rel)
        matrix = matrices[sample.rel]
        remade = cv2.warpAffine(original, matrix[:2], original.shape[1::-1], flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
        assert np.array_equal(remade, read_image(proxy / sample.rel)), sample.rel
        moved += not np.allclose(matrix, np.eye(3))
    assert moved == len(samples)
