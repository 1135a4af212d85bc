"""GANomaly's losses: adversarial feature matching, contextual L1 and latent L2 for G; BCE for D."""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTS = {"adv": 1.0, "con": 50.0, "enc": 1.0}


def generator_terms(real_features: torch.Tensor, fake_features: torch.Tensor, x: torch.Tensor, fake: torch.Tensor,
                    z: torch.Tensor, z_again: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three terms of Akcay et al. (2018), eq. 1-3, before weighting."""
    return {"adv": F.mse_loss(fake_features, real_features.detach()), "con": F.l1_loss(fake, x),
            "enc": F.mse_loss(z_again, z)}


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real + fake) / 2
