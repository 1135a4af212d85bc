"""GAN losses: DCGAN's binary cross-entropy (non-saturating generator loss) and WGAN-GP (Gulrajani et al. 2017):
critic loss D(fake) - D(real) + lambda (||grad D(x_hat)||_2 - 1)^2 on random interpolates x_hat."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

GP_WEIGHT = 10.0
LOSSES = ("wgan-gp", "dcgan")


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """mean over the batch of (||d critic(x_hat) / d x_hat||_2 - 1)^2, x_hat = alpha real + (1 - alpha) fake.

    `alpha` is (N, 1, 1, 1) in [0, 1]; the graph is kept so the penalty trains the critic.
    """
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grads,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grads.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def critic_terms(real_scores: torch.Tensor, fake_scores: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """The critic's (discriminator's) loss before any penalty, and for WGAN the Wasserstein estimate."""
    if kind == "wgan-gp":
        wasserstein = real_scores.mean() - fake_scores.mean()
        return {"critic": -wasserstein, "wasserstein": wasserstein}
    real = F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
    fake = F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
    return {"critic": real + fake, "d_real": torch.sigmoid(real_scores).mean(),
            "d_fake": torch.sigmoid(fake_scores).mean()}


def generator_loss(fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    """WGAN: -D(G(z)); DCGAN: the non-saturating -log D(G(z))."""
    if kind == "wgan-gp":
        return -fake_scores.mean()
    return F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores))
