"""ourgan-dist: one-shot ultra-high-resolution image synthesis with an exact distributed renderer."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_result"]


def open_result(
    url: str, storage_options: dict | None = None, *, scale: int = 0, xarray: bool = False, require_complete: bool = True
):
    """The rendered image at ``url`` as a lazy dask array (c, y, x) uint8, or with ``xarray=True``
    an ``xarray.DataArray`` with dims (y, x, c). ``scale`` picks a pyramid level (0: full size)."""
    from .outputs.reading import open_result as _open

    return _open(url, storage_options, scale=scale, xarray=xarray, require_complete=require_complete)
