"""Backbones, weight loading, preprocessing and patch-feature aggregation (shared by train, export, runtime)."""

from linewatch.features.backbones import BACKBONES, BackboneSpec, build_backbone, get_spec
from linewatch.features.extractor import FeatureConfig, FeatureExtractor
from linewatch.features.preprocess import Preprocessor

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "FeatureConfig",
    "FeatureExtractor",
    "Preprocessor",
    "build_backbone",
    "get_spec",
]
