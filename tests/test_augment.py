"""Batched device-side augmentation and normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ps_lightning.data.augment import normalize, random_crop, random_hflip


def _images(n: int = 64, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    # Values 1..255: a zero can only come from the crop's padding.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def _crop_offsets(images: torch.Tensor, out: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    """For each image, the window of the padded image that equals the output (brute force)."""
    _, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    offsets = []
    for i in range(len(images)):
        matches = [
            (top, left)
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
            if torch.equal(padded[i, :, top : top + h, left : left + w], out[i])
        ]
        assert matches, f"image {i} is not a window of its padded self"
        offsets.append(matches[0])
    return offsets


def test_random_crop_without_padding_is_identity() -> None:
    images = _images()
    out = random_crop(images, 0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, images)


def test_random_crop_cuts_a_window_of_the_zero_padded_image() -> None:
    images = _images(c=3)
    padding = 2
    out = random_crop(images, padding, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    # Every channel of an image is cut at the same place: the brute force compares C×H×W.
    offsets = _crop_offsets(images, out, padding)
    # Offsets are drawn per image over the whole range, not one shift for the batch.
    assert len(set(offsets)) > 10
    assert {top for top, _ in offsets} == set(range(2 * padding + 1))
    assert {left for _, left in offsets} == set(range(2 * padding + 1))


def test_random_crop_is_reproducible_with_a_generator() -> None:
    images = _images()
    first = random_crop(images, 3, generator=torch.Generator().manual_seed(7))
    again = random_crop(images, 3, generator=torch.Generator().manual_seed(7))
    other = random_crop(images, 3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_random_hflip_mirrors_some_images_and_keeps_the_others() -> None:
    images = _images(n=64, c=3)
    out = random_hflip(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    kept = mirrored = 0
    for image, result in zip(images, out, strict=True):
        if torch.equal(result, image):
            kept += 1
        elif torch.equal(result, image.flip(-1)):  # all channels mirrored together
            mirrored += 1
        else:
            raise AssertionError("output is neither the image nor its mirror")
    assert kept > 0 and mirrored > 0
    assert kept + mirrored == 64


def test_normalize_scales_to_unit_range_then_standardises_per_channel() -> None:
    images = torch.tensor([0, 255, 51, 102], dtype=torch.uint8).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    out = normalize(images, mean=(0.2, 0.5), std=(0.5, 0.25))
    assert out.dtype == torch.float32
    assert out.shape == (1, 2, 2, 2)
    # channel 0: (x/255 − 0.2)/0.5; channel 1: (x/255 − 0.5)/0.25
    torch.testing.assert_close(out[0, 0].flatten(), torch.tensor([-0.4, 1.6, 0.0, 0.4]))
    torch.testing.assert_close(out[0, 1].flatten(), torch.tensor([-2.0, 2.0, -1.2, -0.4]))
