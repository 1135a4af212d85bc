"""Detectors, one folder each (network, loss, model, spec); `registry` lists them and loads their scorers."""
