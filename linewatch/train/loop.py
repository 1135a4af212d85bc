"""The shared epoch loop of every trained detector: seeded shuffling, optional augmentation, validation on
good images, best-epoch selection, early stopping, checkpoints, `--resume`, Ctrl-C and divergence handling.

A detector plugs in as a `Trainable`: its modules, optimizers and schedulers (the checkpointed state) and
one optimisation step. The loop keeps the history (losses, learning rates, reconstruction quality) that
goes into the bundle and the training plots.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from linewatch.errors import LinewatchError
from linewatch.models.components.ssim import ssim_map
from linewatch.train import checkpoint, history
from linewatch.train.checkpoint import LoopState, Snapshot

log = logging.getLogger(__name__)
FRAME_IMAGES = 6
EXPLODE_FACTOR = 1e4


class TrainingInterrupted(LinewatchError):
    """Ctrl-C during training: the last completed epoch was written as a checkpoint."""


class TrainingDiverged(LinewatchError):
    """A loss became NaN/inf or exploded; the last good epoch stays as a checkpoint."""


class Trainable(Protocol):
    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    precise_batch_norm: bool  # optional (default False): re-estimate BatchNorm statistics after each epoch

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a float32 0..255 batch; `loss` is the objective watched for divergence."""

    def validation_losses(self, batch: torch.Tensor) -> dict[str, float]:
        """Loss terms on a batch of good validation images, without gradients."""

    def reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        """Reconstructions in [0, 1], the batch's layout (for quality curves and frames)."""

    def end_epoch(self, validation: dict[str, float]) -> None:
        """Step the learning-rate schedulers."""

    def learning_rates(self) -> dict[str, float]: ...

    # Optional: `extra_metrics(epoch, data: LoopData, saved: bool) -> dict[str, float]`, called after validation;
    # the result goes to the epoch's history record as `extra` (a GAN's sample quality, Fréchet distance at
    # saved epochs). `saved` is true where the loop writes its frame, every `checkpoint_every` epochs and the last.


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    out: Path
    seed: int = 0
    patience: int = 10
    select: str = "val-loss"
    checkpoint_every: int = 5
    keep_checkpoints: int = 3
    augment: str = "none"
    amp: bool = True
    device: str = "cpu"
    resume: Path | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def training(self) -> Path:
        return self.out / "training"


@dataclass
class LoopData:
    """uint8 (N, C, H, W) tensors; `select_metric` (higher is better) serves `select: val-auroc`."""

    train: torch.Tensor
    val_good: torch.Tensor
    select_metric: Callable[[], float] | None = None


@dataclass
class LoopResult:
    best_epoch: int
    epochs_run: int
    stopped: str
    history: list[dict[str, Any]]
    best_weights: dict[str, torch.Tensor]


def _augment(batch: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips, and with `flip-rotate` rotations within +-10 degrees."""
    n = len(batch)
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip_h[:, None, None, None].to(batch.device), batch.flip(3), batch)
    batch = torch.where(flip_v[:, None, None, None].to(batch.device), batch.flip(2), batch)
    if kind == "flip-rotate":
        angle = (torch.rand(n, generator=generator) * 20 - 10) * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros(n)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(batch), list(batch.shape), align_corners=False)
        batch = F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return batch


def _batches(images: torch.Tensor, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), size):
        yield images[start : start + size].to(device=device, dtype=torch.float32)


def _reconstruction_quality(model: Trainable, images: torch.Tensor, size: int,
                            device: torch.device) -> dict[str, float]:
    """Mean absolute difference, SSIM and the variance of the absolute difference, inputs vs reconstructions."""
    total, sq, ssim, pixels, count = 0.0, 0.0, 0.0, 0, 0
    with torch.no_grad():
        for batch in _batches(images, size, device):
            x = batch / 255.0
            recon = model.reconstruct(batch).float()
            diff = (x - recon).abs()
            total += float(diff.sum())
            sq += float((diff * diff).sum())
            pixels += diff.numel()
            ssim += float(ssim_map(x, recon).mean(dim=(1, 2, 3)).sum())
            count += len(batch)
    mad = total / max(pixels, 1)
    return {"mad": mad, "ssim": ssim / max(count, 1), "ad_var": sq / max(pixels, 1) - mad * mad}


def _precise_batch_norm(model: Trainable, images: torch.Tensor, size: int, device: torch.device) -> None:
    """Replace BatchNorm's running statistics by the training images' exact averages under the epoch's final
    weights. The running averages lag weights that move fast: GANomaly's generator reconstructed bottle
    with an L1 error of 0.68 in eval mode against 0.34 with batch statistics; re-estimated, 0.34 in both."""
    norms = [m for module in model.modules.values() for m in module.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the pass
    with torch.no_grad():
        for batch in _batches(images, size, device):
            model.reconstruct(batch)
    for norm, (momentum, state) in zip(norms, saved, strict=True):
        norm.momentum = momentum
        if int(norm.num_batches_tracked) == 0:  # not on the reconstruction path (GANomaly's discriminator)
            norm.load_state_dict(state)


def _mean_losses(model: Trainable, images: torch.Tensor, size: int, device: torch.device) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for batch in _batches(images, size, device):
        for key, value in model.validation_losses(batch).items():
            sums[key] += value * len(batch)
    return {key: value / len(images) for key, value in sums.items()}


def _better(value: float, best: float | None, select: str) -> bool:
    return best is None or (value > best if select == "val-auroc" else value < best)


class EpochLoop:
    """Runs `Trainable` for up to `settings.epochs`; see the module docstring."""

    def __init__(self, model: Trainable, data: LoopData, settings: LoopSettings) -> None:
        if settings.select == "val-auroc" and data.select_metric is None:
            raise LinewatchError("--select val-auroc needs defective images in val-clean (test/<defect>/ folders)")
        self.model, self.data, self.settings = model, data, settings
        self.device = torch.device(settings.device)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.state = LoopState()
        self.best: dict[str, torch.Tensor] | None = None
        self.frame_images = (data.val_good if len(data.val_good) else data.train)[:FRAME_IMAGES]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _snapshot(self) -> Snapshot:
        return checkpoint.capture(self.model.modules, self.model.optimizers, self.model.schedulers, self.generator,
                                  self.state, self.best, self.settings.fingerprint)

    def _resume(self, folder: Path) -> None:
        snapshot = checkpoint.read(folder)
        checkpoint.check_settings(snapshot, self.settings.fingerprint, folder)
        self.state, self.best = checkpoint.restore(snapshot, self.model.modules, self.model.optimizers,
                                                   self.model.schedulers, self.generator)
        log.info("resumed from %s after epoch %d", folder, self.state.epoch)

    def run(self) -> LoopResult:
        for module in self.model.modules.values():
            module.to(self.device)
        if self.settings.resume:
            self._resume(self.settings.resume)
        last_good = self._snapshot()
        stopped = "epoch budget"
        try:
            for epoch in range(self.state.epoch + 1, self.settings.epochs + 1):
                record = self._epoch(epoch, last_good)
                improved = self._select(record)
                self.state.epoch = epoch
                last_good = self._snapshot()
                self._save(epoch, improved, last_good)
                if self.settings.patience and self.state.bad_epochs >= self.settings.patience:
                    stopped = f"early stop: {self.settings.select} not better for {self.settings.patience} epochs"
                    break
        except KeyboardInterrupt:
            folder = checkpoint.write(last_good, self.settings.checkpoints / f"interrupted-epoch-{last_good.epoch:04d}")
            raise TrainingInterrupted(
                f"training interrupted after epoch {last_good.epoch}; checkpoint written to {folder}. "
                f"Continue with the same command plus --resume {folder}") from None
        history.write_gif(self.settings.training)
        if self.best is None:
            raise TrainingDiverged("no epoch completed, so there are no weights to keep")
        return LoopResult(self.state.best_epoch or self.state.epoch, self.state.epoch, stopped, self.state.history,
                          self.best)

    def _epoch(self, epoch: int, last_good: Snapshot) -> dict[str, Any]:
        started = time.perf_counter()
        settings, train = self.settings, self.data.train
        for module in self.model.modules.values():
            module.train()
        order = torch.randperm(len(train), generator=self.generator)
        sums: dict[str, float] = defaultdict(float)
        bar = tqdm(total=len(train), desc=f"epoch {epoch}/{settings.epochs}", unit="img", leave=False,
                   disable=not settings.progress, dynamic_ncols=True)
        with bar:
            for start in range(0, len(train), settings.batch_size):
                index = order[start : start + settings.batch_size]
                batch = train[index].to(device=self.device, dtype=torch.float32)
                if settings.augment != "none":
                    batch = _augment(batch, settings.augment, self.generator)
                with self._autocast():
                    losses = self.model.train_step(batch)
                self._check(losses, epoch, last_good)
                for key, value in losses.items():
                    sums[key] += value * len(index)
                bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
                bar.update(len(index))
        if getattr(self.model, "precise_batch_norm", False):
            _precise_batch_norm(self.model, train, settings.batch_size, self.device)
        for module in self.model.modules.values():
            module.eval()
        record: dict[str, Any] = {"epoch": epoch, "train": {k: v / len(train) for k, v in sums.items()},
                                  "lr": self.model.learning_rates()}
        if len(self.data.val_good):
            record["val"] = _mean_losses(self.model, self.data.val_good, settings.batch_size, self.device)
        quality_images = self.data.val_good if len(self.data.val_good) else self.data.train
        record["reconstruction"] = _reconstruction_quality(self.model, quality_images, settings.batch_size, self.device)
        if self.data.select_metric is not None:
            record["val_auroc"] = self.data.select_metric()
        extra = getattr(self.model, "extra_metrics", None)
        if extra is not None:
            record["extra"] = extra(epoch, self.data, self._frame_epoch(epoch))
        self.model.end_epoch(record.get("val", record["train"]))
        record["seconds"] = round(time.perf_counter() - started, 3)
        self.state.history.append(record)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in record.get("val", record["train"]).items())
        log.info("epoch %d/%d: %s (%.1f s)", epoch, settings.epochs, summary, record["seconds"])
        return record

    def _check(self, losses: dict[str, float], epoch: int, last_good: Snapshot) -> None:
        loss = losses["loss"]
        if self.state.reference_loss is None and math.isfinite(loss):
            self.state.reference_loss = abs(loss) or 1.0
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        exploded = self.state.reference_loss is not None and abs(loss) > EXPLODE_FACTOR * self.state.reference_loss
        if bad or exploded:
            what = f"{bad[0]} is {losses[bad[0]]}" if bad else f"loss {loss:.4g} is {EXPLODE_FACTOR:g}x its first value"
            lrs = ", ".join(f"{k} {v:g}" for k, v in self.model.learning_rates().items())
            folder = checkpoint.write(last_good, self.settings.checkpoints / f"last-good-epoch-{last_good.epoch:04d}")
            raise TrainingDiverged(f"training diverged in epoch {epoch} ({what}; learning rate {lrs}); the last good "
                                   f"state (epoch {last_good.epoch}) is in {folder}: lower --lr and retrain")

    def _select(self, record: dict[str, Any]) -> bool:
        if self.settings.select == "val-auroc":
            value = record["val_auroc"]
        else:
            value = record.get("val", record["train"])["loss"]
        improved = _better(value, self.state.best_value, self.settings.select)
        if improved:
            self.state.best_epoch, self.state.best_value, self.state.bad_epochs = record["epoch"], value, 0
            self.best = {f"{name}.{k}": v.detach().clone().cpu()
                         for name, module in self.model.modules.items() for k, v in module.state_dict().items()}
        else:
            self.state.bad_epochs += 1
        record["best"] = improved
        return improved

    def _frame_epoch(self, epoch: int) -> bool:
        return epoch % self.settings.checkpoint_every == 0 or epoch == self.settings.epochs

    def _save(self, epoch: int, improved: bool, snapshot: Snapshot) -> None:
        settings = self.settings
        if self._frame_epoch(epoch):
            with torch.no_grad():
                recon = self.model.reconstruct(self.frame_images.to(self.device, torch.float32)).float().cpu()
            history.write_frame(settings.training, epoch, self.frame_images, recon)
        if improved:
            checkpoint.write(snapshot, settings.checkpoints / "best")
        if epoch % settings.checkpoint_every == 0:
            checkpoint.write(snapshot, settings.checkpoints / f"epoch-{epoch:04d}")
            periodic = sorted(settings.checkpoints.glob("epoch-*"))
            for old in periodic[: -settings.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
