"""Batched image transforms that run on the device, on whole uint8 batches at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 N×C×H×W → float32, scaled to [0, 1], then standardised per channel."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad each side by ``padding`` and cut a random H×W window per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), device=images.device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), device=images.device, generator=generator)
    # One flat gather: index (row * padded width + column) per output pixel, for all channels.
    width = w + 2 * padding
    rows = top[:, None, None] + torch.arange(h, device=images.device)[None, :, None]  # n×h×1
    cols = left[:, None, None] + torch.arange(w, device=images.device)[None, None, :]  # n×1×w
    index = (rows * width + cols).view(n, 1, h * w).expand(-1, images.shape[1], -1)
    return padded.flatten(2).gather(2, index).view(n, images.shape[1], h, w)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the images left to right."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)
