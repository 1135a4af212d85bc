"""Backbones, weight loading, preprocessing and patch-feature aggregation (shared by train, export, runtime).

Import the submodules directly (`features.catalog` and `features.preprocess` need no torch).
"""
