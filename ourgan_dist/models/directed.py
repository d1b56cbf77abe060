"""Where a photo has a left-right direction that its mirror image would reverse (grass blown one
way, a cable, a sky lit from one side): the patch base draws no mirrored patches there
(models/patches.py, ``doubled``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIRECTED = 0.5  # a region whose gradients lean one way this much is not drawn mirrored ...
DIRECTED_RAMP = 0.5  # ... nor a smooth one whose brightness ramps one way this much
DIRECTED_BOX = 1 / 8  # the lean measured over boxes this fraction of the height a side, the ramp over twice that
DIRECTED_ROWS = 256  # once, on the photo at most this many rows tall
DIRECTED_FLOOR = 0.1  # gradients weaker than this fraction of the photo's mean (a flat sky's noise) lean no way


def at_size(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A (H, W) bool map resized to (h, w) (nearest)."""
    return F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0] > 0.5


def directed(img: torch.Tensor) -> torch.Tensor:
    """(h, w) bool: where the photo (1, 3, h, w) has a left-right direction that its mirror image
    reverses: a texture whose gradients lean one way (grass blown one way, a cable: twice the mean
    of gx * gy over the gradients' energy is 1 for lines all at 45 degrees, 0 for upright, level
    or mixed ones), or a smooth stretch whose brightness ramps one way (a sky lit from one side:
    the mean of gx over the mean of |gx|, where the energy is below the photo's mean). Mirrored
    patches from there met upright ones in a herringbone and in upright bands of light; mirrored
    rock, snow or cloud is a new view of the same place."""
    lum = img[0].mean(0)[None, None]
    gx = F.pad(lum[..., :, 2:] - lum[..., :, :-2], (1, 1, 0, 0), mode="replicate")
    gy = F.pad(lum[..., 2:, :] - lum[..., :-2, :], (0, 0, 1, 1), mode="replicate")

    def box(a, side):
        k = max(1, round(lum.shape[-2] * side)) // 2 * 2 + 1
        return F.avg_pool2d(F.pad(a, (k // 2,) * 4, mode="replicate"), k, 1)

    energy = box(gx * gx + gy * gy, DIRECTED_BOX)
    lean = 2 * box(gx * gy, DIRECTED_BOX).abs() / (energy + 1e-8) * (energy > DIRECTED_FLOOR * energy.mean())
    # over a box wider than a texture's grain, its steps up and down cancel; a ramp's add up
    ramp = box(gx, 2 * DIRECTED_BOX).abs() / (box(gx.abs(), 2 * DIRECTED_BOX) + 1e-8) * (energy < energy.mean())
    return ((lean > DIRECTED) | (ramp > DIRECTED_RAMP))[0, 0]
