"""Pure arithmetic of a render: boxes and task keys, the plan (levels, tiles, halos, chunks),
what it will cost, the viewing pyramid's blocks, noise as a function of global coordinates, and
pixel conversions. No torch, Ray, Zarr or I/O (the layering test checks it)."""
