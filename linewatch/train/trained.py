"""Fitting a trained detector: its images in memory, the epoch loop, the best weights, the history plots.

Shared by every detector whose network is trained by gradient descent; each brings a `TrainedModel`
(its modules, optimizers, one step, and the network that is exported) and a size rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from linewatch.batches import iter_batches
from linewatch.data import Sample
from linewatch.device import use_cuda
from linewatch.engines.torch_engine import run_network
from linewatch.features.preprocess import Preprocessor
from linewatch.metrics import auroc
from linewatch.models.base import Detector, FitContext, Fitted
from linewatch.scoring import score_outputs
from linewatch.train import history
from linewatch.train.loop import EpochLoop, LoopData, LoopSettings, Trainable

log = logging.getLogger(__name__)
# Options that may change between an interrupted run and its resumption.
RESUMABLE = ("epochs", "resume", "out", "checkpoint_every", "keep_checkpoints", "device", "amp", "data")


class TrainedModel(Trainable, Protocol):
    network: torch.nn.Module  # images 0..255 -> the named outputs the scorer reads; exported as is

    def network_section(self) -> dict[str, Any]: ...


def load_images(samples: Sequence[Sample], preprocess: Preprocessor, batch_size: int,
                step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Preprocessed images as one uint8 (N, C, H, W) tensor (exact: the resize already rounds to uint8)."""
    chunks = []
    for batch in iter_batches(samples, preprocess, batch_size):
        chunks.append(torch.from_numpy(batch.inputs.astype(np.uint8)))
        if step:
            step(len(batch.samples))
    if not chunks:
        return torch.empty((0, preprocess.channels, *preprocess.size), dtype=torch.uint8)
    return torch.cat(chunks)


def _fingerprint(options: dict[str, Any], context: FitContext) -> dict[str, Any]:
    plain = {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
             for k, v in options.items() if k not in RESUMABLE}
    return {**plain, "train_images": [s.rel for s in context.splits.train]}


def _auroc_metric(model: TrainedModel, scorer: Detector, images: torch.Tensor, labels: np.ndarray,
                  options: dict[str, Any], device: str) -> Callable[[], float]:
    """val-clean image AUROC through the one scoring path (network outputs -> scorer)."""
    names = tuple(model.network_section()["outputs"])

    def metric() -> float:
        scores = []
        for start in range(0, len(images), options["batch_size"]):
            batch = images[start : start + options["batch_size"]].float().numpy()
            outputs = run_network(model.network, batch, device, names)
            scores.append(score_outputs(scorer, outputs, batch.shape[2:], options["blur_sigma"]).scores)
        return auroc(labels, np.concatenate(scores))

    return metric


def fit_trained(context: FitContext, build: Callable[[tuple[int, int]], TrainedModel],
                valid_size: Callable[[tuple[int, int]], tuple[int, int]], scorer: Detector, title: str,
                plot: Callable[[list[dict[str, Any]], Path, str], Any] = history.plot_history) -> Fitted:
    """Train `build(size)` on train-clean (validation: val-clean's good images) and return the best epoch.

    `plot` draws the history PNG (and its JSON); a detector with other curves (the GAN) brings its own.
    """
    options, splits, bars = context.options, context.splits, context.bars
    size = tuple(valid_size(options["image_size"]))
    if size != tuple(options["image_size"]):
        log.warning("image size %s does not fit the network; using %dx%d (height x width)",
                    "x".join(map(str, options["image_size"])), *size)
    preprocess = Preprocessor(size, options["channels"])
    train = load_images(splits.train, preprocess, options["batch_size"], bars(len(splits.train), "load train"))
    good = [s for s in splits.val if s.label == 0]
    val_good = load_images(good, preprocess, options["batch_size"])
    if not len(val_good):
        log.warning("val-clean holds no good images: validation loss, early stopping and the best epoch use the "
                    "training loss instead")
    device = "cuda" if use_cuda(options["device"]) else "cpu"
    model = build(size)
    metric, select = None, options["select"]
    if select == "val-auroc":
        labels = np.array([s.label for s in splits.val])
        if 0 < labels.sum() < len(labels):
            val_all = load_images(splits.val, preprocess, options["batch_size"])
            metric = _auroc_metric(model, scorer, val_all, labels, options, device)
        else:
            log.warning("val-clean has no defective images, so the best epoch cannot be chosen by its AUROC; "
                        "choosing it by the validation loss instead")
            select = "val-loss"
    settings = LoopSettings(
        epochs=options["epochs"], batch_size=options["batch_size"], out=context.out, seed=options["seed"],
        patience=options["patience"], select=select, checkpoint_every=options["checkpoint_every"],
        keep_checkpoints=options["keep_checkpoints"], augment=options["augment"], amp=options["amp"], device=device,
        resume=options["resume"], fingerprint=_fingerprint(options, context), progress=bars.enabled,
    )
    result = EpochLoop(model, LoopData(train, val_good, metric), settings).run()
    for name, module in model.modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in result.best_weights.items() if k.startswith(prefix)})
        module.cpu().eval()
    plot(result.history, settings.training / "history.png", title)
    log.info("best epoch %d of %d (%s)", result.best_epoch, result.epochs_run, result.stopped)
    return Fitted(network=model.network, network_section=model.network_section(), detector=scorer,
                  history=result.history, training={"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                                    "stopped": result.stopped, "image_size": list(size)})
