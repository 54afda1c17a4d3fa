"""The training split's statistics, accumulated chunk by chunk while it is prepared: §2's per-pixel
mean image and §4.1's eigenpairs of the 3×3 covariance of all RGB pixels (float64 sums, never all
pixels at once)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PixelStats:
    """Running sums for the mean image and the RGB covariance, float64."""

    image_sum: np.ndarray  # [S, S, C], sum of images in 0–255 units
    pixel_sum: np.ndarray  # [C], sum of pixels in [0, 1]
    pixel_outer: np.ndarray  # [C, C], sum of x xᵀ over pixels in [0, 1]
    images: int = 0
    pixels: int = 0

    @classmethod
    def of(cls, images: np.ndarray) -> PixelStats:
        channels = images.shape[-1]
        x = images.reshape(-1, channels).astype(np.float64) / 255.0
        return cls(images.sum(axis=0, dtype=np.float64), x.sum(axis=0), x.T @ x, len(images), len(x))

    def add(self, other: PixelStats) -> None:
        self.image_sum += other.image_sum
        self.pixel_sum += other.pixel_sum
        self.pixel_outer += other.pixel_outer
        self.images += other.images
        self.pixels += other.pixels

    def mean_image(self) -> np.ndarray:
        """§2: float32 [S, S, C], 0–255 units."""
        return (self.image_sum / self.images).astype(np.float32)

    def pca(self) -> dict:
        """§4.1: eigenpairs of the covariance of all training RGB pixels (pixels in [0, 1])."""
        mean = self.pixel_sum / self.pixels
        cov = self.pixel_outer / self.pixels - np.outer(mean, mean)
        eigvals, eigvecs = np.linalg.eigh(cov)
        order = np.argsort(eigvals)[::-1]
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        eigvecs *= np.where(eigvecs[0] > 0, -1.0, 1.0)  # the sign of PAPER.md's constants (red component < 0)
        return {"eigvals": eigvals.tolist(), "eigvecs": eigvecs.tolist(), "pixel_mean": mean.tolist()}


def merge(total: PixelStats | None, part: PixelStats | None) -> PixelStats | None:
    if part is None:
        return total
    if total is None:
        return part
    total.add(part)
    return total
