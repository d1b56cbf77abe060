"""The in-process reference executor: one ``TileWorker``, tasks in dependency order."""

from __future__ import annotations

from typing import Callable, Sequence

from ...planning.plan import RenderPlan, TaskKey
from ..tile import RenderJob, TaskReport, TileWorker


class LocalExecutor:
    name = "local"

    def __init__(self, model=None):
        self.model = model  # an already loaded model may be shared (tests, the demo)

    def check_capacity(self) -> None:
        """Nothing to place: the one worker is this process."""

    def check_access(self, model: str, model_options: dict, store: str, store_options: dict) -> None:
        """Nothing to check: the worker is this process, with the driver's credentials."""

    def run(self, job: RenderJob, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None]) -> None:
        """``keys`` must be in dependency order (levels ascending, then pyramid scales)."""
        worker = TileWorker(job, model=self.model, name="local")
        for key in keys:
            on_done(worker.run(key))

    def close(self) -> None:
        """Nothing to give back."""
