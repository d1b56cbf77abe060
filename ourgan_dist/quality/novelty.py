"""Layout novelty: how far a new image's arrangement is from the photo's, stretches forgiven.

A copy of the photo stays a copy when its rows are stretched or the whole is mirrored, so the
figure forgives exactly those: both images are shrunk to ``WIDTH`` columns (the same number of
rows, the photo's height at that width), cut into ``BANDS`` horizontal bands, and each band of
the photo is aligned to the image's band by the best monotone left-to-right stretch (dynamic
time warping over columns). What is left, the RMS colour difference along the best alignments
(8-bit units), is the novelty; the photo or its mirror image, whichever aligns better, is the
reference. A stretched or mirrored photo scores near 0; the photo with its quarters swapped
scores high. Pure numpy, deterministic.
"""

from __future__ import annotations

import numpy as np

WIDTH = 160  # columns both images are shrunk to
BANDS = 10  # horizontal bands aligned separately


def _shrink(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """(3, H, W) float -> (3, height, width) by area averaging (box filter over fractional cells)."""
    c, h, w = img.shape

    def weights(n_in: int, n_out: int) -> np.ndarray:
        edges = np.linspace(0, n_in, n_out + 1)
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            a, b = edges[i], edges[i + 1]
            lo, hi = int(np.floor(a)), int(np.ceil(b))
            for j in range(lo, min(hi, n_in)):
                m[i, j] = min(b, j + 1) - max(a, j)
            m[i] /= m[i].sum()
        return m

    wy, wx = weights(h, height), weights(w, width)
    return wy @ img.astype(np.float64) @ wx.T  # (3, height, width)


def _dtw_rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS difference along the cheapest monotone alignment of the columns of ``a`` (B, n, d) and
    ``b`` (B, m, d), for each of B bands: (B,). Computed one anti-diagonal at a time (each cell
    needs only the two diagonals before it), all bands at once."""
    cost = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).mean(axis=3)  # (B, n, m) per column pair
    bands, n, m = cost.shape
    total = np.full((bands, n + 1, m + 1), np.inf)
    steps = np.zeros((bands, n + 1, m + 1))
    total[:, 0, 0] = 0.0
    for k in range(2, n + m + 1):  # cells (i, j), 1-based, with i + j = k
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        cands = np.stack([total[:, i - 1, j - 1], total[:, i - 1, j], total[:, i, j - 1]])  # (3, B, cells)
        lens = np.stack([steps[:, i - 1, j - 1], steps[:, i - 1, j], steps[:, i, j - 1]])
        pick = cands.argmin(axis=0)[None]
        total[:, i, j] = np.take_along_axis(cands, pick, 0)[0] + cost[:, i - 1, j - 1]
        steps[:, i, j] = np.take_along_axis(lens, pick, 0)[0] + 1
    return np.sqrt(total[:, n, m] / steps[:, n, m])


def layout_distance(image: np.ndarray, photo: np.ndarray, width: int = WIDTH) -> float:
    """Novelty of ``image`` against ``photo`` (both (3, H, W) uint8 or 8-bit floats): see the module.
    ``width``: the columns the photo is shrunk to (fewer for small images, as the base's layout
    check does)."""
    _, ph, pw = photo.shape
    rows = max(BANDS, round(width * ph / pw))
    _, ih, iw = image.shape
    cols = max(2, round(width * (iw / ih) / (pw / ph)))  # a wider image keeps its extra width
    a = _shrink(image, rows, cols)
    p = _shrink(photo, rows, width)
    edges = np.linspace(0, rows, BANDS + 1).round().astype(int)
    best = np.inf
    band_rows = int(np.diff(edges).min())  # bands of equal height (rounding drops at most a row of a band)

    def columns(img: np.ndarray) -> np.ndarray:  # (3, rows, w) -> (BANDS, w, 3 * band_rows)
        stacked = np.stack([img[:, y0 : y0 + band_rows] for y0 in edges[:-1]])  # (BANDS, 3, band_rows, w)
        return stacked.transpose(0, 3, 1, 2).reshape(BANDS, img.shape[2], -1)

    for ref in (p, p[:, :, ::-1]):
        best = min(best, float(np.sqrt(np.mean(_dtw_rms(columns(a), columns(ref)) ** 2))))
    return best


def quarters_swapped(photo: np.ndarray) -> np.ndarray:
    """The photo with its four quarters reordered (each moved to the diagonally opposite place)."""
    _, h, w = photo.shape
    hy, hx = h // 2, w // 2
    out = photo.copy()
    out[:, : h - hy, : w - hx] = photo[:, hy:, hx:]
    out[:, h - hy :, w - hx :] = photo[:, :hy, :hx]
    out[:, : h - hy, w - hx :] = photo[:, hy:, :hx]
    out[:, h - hy :, : w - hx] = photo[:, :hy, hx:]
    return out


def novelty(samples: list[np.ndarray], photo: np.ndarray) -> dict:
    """Each sample against the photo, samples against each other, and the references: the photo
    with its quarters swapped (high: a new layout) and the photo stretched and mirrored (low: a copy)."""
    per_seed = [round(layout_distance(s, photo), 2) for s in samples]
    pairs = [round(layout_distance(samples[i], samples[j]), 2) for i in range(len(samples)) for j in range(i + 1, len(samples))]
    _, h, w = photo.shape
    xs = (np.linspace(0, 1, w) ** 1.4 * (w - 1)).round().astype(int)  # a monotone stretch of the columns
    stretched = photo[:, :, xs][:, :, ::-1]
    return {
        "per_seed": per_seed,
        "mean": round(float(np.mean(per_seed)), 2),
        "between_seeds": pairs,
        "between_seeds_mean": round(float(np.mean(pairs)), 2) if pairs else None,
        "quarters_swapped": round(layout_distance(quarters_swapped(photo), photo), 2),
        "stretched_mirrored": round(layout_distance(stretched, photo), 2),
    }
