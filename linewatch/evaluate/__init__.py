"""Evaluation reports: plots and overlays built on linewatch.metrics."""
