"""Completion records of a render store: which tasks have written all their pixels.

``<store>/progress/L<level>`` and ``P<scale>`` are uint8 arrays shaped like the task grid of a
generation level (of a pyramid scale), chunked 1x1: a task sets its own chunk to 1 once all its
pixels are written. That is one small object per task, written by that task alone, so many
workers record concurrently without a read-modify-write anywhere (object stores have no append).

A record *is* its object: ``c/<ty>/<tx>`` under the record array exists only once the task's
pixels are written (writes are atomic: one PUT on object storage, write-then-rename on local
disks, see zarr's ``LocalStore``), and nothing ever writes a 0. So the set of finished tasks is
one recursive listing of ``progress/``: paginated LIST requests (S3 and GCS return 1,000 keys a
page), never one GET per task. Resuming a render of N tasks reads about N / 1000 + 1 listings;
a store marked complete needs none. The store is marked complete only when every task of every
level and of the pyramid has its record (I6).
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import StoreError
from ..planning.plan import PyramidKey, TaskKey, TileKey
from .storage import with_retries

RECORDS = "progress"


class CompletionRecords:
    """The completion-record half of ``Canvas`` (mixed into it): uses its ``array()``, ``plan``,
    ``info``, ``url``, ``fs``, ``root`` and ``set_info()``."""

    @staticmethod
    def _record(key: TaskKey) -> str:
        return f"{RECORDS}/L{key.level}" if isinstance(key, TileKey) else f"{RECORDS}/P{key.scale}"

    def mark_done(self, key: TaskKey) -> None:
        """Record a finished task: its own 1x1 chunk of the level's record array."""
        arr = self.array(self._record(key))

        def put() -> None:
            arr[key.ty, key.tx] = 1

        with_retries(f"record {key}", put)

    def _record_objects(self) -> Iterator[tuple[str, int, int]]:
        """(record array name, row, column) of every record object in the store: one listing.
        Anything else under ``progress/`` (array metadata, a crashed write's temporary) is skipped."""
        top = f"{self.root}/{RECORDS}"
        paths = with_retries(f"list {RECORDS}/", lambda: self.fs.find(top))
        for path in paths:
            parts = path[len(top) + 1 :].split("/") if path.startswith(top + "/") else []
            if len(parts) == 4 and parts[1] == "c" and parts[2].isdigit() and parts[3].isdigit():
                yield parts[0], int(parts[2]), int(parts[3])

    def done(self) -> set[TaskKey]:
        """Every task with a completion record, from one listing of the records (no per-task read)."""
        plan = self.plan
        grids = {f"L{lv.index}": (lv.index, plan.tile_grid(lv.index), TileKey) for lv in plan.levels}
        grids.update({f"P{s}": (s, plan.pyramid_grid(s), PyramidKey) for s in range(1, len(plan.pyramid_shapes))})
        out: set[TaskKey] = set()
        for name, ty, tx in self._record_objects():
            if name in grids:
                index, (rows, cols), kind = grids[name]
                if ty < rows and tx < cols:
                    out.add(kind(index, ty, tx))
        return out

    def progress(self) -> dict[str, Any]:
        """Tasks done/total per generation level and for the pyramid. A store marked complete had
        every record checked when it was marked, so it is not listed again."""
        rows = {}
        levels = {f"level {lv.index}": self.plan.tiles(lv.index) for lv in self.plan.levels}
        levels["pyramid"] = list(self.plan.all_pyramid_tasks())
        if self.complete:
            return {"tasks": {k: (len(v), len(v)) for k, v in levels.items()}, "complete": True}
        done = self.done()
        for name, keys in levels.items():
            rows[name] = (sum(k in done for k in keys), len(keys))
        return {"tasks": rows, "complete": False}

    def mark_complete(self) -> None:
        done = self.done()
        missing = [k for k in [*self.plan.all_tiles(), *self.plan.all_pyramid_tasks()] if k not in done]
        if missing:
            raise StoreError(
                f"store {self.url!r}: {len(missing)} task(s) unfinished (first: {missing[0]}); run the same render with --resume"
            )
        self.set_info(complete=True)

    @property
    def complete(self) -> bool:
        return bool(self.info.get("complete"))

    def require_complete(self, what: str) -> None:
        if not self.complete:
            p = self.progress()["tasks"]
            done = sum(d for d, _ in p.values())
            total = sum(t for _, t in p.values())
            raise StoreError(
                f"store {self.url!r}: incomplete render ({done}/{total} tasks done); {what} needs a "
                "complete store: finish it with `ourgan-dist render ... --resume`"
            )
