"""Streaming runtime: sources, batcher, engines, scorer, post-processing, publisher."""
