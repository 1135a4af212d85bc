"""Shared fixtures, and one Hypothesis profile: derandomized (the same examples on every run), no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

settings.register_profile("linewatch", derandomize=True, database=None, deadline=2000, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("linewatch")


@pytest.fixture
def shared_data() -> Path:
    """The real datasets next to the repo (../shared/data); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present (real-data tests need the shared data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported PatchCore bundle on 64 px synthetic parts (random weights): fast to train and to run."""
    from helpers import tiny_bundle as build_tiny_bundle

    from linewatch.data.synthetic import make_synthetic_category

    root = tmp_path_factory.mktemp("tiny")
    category = make_synthetic_category(root / "category", size=64, n_train=20, n_test_good=6, n_test_defect=3)
    return build_tiny_bundle(category, root / "bundle", 64, export=True)


@pytest.fixture(scope="session")
def tiny_images(tiny_bundle: Path) -> Path:
    """The tiny bundle's test images (PNG, 64 x 64, good and defective), one folder per defect type."""
    return tiny_bundle.parent / "category" / "test"
