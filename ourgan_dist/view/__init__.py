"""``ourgan-dist view``: a deep-zoom page of a render store, its tiles cut on the fly.

``ViewServer`` (server.py) serves the page, OpenSeadragon (from its npm package), the render's
config and Deep Zoom tiles that ``DeepZoom`` (tiles.py) reads from the store's OME-Zarr pyramid.
"""
