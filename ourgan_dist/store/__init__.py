"""The render store: filesystems and retries over fsspec, the OME-Zarr canvas, completion
records, the one-writer lease, fenced determinism and crash-safe whole-file writes."""
