"""The GAN detector's scorer: find each test image's most similar generated image, score the difference.

The exported network hands over the test image's `embedding` and its `pixels` ([0, 1]); here FAISS finds
the nearest embedding in the reference bank of generated images, and the residual between the image and
that match (absolute difference and/or 1 - SSIM, averaged over channels) is the anomaly map, which the
shared map step blurs. With `refine_steps` > 0 the match is refined by gradient steps on its latent vector
(AnoGAN, Schlegl et al. 2017): more accurate, but it needs PyTorch and the generator, so such a bundle
cannot be streamed by the runtime or exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from linewatch.metrics.ssim import ssim_map
from linewatch.models.patchcore.knn import NearestNeighbours

RESIDUALS = ("abs+ssim", "abs", "ssim")
IMAGE_SCORES = ("max", "mean")
BANK_IMAGES = "bank_images.npy"
BANK_EMBEDDINGS = "bank_embeddings.npy"
BANK_LATENTS = "bank_latents.npy"
GENERATOR = "generator.safetensors"
REFINE_LR = 0.05


def residual_maps(x: np.ndarray, match: np.ndarray, kind: str) -> np.ndarray:
    """(N, C, H, W) [0, 1] images and matches -> (N, H, W) float32 residuals."""
    if kind not in RESIDUALS:
        raise ValueError(f"residual {kind!r} is not one of {', '.join(RESIDUALS)}")
    out = np.zeros((len(x), *x.shape[2:]), dtype=np.float32)
    if kind in ("abs", "abs+ssim"):
        out += np.abs(x - match).mean(axis=1)
    if kind in ("ssim", "abs+ssim"):
        out += np.stack([1.0 - ssim_map(a, b) for a, b in zip(x, match, strict=True)])
    return out / 2 if kind == "abs+ssim" else out


class GanScorer:
    """Bank of generated images (uint8 N, C, H, W) and their embeddings; see the module docstring.

    `generator` is {"params", "state"} (numpy weights) after training or {"params", "path"} when loaded; it
    is kept for `inspect-generate` and latent refinement.
    """

    kind = "gan"

    def __init__(self, images: np.ndarray, embeddings: np.ndarray, residual: str = "abs+ssim",
                 image_score: str = "max", refine_steps: int = 0, generator: dict[str, Any] | None = None,
                 latents: np.ndarray | None = None, device: str = "cpu") -> None:
        if len(images) != len(embeddings):
            raise ValueError(f"bank of {len(images)} images but {len(embeddings)} embeddings")
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.residual, self.image_score = residual, image_score
        self.refine_steps, self.generator, self.latents = refine_steps, generator, latents
        self.knn = NearestNeighbours(self.embeddings, device="cpu" if device == "cpu" else "auto")
        self._refiner: Any = None

    @property
    def scores_from_maps(self) -> bool:
        return self.image_score == "max"

    @property
    def stream_problem(self) -> str | None:
        """Why the runtime / export refuses this scorer, or None."""
        if self.refine_steps:
            return (f"this GAN bundle refines every match with {self.refine_steps} latent-optimisation steps "
                    f"(AnoGAN), which needs PyTorch gradients and the generator: it cannot be exported or run by "
                    f"inspect-run; evaluate it with inspect-eval, or retrain with --refine-steps 0 to stream it")
        return None

    def match(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Bank indices of the nearest embeddings and the matched images in [0, 1]."""
        _, index = self.knn.search(outputs["embedding"], 1)
        index = index[:, 0]
        matches = self.images[index].astype(np.float32) / 255.0
        if self.refine_steps:
            matches = self._refine(outputs["pixels"], index)
        return index, matches

    def patch_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        pixels = np.asarray(outputs["pixels"], dtype=np.float32)
        return residual_maps(pixels, self.match(outputs)[1], self.residual)

    def image_scores(self, patch_scores: np.ndarray, maps: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        source = maps if self.image_score == "max" else patch_scores
        flat = source.reshape(len(source), -1)
        return flat.max(axis=1) if self.image_score == "max" else flat.mean(axis=1)

    def _refine(self, pixels: np.ndarray, index: np.ndarray) -> np.ndarray:
        from linewatch.models.gan.refine import Refiner

        if self._refiner is None:
            if self.generator is None or self.latents is None:
                raise ValueError("latent refinement needs the generator and the bank's latent vectors")
            self._refiner = Refiner(self.generator, self.refine_steps, REFINE_LR)
        return self._refiner(pixels, self.latents[index])

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        directory = Path(directory)
        np.save(directory / BANK_IMAGES, self.images, allow_pickle=False)
        np.save(directory / BANK_EMBEDDINGS, self.embeddings, allow_pickle=False)
        files = [BANK_IMAGES, BANK_EMBEDDINGS]
        section: dict[str, Any] = {"kind": self.kind, "bank_images": BANK_IMAGES, "bank_embeddings": BANK_EMBEDDINGS,
                                   "bank_size": len(self.images), "residual": self.residual,
                                   "image_score": self.image_score, "refine_steps": self.refine_steps}
        if self.latents is not None:
            np.save(directory / BANK_LATENTS, self.latents.astype(np.float32), allow_pickle=False)
            section["bank_latents"] = BANK_LATENTS
            files.append(BANK_LATENTS)
        if self.generator is not None:
            if "state" in self.generator:
                from safetensors.numpy import save_file

                save_file(self.generator["state"], str(directory / GENERATOR))
            section["generator"] = {"params": self.generator["params"], "weights": GENERATOR}
            files.append(GENERATOR)
        return section, files

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any], device: str = "cpu") -> GanScorer:
        directory = Path(directory)
        latents = None
        if "bank_latents" in section:
            latents = np.load(directory / section["bank_latents"], allow_pickle=False)
        generator = None
        if "generator" in section:
            generator = {"params": section["generator"]["params"], "path": directory / section["generator"]["weights"]}
        return cls(np.load(directory / section["bank_images"], allow_pickle=False),
                   np.load(directory / section["bank_embeddings"], allow_pickle=False),
                   section["residual"], section["image_score"], int(section.get("refine_steps", 0)),
                   generator, latents, device)
