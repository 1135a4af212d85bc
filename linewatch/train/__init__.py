"""Offline trainers: fit a detector on good images only and write a model bundle."""
