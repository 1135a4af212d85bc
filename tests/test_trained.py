"""Trained detectors: the epoch loop (resume, Ctrl-C, divergence, checkpoints), the autoencoder and GANomaly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from linewatch.bundle import read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.models.autoencoder.network import ConvAutoencoder
from linewatch.models.components.ssim import ssim_map
from linewatch.models.ganomaly.loss import discriminator_loss, generator_terms
from linewatch.models.ganomaly.network import GanomalyNetwork
from linewatch.train.loop import EpochLoop, LoopData, LoopSettings, TrainingDiverged
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("trained") / "cat", size=48, n_train=20, n_test_good=4,
                                   n_test_defect=3)


def _options(category: Path, out: Path, **extra: object) -> dict:
    base = {"data": category, "out": out, "model": "autoencoder", "image_size": 32, "base_channels": 8,
            "epochs": 4, "checkpoint_every": 2, "batch_size": 8}
    return resolve_training(None, {**base, **extra})


def test_resuming_after_two_epochs_gives_the_uninterrupted_weights(category: Path, tmp_path: Path) -> None:
    whole = train(_options(category, tmp_path / "whole"), progress=False).bundle
    part = tmp_path / "part"
    train(_options(category, part, epochs=2), progress=False)
    checkpoint = part / "checkpoints" / "epoch-0002"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["state.json", "state.safetensors"]  # no pickle
    assert json.loads((checkpoint / "state.json").read_text())["loop"]["epoch"] == 2
    resumed = train(_options(category, part, resume=checkpoint), progress=False).bundle
    assert (resumed / "network.safetensors").read_bytes() == (whole / "network.safetensors").read_bytes()
    first, second = (json.loads((b / "history.json").read_text()) for b in (whole, resumed))
    assert [h["train"]["loss"] for h in first] == [h["train"]["loss"] for h in second]
    assert len(first) == 4 and read_manifest(resumed)["training"]["epochs_run"] == 4


def test_resume_refuses_other_settings(category: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_options(category, out, epochs=2), progress=False)
    with pytest.raises(ValueError, match="cannot resume .*other settings .*lr"):
        train(_options(category, out, resume=out / "checkpoints" / "epoch-0002", lr=0.01), progress=False)


def test_training_writes_history_plot_data_and_a_gif(category: Path, tmp_path: Path) -> None:
    bundle = train(_options(category, tmp_path / "b"), progress=False).bundle
    manifest = read_manifest(bundle)
    assert "history.json" in manifest["files"] and manifest["training"]["best_epoch"] >= 1
    history = json.loads((bundle / "history.json").read_text())
    plotted = json.loads((bundle / "training" / "history.json").read_text())
    assert plotted["epochs"] == [1, 2, 3, 4]
    assert plotted["train"]["loss"] == [h["train"]["loss"] for h in history]
    assert plotted["val"]["loss"] == [h["val"]["loss"] for h in history]
    for key in ("mad", "ssim", "ad_var"):
        values = plotted["reconstruction"][key]
        assert len(values) == 4 and all(math.isfinite(v) for v in values)
    assert plotted["lr"]["adam"][0] == pytest.approx(1e-3)
    png = (bundle / "training" / "history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    from PIL import Image

    gif = Image.open(bundle / "training" / "reconstructions.gif")
    assert gif.n_frames == 2  # epochs 2 and 4 were saved
    assert np.asarray(gif.convert("L")).std() > 5  # not blank


def test_sizes_the_network_cannot_take_are_rounded_with_a_warning(category: Path, tmp_path: Path, caplog) -> None:
    bundle = train(_options(category, tmp_path / "b", image_size="30x44", epochs=1), progress=False).bundle
    assert read_manifest(bundle)["network"]["input"]["size"] == [32, 48]
    assert "does not fit the network; using 32x48" in caplog.text


@pytest.mark.parametrize("channels", [1, 3])
def test_grey_and_colour_training_images_mix(tmp_path: Path, channels: int) -> None:
    data = make_synthetic_category(tmp_path / "mixed", size=32, n_train=10, n_test_good=2, n_test_defect=2)
    for path in sorted((data / "train" / "good").glob("*.png"))[::2]:
        grey = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(path), grey)
    assert cv2.imread(str(next((data / "train" / "good").glob("000.png"))), cv2.IMREAD_UNCHANGED).ndim == 2
    bundle = train(_options(data, tmp_path / "b", epochs=1, channels=channels), progress=False).bundle
    assert read_manifest(bundle)["network"]["input"]["channels"] == channels


def test_no_good_validation_images_falls_back_to_the_training_loss(tmp_path: Path, caplog) -> None:
    data = make_synthetic_category(tmp_path / "few", size=32, n_train=2, n_test_good=2, n_test_defect=3)
    bundle = train(_options(data, tmp_path / "b", epochs=2), progress=False).bundle
    assert "no good images" in caplog.text
    assert all("val" not in h for h in json.loads((bundle / "history.json").read_text()))


class Toy:
    """A one-weight Trainable whose loss turns bad at a chosen step."""

    def __init__(self, bad_at: int, value: float) -> None:
        self.net = torch.nn.Conv2d(1, 1, 1)
        self.modules = {"net": self.net}
        self.optimizers = {"sgd": torch.optim.SGD(self.net.parameters(), lr=0.01)}
        self.schedulers: dict = {}
        self.steps, self.bad_at, self.value = 0, bad_at, value

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        self.steps += 1
        loss = (self.net(batch / 255) - batch / 255).pow(2).mean()
        self.optimizers["sgd"].zero_grad()
        loss.backward()
        self.optimizers["sgd"].step()
        return {"loss": self.value if self.steps == self.bad_at else float(loss.detach()) + 1.0}

    def validation_losses(self, batch: torch.Tensor) -> dict[str, float]:
        return {"loss": 1.0}

    def reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch / 255).clamp(0, 1)

    def end_epoch(self, validation: dict[str, float]) -> None:
        pass

    def learning_rates(self) -> dict[str, float]:
        return {"sgd": 0.01}


@pytest.mark.parametrize("value", [float("nan"), 1e9])
def test_a_nan_or_exploding_loss_stops_naming_epoch_and_rate(tmp_path: Path, value: float) -> None:
    images = torch.randint(0, 255, (8, 1, 8, 8), dtype=torch.uint8)
    settings = LoopSettings(epochs=5, batch_size=4, out=tmp_path, patience=0, progress=False)
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 3 .*learning rate sgd 0.01.*epoch 2\)"):
        EpochLoop(Toy(bad_at=5, value=value), LoopData(images, images[:2]), settings).run()
    assert (tmp_path / "checkpoints" / "last-good-epoch-0002" / "state.safetensors").is_file()


def test_ctrl_c_writes_a_checkpoint_exits_cleanly_and_resumes(category: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    args = ["--data", str(category), "--out", str(out), "--model", "autoencoder", "--image-size", "32",
            "--base-channels", "8", "--checkpoint-every", "1", "--patience", "0", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "from linewatch.train.cli import main; main()", *args]
    process = subprocess.Popen([*command, "--epochs", "500"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "epoch-0002").is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (out / "checkpoints" / "epoch-0002").is_dir(), "two epochs did not finish in 120 s"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "training interrupted after epoch" in stderr
    interrupted = sorted((out / "checkpoints").glob("interrupted-epoch-*"))
    assert len(interrupted) == 1 and f"--resume {interrupted[0]}" in stderr
    epoch = json.loads((interrupted[0] / "state.json").read_text())["loop"]["epoch"]
    assert epoch >= 2
    resumed = subprocess.run([*command, "--epochs", str(epoch + 1), "--resume", str(interrupted[0])], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads((out / "history.json").read_text())) == epoch + 1


def test_ssim_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((40, 48)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    _, expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, full=True)
    got = ssim_map(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got[5:-5, 5:-5], expected[5:-5, 5:-5], atol=1e-4)
    same = ssim_map(torch.from_numpy(a)[None, None], torch.from_numpy(a)[None, None])
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize(("residual", "bottleneck"), [("l2", None), ("ssim", 4)])
def test_autoencoder_shapes_and_residuals(residual: str, bottleneck: int | None) -> None:
    net = ConvAutoencoder(channels=1, depth=3, base_channels=8, bottleneck=bottleneck, residual=residual).eval()
    images = torch.rand(2, 1, 32, 48) * 255
    with torch.no_grad():
        recon = net.reconstruct(images / 255)
        out = net(images)
    assert recon.shape == (2, 1, 32, 48) and float(recon.min()) >= 0 and float(recon.max()) <= 1
    assert out.shape == (2, 1, 32, 48)
    if residual == "l2":
        torch.testing.assert_close(out, (images / 255 - recon) ** 2)


def test_ganomaly_network_outputs_and_losses() -> None:
    net = GanomalyNetwork(size=32, channels=3, latent=16, features=8).eval()
    images = torch.rand(3, 3, 32, 32) * 255
    with torch.no_grad():
        residual, distance = net(images)
        fake, z, z_again = net.generator(images / 127.5 - 1)
    assert residual.shape == (3, 1, 32, 32) and distance.shape == (3,)
    torch.testing.assert_close(distance, (z - z_again).pow(2).flatten(1).mean(1))
    x = images / 127.5 - 1
    terms = generator_terms(torch.ones(2, 4), torch.zeros(2, 4), x, fake, z, z_again)
    assert float(terms["adv"]) == pytest.approx(1.0)
    torch.testing.assert_close(terms["con"], (fake - x).abs().mean())
    assert float(discriminator_loss(torch.full((4,), 20.0), torch.full((4,), -20.0))) < 1e-6


class NormToy(Toy):
    """A Toy with a BatchNorm whose running statistics each training step leaves stale (set to garbage)."""

    def __init__(self, precise: bool) -> None:
        super().__init__(bad_at=-1, value=0.0)
        self.norm = torch.nn.BatchNorm2d(1)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), self.norm)
        self.critic = torch.nn.BatchNorm2d(1)  # trained elsewhere, never on the reconstruction path
        self.critic.running_mean.fill_(3.0)
        self.modules = {"net": self.net, "critic": self.critic}
        self.optimizers = {"sgd": torch.optim.SGD(self.net.parameters(), lr=0.01)}
        self.precise_batch_norm = precise

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        losses = super().train_step(batch)
        self.norm.running_mean.fill_(1e6)
        return losses


@pytest.mark.parametrize("precise", [True, False])
def test_batch_norm_statistics_are_re_estimated_after_each_epoch(tmp_path: Path, precise: bool) -> None:
    """The running mean must be the conv outputs' exact mean over the training images (equal batches), under the
    final weights, and BatchNorm's momentum must be restored; without the option the stale value stays."""
    images = torch.randint(0, 255, (8, 1, 8, 8), dtype=torch.uint8)
    model = NormToy(precise)
    settings = LoopSettings(epochs=2, batch_size=4, out=tmp_path, patience=0, progress=False)
    EpochLoop(model, LoopData(images, images[:2]), settings).run()
    conv = model.net[0]
    with torch.no_grad():
        expected = conv(images.float() / 255).mean()
    assert float(model.critic.running_mean) == 3.0  # statistics the pass does not re-estimate are kept
    if precise:
        assert torch.allclose(model.norm.running_mean, expected.reshape(1), rtol=1e-5)
        assert model.norm.momentum == 0.1
    else:
        assert float(model.norm.running_mean) == 1e6
