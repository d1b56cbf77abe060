"""``ourgan-dist view``: a deep-zoom page of a render store, its tiles cut on the fly.

``ViewServer`` (server.py) serves the page, OpenSeadragon (put in the package by its build), the
render's config and Deep Zoom tiles that ``DeepZoom`` (tiles.py) reads from the store's OME-Zarr pyramid.
"""
