"""The GAN's training plot: one PNG (its plotted data as JSON beside it) with what tells whether the
generator improves or stagnates: losses, the Wasserstein estimate and gradient penalty (WGAN-GP) or the
discriminator's outputs (DCGAN), samples against their nearest real images, the Fréchet distance and the
feature diversity, and how well good validation images find a match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linewatch.models.gan.quality import COLLAPSE
from linewatch.train.history import finish_plot, series


def _line(ax: Any, epochs: list[int], values: list[float | None], *args: Any, **kwargs: Any) -> None:
    points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], *args, **kwargs)


def plot_gan_history(history: list[dict[str, Any]], path: Path, title: str = "") -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [record["epoch"] for record in history]
    data = {"epochs": epochs, "train": series(history, "train"), "val": series(history, "val"),
            "reconstruction": series(history, "reconstruction"), "extra": series(history, "extra"),
            "val_auroc": [record.get("val_auroc") for record in history],
            "best_epochs": [record["epoch"] for record in history if record.get("best")]}
    train, extra = data["train"], data["extra"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    ax = axes[0][0]
    for key, label in (("critic", "critic / discriminator loss"), ("generator", "generator loss")):
        _line(ax, epochs, train.get(key, []), label=label)
    ax.set(title="losses (train, epoch means)", xlabel="epoch")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    if "wasserstein" in train:
        _line(ax, epochs, train["wasserstein"], label="Wasserstein estimate D(real) - D(fake)")
        _line(ax, epochs, train["gp"], label="gradient penalty")
        ax.set(title="WGAN-GP critic")
    else:
        _line(ax, epochs, train.get("d_real", []), label="D(real)")
        _line(ax, epochs, train.get("d_fake", []), label="D(G(z))")
        ax.set(title="DCGAN discriminator outputs")
    ax.set(xlabel="epoch")
    ax.legend(fontsize=7)
    ax = axes[0][2]
    _line(ax, epochs, extra.get("frechet", []), "o-", label="Fréchet distance (generated vs real features)")
    ax.set(title="sample quality per saved epoch (lower is better)", xlabel="epoch")
    ax.legend(fontsize=7, loc="upper right")
    twin = ax.twinx()
    _line(twin, epochs, extra.get("diversity", []), color="tab:green", alpha=0.6, label="feature diversity / real")
    twin.axhline(COLLAPSE, color="tab:red", lw=0.8, ls="--", label="collapse warning")
    twin.set(ylim=(0, max([1.2, *[v for v in extra.get("diversity", []) if v is not None]])))
    twin.legend(fontsize=7, loc="center right")
    ax = axes[1][0]
    _line(ax, epochs, extra.get("gen_mad", []), label="mean |G(z) - nearest real|")
    _line(ax, epochs, extra.get("gen_ad_var", []), label="variance of |G(z) - nearest real|")
    ax.set(title="samples vs their nearest real training image", xlabel="epoch")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    _line(ax, epochs, extra.get("gen_ssim", []), label="SSIM(G(z), nearest real)")
    _line(ax, epochs, data["reconstruction"].get("ssim", []), label="SSIM(val good, nearest sample)")
    if any(v is not None for v in data["val_auroc"]):
        _line(ax, epochs, data["val_auroc"], label="val-clean image AUROC")
    ax.set(title="similarity", xlabel="epoch", ylim=(0, 1))
    ax.legend(fontsize=7)
    ax = axes[1][2]
    _line(ax, epochs, data["val"].get("loss", []), label="val good: residual to nearest sample (selection)")
    _line(ax, epochs, data["reconstruction"].get("mad", []), label="val good: mean |x - nearest sample|")
    ax.set(title="how well good images are matched (lower is better)", xlabel="epoch")
    ax.legend(fontsize=7)
    return finish_plot(fig, axes, data, path, title or "GAN training history")
