"""PaDiM: per-position Gaussians over pretrained features, scored by Mahalanobis distance."""
