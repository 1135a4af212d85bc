"""Inverse-compositional Lucas-Kanade registration of grey thumbnails (Baker & Matthews, 2004), with the
frame's gain and bias projected out: `--align lk` / `lk-affine`.

Why not OpenCV's ECC (`--align ecc*`, still supported): ECC linearises on the frame, so every iteration
re-warps its gradients and rebuilds a Hessian; its 40 iterations per level cost 1.2-1.7 ms per frame. The
inverse-compositional form linearises on the reference instead: its steepest-descent images, and the
least-squares solve of [those, reference, 1], are computed once when the reference is loaded, so an iteration
is one warp of the thumbnail and one small product (7 us at 32 x 32, 14 us at 64 x 64 px). The two extra
columns absorb a change of gain and bias, as ECC's correlation does.

Coarse to fine on two levels: at half size, rotation + shift only, from three starting angles (0 and
+-`START_DEG`), keeping the start whose residual is smallest (the turned ones only when the first does not
already match within `ACCEPT_MSE`); then the full motion (affine, or rotation + shift)
at the thumbnail size. Measured on the misaligned proxies (parts turned up to 10 degrees), one start from 0
stopped in a local optimum on the parts turned most, and the affine motion at half size let the symmetric
bottle slide into a wrong scale; the README has the numbers.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

START_DEG = 8.0
# Mean squared residual (of the unit-variance half-size thumbnails) under which the start from 0 degrees is kept
# without trying the turned ones: a match that close leaves them nothing to find. Measured against the full search
# (README): capsule bands 181 of 351 frames kept, none moved more than 0.01 px on five datasets; at 0.005 two
# bottle frames moved 4.4 px. Bundles from before it record none and search all three starts (0).
ACCEPT_MSE = 0.002
ITERATIONS = (20, 10)  # per level, coarse first
TOLERANCE_PX = (0.02, 0.05)  # stop a level once an update moves no thumbnail corner by more than this
MIN_CONTRAST = 1.0  # grey levels: a thumbnail flatter than this has nothing to register
_FLAGS = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

Warp = tuple[float, float, float, float, float, float]  # (a, b, c, d, e, f): x' = a x + b y + c, y' = d x + e y + f


def _smooth(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(np.asarray(image, np.float32), (3, 3), 0)


def _normalise(image: np.ndarray) -> np.ndarray:
    mean, std = cv2.meanStdDev(image)
    return (image - np.float32(mean[0, 0])) * np.float32(1.0 / max(float(std[0, 0]), 1e-3))


class _Level:
    """One pyramid level of the reference: its normalised image and the precomputed least-squares solve."""

    def __init__(self, template: np.ndarray, affine: bool) -> None:
        height, width = template.shape
        gx = cv2.Sobel(template, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        gy = cv2.Sobel(template, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        v, u = np.mgrid[0:height, 0:width].astype(np.float32)
        steepest = [gx * u, gy * u, gx * v, gy * v, gx, gy] if affine else [gy * u - gx * v, gx, gy]
        columns = np.stack([s.ravel() for s in steepest] + [template.ravel(), np.ones(template.size, np.float32)], 1)
        self.solve = np.linalg.pinv(columns.astype(np.float64)).astype(np.float32)  # (params + 2, pixels)
        self.template = template
        self.size = (width, height)
        self.span = float(max(width, height))
        self.affine = affine


class InverseCompositional:
    """Registers grey thumbnails to `reference`; `affine` adds scale, aspect and shear to rotation + shift."""

    def __init__(self, reference: np.ndarray, affine: bool, accept_mse: float = ACCEPT_MSE) -> None:
        fine = _normalise(_smooth(reference))
        self.levels = (_Level(_normalise(cv2.pyrDown(fine)), affine=False), _Level(fine, affine))
        self.accept_mse = accept_mse

    def estimate(self, thumb: np.ndarray) -> np.ndarray | None:
        """The 2x3 warp from reference to thumbnail pixels, or None for a thumbnail without contrast."""
        if float(cv2.meanStdDev(thumb)[1][0, 0]) < MIN_CONTRAST:
            return None
        fine = _normalise(_smooth(thumb))
        coarse_level, fine_level = self.levels
        coarse = _normalise(cv2.pyrDown(fine))
        height, width = coarse.shape
        cx, cy = (width - 1) / 2, (height - 1) / 2
        found: list[tuple[Warp, float]] = []
        for degrees in (0.0, START_DEG, -START_DEG):  # turned about the thumbnail's centre
            if found and found[0][1] < self.accept_mse * coarse.size:
                break
            cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
            start = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
            found.append(_iterate(coarse_level, coarse, start, ITERATIONS[0], TOLERANCE_PX[0]))
        a, b, c, d, e, f = min(found, key=lambda warp_residual: warp_residual[1])[0]
        warp, _ = _iterate(fine_level, fine, (a, b, 2 * c, d, e, 2 * f), ITERATIONS[1], TOLERANCE_PX[1])
        matrix = np.array(warp, np.float32).reshape(2, 3)
        return matrix if np.isfinite(matrix).all() else None


def _iterate(level: _Level, image: np.ndarray, warp: Warp, iterations: int, tolerance: float) -> tuple[Warp, float]:
    """Gauss-Newton steps W <- W o dW^-1 until the update is below `tolerance` px; the warp and its last residual
    (sum of squared differences, before that update)."""
    a, b, c, d, e, f = warp
    residual = math.inf
    for _ in range(iterations):
        error = cv2.warpAffine(image, np.array([[a, b, c], [d, e, f]]), level.size, flags=_FLAGS,
                               borderMode=cv2.BORDER_REPLICATE)
        error -= level.template
        flat = error.ravel()
        residual = float(flat @ flat)
        p = (level.solve @ flat).tolist()
        if level.affine:  # dW = [[1 + p0, p2, p4], [p1, 1 + p3, p5]]
            det = (1 + p[0]) * (1 + p[3]) - p[1] * p[2]
            if not det:  # an update that flattens the image: no registration (the caller gets None)
                return (math.nan,) * 6, residual
            ia, ib, id_, ie = (1 + p[3]) / det, -p[2] / det, -p[1] / det, (1 + p[0]) / det
            tx, ty = p[4], p[5]
            step = (abs(p[0]) + abs(p[1]) + abs(p[2]) + abs(p[3])) * level.span + abs(tx) + abs(ty)
        else:  # dW = rotation by p0, shift (p1, p2)
            cos, sin = math.cos(p[0]), math.sin(p[0])
            ia, ib, id_, ie = cos, sin, -sin, cos
            tx, ty = p[1], p[2]
            step = abs(p[0]) * level.span + abs(tx) + abs(ty)
        itx, ity = -(ia * tx + ib * ty), -(id_ * tx + ie * ty)
        a, b, c, d, e, f = (a * ia + b * id_, a * ib + b * ie, a * itx + b * ity + c,
                            d * ia + e * id_, d * ib + e * ie, d * itx + e * ity + f)
        if step < tolerance:
            break
    return (a, b, c, d, e, f), residual
