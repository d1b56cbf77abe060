"""What a finished render becomes: exports (BigTIFF, Deep Zoom, PNG, JPEG, WebP) streamed from
the store, dask readers, Deep Zoom geometry and ``inspect``."""
