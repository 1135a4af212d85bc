"""PatchCore: a coreset memory bank of good patch features, scored by nearest-neighbour distance."""
