"""Many seeds' base images of one model, scored for layout novelty, and a sheet to look at.

    python benchmarks/base_seeds.py MODEL_DIR SHEET.png [--height 192] [--seeds 8] [--wide 1.0]
    python benchmarks/base_seeds.py --photo IMAGE SHEET.png [--preset cpu] [--set base.noise=0.5] [...]

With ``--photo`` the patch base is built straight from IMAGE, as training keeps it (the preset's
base: the photo kept at base scale; nothing is learned), so any photo is scored in seconds without
training the SR half.

Draws seeds 0..N-1 of the model's patch base at ``--height`` rows and the photo's aspect
times ``--wide`` (2.0: a panorama twice as wide), and prints each seed's layout novelty against
the photo (``quality/novelty.py``, the measure ``evaluate`` reports), the novelty between every
two seeds (mean, least, and each seed's nearest other), each seed's flat share (``flat_share``:
smears and ghosts, where patches that disagree were blended), and writes SHEET.png: the photo
at the same height, then the seeds, three a row. Quick (seconds a seed at 192 rows); no Ray, no
store.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyvips
import torch
import torch.nn.functional as F

from ourgan_dist import images
from ourgan_dist.config import apply_settings, preset
from ourgan_dist.errors import ConfigError
from ourgan_dist.models import checkpoint
from ourgan_dist.train.loop import keep_photo
from ourgan_dist.quality.novelty import novelty

GAP = 4  # px between panels
FLAT_BOX = 9  # px: the box the detail energy is averaged over (flat_share)
FLAT_QUANTILE = 5  # percent: a pixel is flat where its energy is below the photo's flattest this many


def detail_energy(img: np.ndarray) -> np.ndarray:
    """(h, w): the mean |Laplacian| of a (3, h, w) 0..255 image's grey over a FLAT_BOX square."""
    g = torch.from_numpy(np.ascontiguousarray(img)).float().mean(0)[None, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    lap = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), kernel).abs()
    r = FLAT_BOX // 2
    return F.avg_pool2d(F.pad(lap, (r, r, r, r), mode="replicate"), FLAT_BOX, 1)[0, 0].numpy()


def flat_share(sample: np.ndarray, photo: np.ndarray) -> float:
    """The share of a sample's pixels flatter than the photo's flattest FLAT_QUANTILE percent
    (the photo at the same height scores FLAT_QUANTILE / 100): blended patches show as flat
    smears and ghosts, where the photo has detail everywhere (docs/quality.md, "Flat smears")."""
    return float((detail_energy(sample) < np.percentile(detail_energy(photo), FLAT_QUANTILE)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model directory, or with --photo the photo")
    ap.add_argument("--photo", action="store_true", help="MODEL is a photo: build the patch base from it")
    ap.add_argument("--preset", default="cpu", help="with --photo: the preset whose base is built (default cpu)")
    ap.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="with --photo: a setting of the preset's config, as `train --set` (repeatable), e.g. base.noise=0.5",
    )
    ap.add_argument("sheet")
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--wide", type=float, default=1.0, help="width over the photo's aspect (2.0: a 2x panorama)")
    a = ap.parse_args()
    if a.settings and not a.photo:
        ap.error("--set changes the config a base is built with: give --photo")
    if a.photo:
        if preset(a.preset).base.kind != "patches":
            ap.error(f"--preset {a.preset}: its base is not a patch base; --photo builds only a patch base")
        try:
            cfg = apply_settings(preset(a.preset), a.settings)
        except ConfigError as e:
            ap.error(str(e))
        model = checkpoint.build(cfg)
        keep_photo(model, a.model, images.probe(a.model))
        base = model.base
    else:
        base = checkpoint.load(a.model).base
    ph, pw = base.photo.shape[2:]
    h = a.height
    w_photo = round(pw * h / ph)
    w = round(w_photo * a.wide)
    photo = F.interpolate(base.photo.float(), size=(h, w_photo), mode="area")[0].numpy()  # (3, h, w) 0..255
    samples = [((base.generate(h, w, s)[0].numpy() + 1) * 127.5).clip(0, 255) for s in range(a.seeds)]
    figures = novelty(samples, photo)  # the measure evaluate reports
    print(
        f"{a.seeds} seeds at {w}x{h}; novelty against the photo:",
        " ".join(f"{v:.1f}" for v in figures["per_seed"]),
        f"mean {figures['mean']:.1f}",
    )
    flat = [flat_share(x, photo) for x in samples]
    print("flat share:", " ".join(f"{v:.3f}" for v in flat), f"mean {np.mean(flat):.3f} (the photo: {FLAT_QUANTILE / 100:.3f})")
    if a.seeds > 1:
        between = np.full((a.seeds, a.seeds), np.nan)
        between[np.triu_indices(a.seeds, 1)] = figures["between_seeds"]  # pairs (i, j), i < j, in order
        between = np.fmin(between, between.T)
        nearest = " ".join(f"{np.nanmin(between[i]):.1f}" for i in range(a.seeds))
        least = min(figures["between_seeds"])
        print(f"between seeds: mean {figures['between_seeds_mean']:.1f}, least {least:.1f}; each seed's nearest other: {nearest}")
    panels = [photo] + samples
    cols = 3
    rows = -(-len(panels) // cols)
    width = max(w, w_photo)
    grid = np.full((rows * (h + GAP), cols * (width + GAP), 3), 255, np.uint8)
    for k, p in enumerate(panels):
        r, c = divmod(k, cols)
        grid[r * (h + GAP) : r * (h + GAP) + h, c * (width + GAP) : c * (width + GAP) + p.shape[2]] = p.transpose(1, 2, 0).astype(
            np.uint8
        )
    pyvips.Image.new_from_array(np.ascontiguousarray(grid), interpretation="srgb").write_to_file(a.sheet)
    print(f"wrote {a.sheet}: the photo, then seeds 0-{a.seeds - 1}, three a row")


if __name__ == "__main__":
    with torch.no_grad():
        main()
