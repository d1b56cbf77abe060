"""The render store: a Zarr v3 group over any fsspec URL, laid out as an OME-Zarr 0.5 image.

    <root>/zarr.json          attributes: "ome" (NGFF 0.5 multiscales) and "ourgan_dist" (the
                              resolved render config, model id, completion flag, store format)
    <root>/0, 1, 2, ...       uint8 (c, y, x) RGB: the result and its viewing pyramid (each half)
    <root>/generation/<l>     float16 (c, y, x) generation levels below the last, in [-1, 1]
    <root>/progress/L<l>, P<s> uint8 (rows, cols) of the task grid of a level (pyramid scale),
                              chunked 1x1: one small object per finished task (records.py)

The image arrays are sharded (Zarr v3 ``sharding_indexed``): a shard is one task's block (a tile,
or a pyramid block), inner chunks are ``plan.chunk`` px for readers. So a task writes one storage
object per array it writes, and a reader still fetches single chunks by byte range. ``--tile 0``
levels (one task per level) keep plain chunks. Store format 1 (before sharding: plain chunks
everywhere, the same records) is still read, inspected, exported and resumed.

Metadata is written first; every later write covers whole storage objects (shards, or chunks of
an unsharded array) of one array and is checked against that grid (invariant I4). A store is
marked complete only when every task of every level and of the pyramid has its completion record
(I6). The completion records are in records.py, URL handling and retries of transient storage
errors in storage.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import zarr

from ..errors import MisalignedWriteError, StoreError
from ..planning.geometry import Box
from ..planning.plan import RenderPlan
from .records import RECORDS, CompletionRecords
from .storage import url_to_fs, with_retries, zarr_store

STORE_FORMAT = 2  # 2: sharded image arrays (one shard per task block)
READABLE_FORMATS = (1, 2)  # 1: plain chunks; its tasks wrote whole chunks, so it resumes as it is
ATTR = "ourgan_dist"
GENERATION = "generation"
FIELD = "field"  # generation/field: where in the photo each base pixel was drawn from (patch bases)


LEASE_ENTRY = "lease"  # the store's lease (lease.py): taken before the store exists, kept by create/clear


def _entries(fs, root: str) -> list[str]:
    """Paths directly under ``root``, except the lease."""
    return [p for p in fs.ls(root, detail=False) if p.rstrip("/").rsplit("/", 1)[-1] != LEASE_ENTRY]


_PARTIAL_GROUP_META = re.compile(r"^zarr\.[0-9a-f]{32}\.partial$")  # zarr's temporary of zarr.json (a crashed write)


def own_entry(name: str, is_dir: bool, images: frozenset[str] = frozenset()) -> bool:
    """Whether an entry directly under a store's root is one a render writes: the group's
    ``zarr.json`` (or zarr's temporary of it), the OME-Zarr image arrays its ``zarr.json`` lists
    (``images``: ``0``, ``1``, ...; a folder named like one that the store does not list is not
    the render's), ``generation/``, ``progress/`` (the completion records) and the ``lease/``."""
    if is_dir:
        return name in images or name in (GENERATION, RECORDS, LEASE_ENTRY)
    return name == "zarr.json" or bool(_PARTIAL_GROUP_META.match(name))


def _image_paths(fs, root: str) -> frozenset[str]:
    """The image arrays (``0``, ``1``, ...) that the store's ``zarr.json`` lists as its OME-Zarr
    multiscale datasets; none where there is no readable render metadata."""
    try:
        meta = json.loads(fs.cat_file(f"{root.rstrip('/')}/zarr.json"))
        scales = meta["attributes"]["ome"]["multiscales"]
        return frozenset(str(d["path"]) for m in scales for d in m["datasets"] if str(d["path"]).isdigit())
    except (FileNotFoundError, NotADirectoryError, KeyError, TypeError, ValueError):
        return frozenset()


def _split_entries(fs, root: str) -> tuple[list[str], list[str]]:
    """One listing of the store's root: (paths of the render's own entries but the lease, names
    of the rest, folders with a trailing ``/``). The rest includes what lies inside the render's
    own folders that a render never writes there (``_foreign_inside``), by its path from the root."""
    try:
        listing = fs.ls(root, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    images = _image_paths(fs, root)
    own, foreign = [], []
    for entry in listing:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        is_dir = entry.get("type") == "directory"
        if not own_entry(name, is_dir, images):
            foreign.append(name + "/" if is_dir else name)
        elif name != LEASE_ENTRY:
            own.append(entry["name"])
            if is_dir:
                foreign += _foreign_inside(fs, root, entry["name"])
    return own, sorted(foreign)


_CHUNK_KEY = re.compile(r"^c(?:/\d+)+(?:\.[0-9a-f]{32}\.partial)?$")  # a chunk's (or shard's) key, or zarr's temporary of it


def _foreign_inside(fs, root: str, folder: str) -> list[str]:
    """The files under one of the render's own folders (``0/``, ``generation/``, ``progress/``)
    that a render does not write: all but the zarr metadata of its groups and arrays and the
    chunks under each array's ``c/`` (or zarr's temporary of either, left by a crash). Paths from
    the store's root."""
    base = root.rstrip("/") + "/"
    files = [f.rstrip("/") for f in fs.find(folder)]
    arrays = set()
    for f in files:
        if f.rsplit("/", 1)[-1] == "zarr.json":
            try:
                if json.loads(fs.cat_file(f)).get("node_type") == "array":
                    arrays.add(f.rsplit("/", 1)[0])
            except (OSError, ValueError, AttributeError):
                pass  # unreadable metadata: its array's chunks are not known to be the render's
    foreign = []
    for f in files:
        meta = f.rsplit("/", 1)[-1] == "zarr.json" or _PARTIAL_GROUP_META.match(f.rsplit("/", 1)[-1])
        array, _, key = f.rpartition("/c/")  # a chunk key's own c/ is the last one (its other parts are digits)
        chunk = array in arrays and _CHUNK_KEY.match("c/" + key)
        if not (meta or chunk):
            foreign.append(f[len(base) :] if f.startswith(base) else f)
    return foreign


def foreign_entries(url: str, storage_options: dict | None = None) -> list[str]:
    """The names (folders with a trailing ``/``) of what is under the store's root that no
    render writes, sorted; [] for a store holding only a render's own entries, or no store."""
    fs, root = url_to_fs(url, storage_options)
    return _split_entries(fs, root)[1]


def refuse_foreign(url: str, foreign: list[str]) -> str:
    """The one-line refusal of ``--overwrite`` on a store that holds entries no render writes."""
    shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
    return (
        f"--overwrite {url!r}: refusing to delete it, it also holds entries that are not part of a render "
        f"({shown}); move them out of it or choose another --out"
    )


def ome_attributes(plan: RenderPlan, name: str) -> dict[str, Any]:
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [1.0, float(2**k), float(2**k)]}]}
        for k in range(len(plan.pyramid_shapes))
    ]
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": datasets,
            }
        ],
        "omero": {
            "channels": [
                {"label": lab, "color": col, "active": True, "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
                for lab, col in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
            ],
            "rdefs": {"model": "color"},
        },
    }


def check_aligned(array_name: str, shape: tuple[int, int], grid: tuple[int, int], box: Box, unit: str = "chunk") -> None:
    """Refuse a write that does not cover whole storage objects (I4): ``grid`` is the (y, x) side
    of the array's objects, its shards (``unit="shard"``) or, unsharded, its chunks."""
    h, w = shape
    ch, cw = grid
    bad = []
    if box.y0 % ch or box.x0 % cw:
        bad.append(f"its start ({box.y0}, {box.x0}) is not on the {ch}x{cw} {unit} grid")
    if (box.y1 % ch and box.y1 != h) or (box.x1 % cw and box.x1 != w):
        bad.append(f"its end ({box.y1}, {box.x1}) is neither on the {unit} grid nor the array edge ({h}, {w})")
    if not (0 <= box.y0 < box.y1 <= h and 0 <= box.x0 < box.x1 <= w):
        bad.append(f"it is empty or outside the array ({h}, {w})")
    if bad:
        raise MisalignedWriteError(
            f"refused write of {box} to array {array_name!r}: "
            + "; ".join(bad)
            + f". A partial-{unit} write is a read-modify-write of a {unit} (one storage object) another task may "
            f"also write, so one task's pixels could silently be lost; tasks must write whole {unit}s (tiles a "
            "multiple of the chunk size, shards one tile)."
        )


class Canvas(CompletionRecords):
    """Open handle on a render store. Cheap to construct; safe to open in many processes."""

    def __init__(self, url: str, storage_options: dict | None = None, mode: str = "r"):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = url_to_fs(url, self.storage_options)
        try:
            self.group = zarr.open_group(zarr_store(url, self.storage_options), mode=mode, zarr_format=3)
        except (
            FileNotFoundError,
            zarr.errors.GroupNotFoundError if hasattr(zarr.errors, "GroupNotFoundError") else FileNotFoundError,
        ):
            raise StoreError(f"store {url!r}: no ourgan-dist render there (no zarr.json)") from None
        attrs = self.group.attrs.asdict()
        if ATTR not in attrs:
            raise StoreError(f"store {url!r}: a Zarr group, but not an ourgan-dist render (no '{ATTR}' attributes)")
        self.info: dict[str, Any] = attrs[ATTR]
        fmt = self.info.get("format")
        if fmt not in READABLE_FORMATS:
            newer = isinstance(fmt, int) and fmt > STORE_FORMAT
            raise StoreError(
                f"store {url!r}: store format {fmt!r}, this version of ourgan-dist reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))}; "
                + ("upgrade ourgan-dist to read it" if newer else "render it again with --overwrite")
            )
        self.plan = plan_from_info(self.info)
        self._arrays: dict[str, Any] = {}

    # ---- creation -----------------------------------------------------------------------
    @staticmethod
    def exists(url: str, storage_options: dict | None = None) -> bool:
        fs, root = url_to_fs(url, storage_options)
        try:
            return fs.exists(root) and bool(_entries(fs, root))  # a lease alone is no render
        except (FileNotFoundError, NotADirectoryError):
            return False

    @staticmethod
    def root_metadata(url: str, storage_options: dict | None = None) -> dict | None:
        """The store's root ``zarr.json``; None where there is none, or it cannot be read as JSON."""
        fs, root = url_to_fs(url, storage_options)
        try:
            with fs.open(f"{root}/zarr.json", "rb") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError, OSError):
            return None

    @staticmethod
    def is_render_store(url: str, storage_options: dict | None = None) -> bool:
        return Canvas.is_render_metadata(Canvas.root_metadata(url, storage_options))

    @staticmethod
    def is_render_metadata(meta: dict | None) -> bool:
        """Whether a root ``zarr.json`` (``root_metadata``) is an ourgan-dist render's."""
        return meta is not None and ATTR in meta.get("attributes", {})

    @classmethod
    def create(cls, url: str, plan: RenderPlan, info: dict[str, Any], storage_options: dict | None = None) -> "Canvas":
        """Write the group and every array's metadata (no chunks) for a new render, into a location
        that holds nothing but (possibly) the render's lease, which is left in place."""
        store = zarr_store(url, storage_options)
        info = dict(info, format=STORE_FORMAT, complete=False)
        attrs = {"ome": ome_attributes(plan, info.get("name", "ourgan-dist render")), ATTR: info}
        group = zarr.create_group(store, zarr_format=3, attributes=attrs)
        for k, (h, w) in enumerate(plan.pyramid_shapes):
            group.create_array(
                str(k),
                shape=(3, h, w),
                chunks=(3, *plan.chunk_shape(h, w)),
                shards=_shards(plan.array_shards(k)),
                dtype="uint8",
                fill_value=0,
                dimension_names=("c", "y", "x"),
            )
        gen = group.create_group(
            GENERATION, attributes={"description": "generation levels below the last: float16 in [-1, 1], level l+1 is 4x level l"}
        )
        for lv in plan.levels[:-1]:
            gen.create_array(
                str(lv.index),
                shape=(3, lv.height, lv.width),
                chunks=(3, *plan.chunk_shape(lv.height, lv.width)),
                shards=_shards(plan.level_shards(lv.index)),
                dtype="float16",
                fill_value=0.0,
                dimension_names=("c", "y", "x"),
            )
        if len(plan.levels) > 1:  # a patch base's correspondence, read by the first level's guided detail
            base = plan.levels[0]
            gen.create_array(
                FIELD,
                shape=(2, base.height, base.width),
                chunks=(2, *plan.chunk_shape(base.height, base.width)),
                shards=_shards(plan.level_shards(0), channels=2),
                dtype="int16",
                fill_value=0,
                dimension_names=("c", "y", "x"),
            )
        records = group.create_group(
            RECORDS,
            attributes={"description": "completion records: 1 where a task (tile or pyramid block) has written all its chunks"},
        )
        for lv in plan.levels:
            records.create_array(
                f"L{lv.index}",
                shape=plan.tile_grid(lv.index),
                chunks=(1, 1),
                dtype="uint8",
                fill_value=0,
                dimension_names=("ty", "tx"),
            )
        for scale in range(1, len(plan.pyramid_shapes)):
            records.create_array(
                f"P{scale}",
                shape=plan.pyramid_grid(scale),
                chunks=(1, 1),
                dtype="uint8",
                fill_value=0,
                dimension_names=("ty", "tx"),
            )
        return cls(url, storage_options, mode="r+")

    @staticmethod
    def delete(url: str, storage_options: dict | None = None) -> None:
        """Delete the render's own entries (``clear``), its lease, and then its emptied root; refuses,
        deleting nothing, where anything else is there."""
        Canvas.clear(url, storage_options)
        fs, root = url_to_fs(url, storage_options)
        own, foreign = _split_entries(fs, root)
        if not own and not foreign and fs.exists(root):
            fs.rm(root, recursive=True)  # the lease and the empty folder

    @staticmethod
    def clear(url: str, storage_options: dict | None = None) -> None:
        """Delete the render's own entries (``own_entry``) but its lease (``--overwrite`` under
        the lease). Refuses, deleting nothing, if anything else is there: a folder that also
        holds someone's files is never emptied."""
        fs, root = url_to_fs(url, storage_options)
        own, foreign = _split_entries(fs, root)
        if foreign:
            raise StoreError(refuse_foreign(url, foreign))
        for path in own:  # what this listing showed as the render's: nothing added since is touched
            fs.rm(path, recursive=True)

    # ---- arrays -------------------------------------------------------------------------
    def array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def level_array_name(self, level: int) -> str:
        return "0" if level == self.plan.final_level else f"{GENERATION}/{level}"

    def has_field(self) -> bool:
        """Whether the store has room for the base's correspondence (stores written before it have none)."""
        try:
            self.array(f"{GENERATION}/{FIELD}")
        except KeyError:
            return False
        return True

    def read(self, name: str, box: Box) -> np.ndarray:
        """(c, box.height, box.width) values of an array (any box: reads need no alignment)."""
        return with_retries(f"read {name}{box}", lambda: self.array(name)[:, box.y0 : box.y1, box.x0 : box.x1])

    def write(self, name: str, box: Box, data: np.ndarray) -> None:
        """Write whole storage objects: ``box`` must start on the array's shard grid (its chunk grid
        if unsharded) and end on it or at the edge."""
        arr = self.array(name)
        shards = arr.shards
        check_aligned(name, arr.shape[1:], (shards or arr.chunks)[1:], box, "shard" if shards else "chunk")
        if data.shape != (arr.shape[0], box.height, box.width):
            raise ValueError(f"write to {name!r}: data {data.shape} does not match {box}")

        def put() -> None:
            arr[:, box.y0 : box.y1, box.x0 : box.x1] = data

        with_retries(f"write {name}{box}", put)

    def set_info(self, **changes: Any) -> None:
        self.info = dict(self.info, **changes)
        self.group.attrs[ATTR] = self.info


def _shards(side: tuple[int, int] | None, channels: int = 3) -> tuple[int, int, int] | None:
    """The ``shards=`` of an image array (c, y, x) from a plan's (y, x) shard side (None: unsharded)."""
    return None if side is None else (channels, *side)


def plan_from_info(info: dict[str, Any]) -> RenderPlan:
    p = info["plan"]
    return RenderPlan(
        width=p["width"],
        height=p["height"],
        n_sr=p["n_sr"],
        base_height=p["base_height"],
        base_width=p["base_width"],
        tile=p["tile"],
        halo=p["halo"],
        receptive_radius=p["receptive_radius"],
        chunk=p["chunk"],
    )


def plan_to_info(plan: RenderPlan) -> dict[str, Any]:
    return {
        "width": plan.width,
        "height": plan.height,
        "n_sr": plan.n_sr,
        "base_height": plan.base_height,
        "base_width": plan.base_width,
        "tile": plan.tile,
        "halo": plan.halo,
        "receptive_radius": plan.receptive_radius,
        "chunk": plan.chunk,
    }
