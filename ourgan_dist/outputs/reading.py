"""Reading a render back: dask (and optionally xarray) over the store's OME-Zarr arrays, one dask
chunk per shard (a store of format 1, unsharded: per chunk)."""

from __future__ import annotations

from ..store.canvas import Canvas
from ..errors import StoreError


def open_result(
    url: str, storage_options: dict | None = None, *, scale: int = 0, xarray: bool = False, require_complete: bool = True
):
    import dask.array as da

    canvas = Canvas(url, storage_options)
    if require_complete:
        canvas.require_complete("reading")
    if not 0 <= scale < len(canvas.plan.pyramid_shapes):
        raise StoreError(f"store {url!r}: no pyramid scale {scale}; it has 0..{len(canvas.plan.pyramid_shapes) - 1}")
    z = canvas.array(str(scale))
    arr = da.from_zarr(z, chunks=z.shards or z.chunks)  # a dask chunk per shard: one object per task
    if not xarray:
        return arr
    import xarray as xr

    return xr.DataArray(
        arr.transpose(1, 2, 0),
        dims=("y", "x", "c"),
        coords={"c": ["red", "green", "blue"]},
        attrs={k: v for k, v in canvas.info.items() if k in ("seed", "model_id", "size")},
    )
