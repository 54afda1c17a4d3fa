"""The conv1 kernels (Fig. 3), tiled per tower, and how colourful each tower's kernels are.

§6.1: "the kernels on GPU 1 are largely color-agnostic, while the kernels on on GPU 2 are largely
color-specific". The colour score of a kernel measures that: take out its mean (one number over
all its weights), then split what is left into the grey part (the same value in R, G and B at a
pixel: the mean over channels) and the rest; the score is the rest's share of the energy, from 0
(a grey kernel: edges and blobs of luminance) to 1 (no luminance at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AlexNetError


def colour_scores(weight: torch.Tensor) -> torch.Tensor:
    """[K] colour score of each kernel of an RGB conv weight [K, 3, h, w] (see the module's text)."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise AlexNetError(f"the colour score needs RGB kernels [K, 3, h, w], got {tuple(weight.shape)}")
    w = weight.double()
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    grey = w.mean(dim=1, keepdim=True)
    colour = w - grey
    total = (w * w).sum(dim=(1, 2, 3)).clamp_min(1e-30)
    return ((colour * colour).sum(dim=(1, 2, 3)) / total).float()


@dataclass(frozen=True)
class FilterReport:
    weight: torch.Tensor  # [K, C, h, w] conv1 weights
    towers: int  # 2 for a grouped (§3.2) model: kernels [0, K/2) are tower 1, the rest tower 2
    scores: torch.Tensor | None  # [K] colour scores (None for grey input)

    def tower_scores(self) -> list[float]:
        """Mean colour score per tower."""
        if self.scores is None:
            return []
        return [float(part.mean()) for part in self.scores.chunk(self.towers)]

    def tiles(self) -> torch.Tensor:
        """[K, h, w, C] kernels in [0, 1], each contrast-stretched on its own (min → 0, max → 1)."""
        w = self.weight.float()
        low = w.amin(dim=(1, 2, 3), keepdim=True)
        high = w.amax(dim=(1, 2, 3), keepdim=True)
        return ((w - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1)

    def as_dict(self) -> dict:
        return {
            "kernels": int(self.weight.shape[0]),
            "towers": self.towers,
            "kernel_size": list(self.weight.shape[2:]),
            "colour_scores": None if self.scores is None else self.scores.tolist(),
            "tower_colour_scores": self.tower_scores(),
        }


def conv1_report(model) -> FilterReport:
    """Fig. 3's view of a model: its conv1 weights, towers and colour scores."""
    if not hasattr(model, "layer"):
        raise AlexNetError("this model has no conv1 layer to show")
    weight = model.layer("conv1").weight.detach().cpu()
    towers = 2 if model.layer("conv2").groups == 2 else 1
    scores = colour_scores(weight) if weight.shape[1] == 3 else None
    return FilterReport(weight, towers, scores)


def tile_layout(report: FilterReport, per_row: int = 16) -> list[tuple[int, int, int, int]]:
    """(kernel, tower, row, column) of every tile: each tower its own block of rows, tower 1 on top
    (Fig. 3 shows GPU 1's 48 kernels above GPU 2's)."""
    per_tower = report.weight.shape[0] // report.towers
    rows_per_tower = -(-per_tower // per_row)
    layout = []
    for k in range(report.weight.shape[0]):
        tower, j = divmod(k, per_tower)
        layout.append((k, tower, tower * rows_per_tower + j // per_row, j % per_row))
    return layout
