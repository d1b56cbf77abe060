"""Executors: thin adapters that run a plan's tasks. ``local`` is the in-process reference.

Every executor implements ``Executor``: ``render`` calls its checks before it takes the lease,
then ``run``, and ``close`` at the end, whatever happened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from ...planning.plan import RenderPlan, TaskKey
    from ..tile import RenderJob, TaskReport


class Executor(Protocol):
    name: str

    def check_capacity(self) -> object:
        """Raise ``UserError`` if the workers can never all be placed (before the lease or the store exist)."""

    def check_access(self, model: str, model_options: dict, store: str, store_options: dict) -> None:
        """Raise ``UserError`` if workers cannot read the model or write the store."""

    def run(self, job: RenderJob, plan: RenderPlan, keys: Sequence[TaskKey], on_done: Callable[[TaskReport], None]) -> None:
        """Run ``keys`` (in dependency order), calling ``on_done`` with each finished task's report."""

    def close(self) -> None:
        """Give back what the executor started (a Ray it started, an autoscaler request)."""
