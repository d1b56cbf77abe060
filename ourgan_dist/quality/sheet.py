"""A contact sheet a person can open: the photo beside new images of several seeds.

Each seed's panel is its base image, the level where the scene's arrangement is decided (the SR
levels above it add detail, not layout): at the base size a render of ``size`` draws (the demo), or
the very samples a report measured (``photo_sheet``, as ``evaluate`` does). Panels are labelled;
the sheet is one PNG written with pyvips.
"""

from __future__ import annotations

import numpy as np

PANEL_WIDTH = 512  # every panel is shown this wide
GAP = 8
LABEL_HEIGHT = 22
PNG_MARK = ("png-comment-0-Software", "ourgan-dist")  # a text chunk in every picture written here


def write_png(image, path: str) -> str:
    """Write the pyvips ``image`` to ``path`` as a PNG that says it is ours (``PNG_MARK``): a
    later run replaces a picture of that name only if it is (``is_own_png``). Returns ``path``."""
    import pyvips

    image = image.copy()
    image.set_type(pyvips.GValue.gstr_type, *PNG_MARK)
    image.write_to_file(path)
    return path


def is_own_png(path: str) -> bool:
    """Whether ``path`` is a picture ``write_png`` wrote (a user's file of the same name is not)."""
    import pyvips

    try:
        image = pyvips.Image.new_from_file(path, revalidate=True)  # not libvips' cached read of an earlier file there
        return PNG_MARK[0] in image.get_fields() and image.get(PNG_MARK[0]) == PNG_MARK[1]
    except pyvips.Error:
        return False


def _pixels(x) -> np.ndarray:
    """(1, 3, h, w) tensor in [-1, 1] -> (h, w, 3) uint8."""
    a = ((x[0].float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(a)


def _panel(pixels: np.ndarray, caption: str):
    import pyvips

    im = pyvips.Image.new_from_memory(pixels.data, pixels.shape[1], pixels.shape[0], 3, "uchar")
    im = im.resize(PANEL_WIDTH / im.width, kernel="lanczos3" if im.width > PANEL_WIDTH else "nearest")
    text = pyvips.Image.text(caption, font="sans 11", width=PANEL_WIDTH - 8)
    label = text.embed(4, (LABEL_HEIGHT - text.height) // 2, PANEL_WIDTH, LABEL_HEIGHT).ifthenelse(0, 255)
    label = label.bandjoin([label, label]).cast("uchar")
    return label.join(im.cast("uchar"), "vertical", background=[255, 255, 255])


def seed_sheet(
    model, photo_path: str, width: int, height: int, seeds: list[int], path: str, rendered: tuple[int, np.ndarray] | None = None
) -> str:
    """Write ``path``: the photo, then the base image of each seed for a ``width`` x ``height``
    render of ``model``, two panels a row; ``rendered`` (seed, (h, w, 3) uint8) puts a finished
    render of one seed first, in place of drawing its base again. Returns ``path``."""
    import torch

    from ..planning.plan import RenderPlan

    plan = RenderPlan.create(width, height, base=model.config.base, sr=model.config.sr, tile=0)
    bh, bw = plan.base_height, plan.base_width
    panels = [] if rendered is None else [(np.ascontiguousarray(rendered[1]), f"seed {rendered[0]}: the {width}x{height} render")]
    with torch.no_grad():
        for s in seeds:
            caption = f"seed {s}: new scene, base {bw}x{bh} of a {width}x{height} render"
            panels.append((_pixels(model.base.generate(bh, bw, s)), caption))
    return photo_sheet(photo_path, panels, path, photo_width=bw)


def photo_sheet(photo_path: str, panels: list[tuple[np.ndarray, str]], path: str, photo_width: int = PANEL_WIDTH) -> str:
    """Write ``path``: the photo (shown at least ``photo_width`` wide before the panel's resize),
    then each (image (h, w, 3) uint8, caption), two panels a row. Returns ``path``."""
    import pyvips
    import torch

    from .. import images

    photo = torch.from_numpy(images.load_rgb(photo_path, max_width=max(photo_width, PANEL_WIDTH))).unsqueeze(0)
    shown = [_panel(_pixels(photo), f"the photo ({photo.shape[3]}x{photo.shape[2]} shown)")]
    shown += [_panel(pixels, caption) for pixels, caption in panels]
    return write_png(pyvips.Image.arrayjoin(shown, across=2, shim=GAP, background=[255, 255, 255]), path)


def render_preview(store: str, min_width: int = PANEL_WIDTH) -> np.ndarray:
    """(h, w, 3) uint8: the smallest array of a finished render's viewing pyramid that is at least
    ``min_width`` wide (the full image if none is smaller)."""
    import zarr

    group = zarr.open_group(store, mode="r")
    names = sorted((n for n in group.array_keys() if n.isdigit()), key=int)
    pick = names[0]
    for n in names:
        if group[n].shape[2] >= min_width:
            pick = n
    return np.ascontiguousarray(group[pick][...].transpose(1, 2, 0))
