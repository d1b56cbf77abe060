"""Completion records of a render store: which tasks have written all their pixels.

``<store>/progress/L<level>`` and ``P<scale>`` are uint8 arrays shaped like the tile grid of a
generation level (of a pyramid scale), chunked 1x1: a task sets its own chunk to 1 once all its
pixels are written, a whole-chunk write like every other (I4). The store is marked complete
only when every task of every level and of the pyramid has its record (I6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import StoreError
from .plan import PyramidKey, TaskKey, TileKey
from .storage import with_retries

RECORDS = "progress"


class CompletionRecords:
    """The completion-record half of ``Canvas`` (mixed into it): uses its ``array()``, ``plan``,
    ``info``, ``url`` and ``set_info()``."""

    @staticmethod
    def _record(key: TaskKey) -> str:
        return f"{RECORDS}/L{key.level}" if isinstance(key, TileKey) else f"{RECORDS}/P{key.scale}"

    def mark_done(self, key: TaskKey) -> None:
        """Record a finished task: its own 1x1 chunk of the level's record array."""
        arr = self.array(self._record(key))

        def put() -> None:
            arr[key.ty, key.tx] = 1

        with_retries(f"record {key}", put)

    def done(self) -> set[TaskKey]:
        """Every task with a completion record."""
        out: set[TaskKey] = set()

        def records(name: str) -> np.ndarray:
            return with_retries(f"read {name}", lambda: self.array(name)[:])

        for lv in self.plan.levels:
            for ty, tx in zip(*np.nonzero(records(f"{RECORDS}/L{lv.index}"))):
                out.add(TileKey(lv.index, int(ty), int(tx)))
        for scale in range(1, len(self.plan.pyramid_shapes)):
            for ty, tx in zip(*np.nonzero(records(f"{RECORDS}/P{scale}"))):
                out.add(PyramidKey(scale, int(ty), int(tx)))
        return out

    def progress(self) -> dict[str, Any]:
        """Tasks done/total per generation level and for the pyramid."""
        done = self.done()
        rows = {}
        for lv in self.plan.levels:
            keys = self.plan.tiles(lv.index)
            rows[f"level {lv.index}"] = (sum(k in done for k in keys), len(keys))
        pyr = list(self.plan.all_pyramid_tasks())
        rows["pyramid"] = (sum(k in done for k in pyr), len(pyr))
        return {"tasks": rows, "complete": bool(self.info.get("complete"))}

    def mark_complete(self) -> None:
        done = self.done()
        missing = [k for k in [*self.plan.all_tiles(), *self.plan.all_pyramid_tasks()] if k not in done]
        if missing:
            raise StoreError(f"store {self.url!r}: {len(missing)} task(s) unfinished (first: {missing[0]}); "
                             "run the same render with --resume")
        self.set_info(complete=True)

    @property
    def complete(self) -> bool:
        return bool(self.info.get("complete"))

    def require_complete(self, what: str) -> None:
        if not self.complete:
            p = self.progress()["tasks"]
            done = sum(d for d, _ in p.values())
            total = sum(t for _, t in p.values())
            raise StoreError(f"store {self.url!r}: incomplete render ({done}/{total} tasks done); {what} needs a "
                             "complete store: finish it with `ourgan-dist render ... --resume`")

