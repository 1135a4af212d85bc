"""Options of every detector trained by the epoch loop (autoencoder, GANomaly, and those that follow).

Kept free of torch so the CLI and the registry load fast; each detector sets its own defaults.
"""

from __future__ import annotations

from pathlib import Path

from linewatch.config import Option

AUGMENTATIONS = ("none", "flip", "flip-rotate")
SELECTIONS = ("val-loss", "val-auroc")

EPOCH_OPTIONS: dict[str, Option] = {
    "epochs": Option(int, 100, minimum=1, help="Most epochs to train."),
    "lr": Option(float, 1e-3, minimum=0.0, help="Adam learning rate."),
    "patience": Option(int, 10, minimum=0, help="Early stopping: epochs without improvement (0 = never stop early)."),
    "select": Option(str, "val-loss", choices=SELECTIONS,
                     help="Best epoch by the good validation images' loss, or by val-clean image AUROC."),
    "checkpoint_every": Option(int, 5, minimum=1,
                               help="Write a checkpoint (and a reconstruction frame) every N epochs."),
    "keep_checkpoints": Option(int, 3, minimum=1, help="Periodic checkpoints kept (the best one is always kept)."),
    "resume": Option(Path, None, must_exist=True, help="Continue an interrupted run from this checkpoint folder."),
    "augment": Option(str, "none", choices=AUGMENTATIONS, help="Training augmentation: none, flip, flip-rotate."),
    "amp": Option(bool, True, help="Mixed precision (bfloat16 autocast) when training on CUDA."),
    "channels": Option(int, 1, choices=(1, 3), help="Network input channels: 1 (grey) or 3 (RGB)."),
}
