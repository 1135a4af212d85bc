"""Training history as pictures: loss, learning-rate and reconstruction-quality curves (with their data as
JSON beside the PNG), and a GIF of fixed validation images' reconstructions across the saved epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

FRAMES = "frames"
GIF = "reconstructions.gif"
TILE = 128


def _tiles(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one RGB uint8 row of TILE-high tiles."""
    out = []
    for image in images.clamp(0, 1).numpy():
        tile = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        tile = np.repeat(tile, 3, axis=2) if tile.shape[2] == 1 else tile
        width = max(1, round(TILE * tile.shape[1] / tile.shape[0]))
        out.append(cv2.resize(tile, (width, TILE), interpolation=cv2.INTER_AREA))
    return np.concatenate(out, axis=1)


def write_frame(folder: Path, epoch: int, inputs: torch.Tensor, reconstructions: torch.Tensor) -> Path:
    """Inputs (top), reconstructions (middle), amplified absolute difference (bottom), labelled with the epoch."""
    x = inputs.float() / 255.0
    diff = ((x - reconstructions).abs() * 4).clamp(0, 1)
    grid = np.concatenate([_tiles(x), _tiles(reconstructions), _tiles(diff)], axis=0)
    grid = np.ascontiguousarray(grid)
    cv2.putText(grid, f"epoch {epoch}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    path = Path(folder) / FRAMES / f"epoch-{epoch:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def write_gif(folder: Path, milliseconds: int = 500, frames_dir: str = FRAMES, name: str = GIF) -> Path | None:
    """Assemble every saved frame (also those written before a resume) into one looping GIF."""
    from PIL import Image

    frames = sorted((Path(folder) / frames_dir).glob("epoch-*.png"))
    if not frames:
        return None
    images = [Image.open(f).convert("RGB") for f in frames]
    path = Path(folder) / name
    images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds, loop=0)
    return path


def series(history: list[dict[str, Any]], group: str) -> dict[str, list[float | None]]:
    keys = sorted({k for record in history for k in record.get(group, {})})
    return {k: [record.get(group, {}).get(k) for record in history] for k in keys}


def _log_if_positive(ax: Any) -> None:
    """Log scale when every plotted value is positive (WGAN losses, for one, go negative)."""
    values = [v for line in ax.get_lines() for v in line.get_ydata() if v is not None]
    if values and min(values) > 0:
        ax.set_yscale("log")


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> dict[str, Any]:
    """One PNG: loss terms (train solid, validation dashed), learning rates, reconstruction quality.

    The plotted data is written beside it as JSON (same name, .json) and returned.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [record["epoch"] for record in history]
    data = {"epochs": epochs, "train": series(history, "train"), "val": series(history, "val"),
            "lr": series(history, "lr"), "reconstruction": series(history, "reconstruction"),
            "val_auroc": [record.get("val_auroc") for record in history],
            "best_epochs": [record["epoch"] for record in history if record.get("best")]}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    for key, values in data["train"].items():
        ax.plot(epochs, values, label=f"train {key}")
    for key, values in data["val"].items():
        ax.plot(epochs, values, "--", label=f"val {key}")
    ax.set(title="losses", xlabel="epoch")
    _log_if_positive(ax)
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for key, values in data["lr"].items():
        ax.plot(epochs, values, label=key)
    ax.set(title="learning rate", xlabel="epoch")
    _log_if_positive(ax)
    ax.legend(fontsize=7)
    ax = axes[1][0]
    recon = data["reconstruction"]
    for key in ("mad", "ad_var"):
        if key in recon:
            ax.plot(epochs, recon[key], label={"mad": "mean |x - x'|", "ad_var": "variance of |x - x'|"}[key])
    ax.set(title="reconstruction error (validation)", xlabel="epoch")
    _log_if_positive(ax)
    ax.legend(fontsize=7)
    ax = axes[1][1]
    if "ssim" in recon:
        ax.plot(epochs, recon["ssim"], label="SSIM(x, x')")
    if any(v is not None for v in data["val_auroc"]):
        ax.plot(epochs, data["val_auroc"], label="val-clean image AUROC")
    ax.set(title="reconstruction similarity / selection", xlabel="epoch", ylim=(0, 1))
    ax.legend(fontsize=7)
    return finish_plot(fig, axes, data, path, title or "training history")


def finish_plot(fig: Any, axes: Any, data: dict[str, Any], path: Path, title: str) -> dict[str, Any]:
    """Mark the kept epoch on every panel, save the PNG and its data as JSON beside it, close the figure."""
    import matplotlib.pyplot as plt

    for ax in axes.flat:
        for epoch in data["best_epochs"][-1:]:
            ax.axvline(epoch, color="grey", lw=0.8, ls=":")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return data
