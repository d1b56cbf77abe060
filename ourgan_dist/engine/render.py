"""Plan, validate, execute: the render pipeline that the CLI and the library API share.

``prepare`` resolves the request into a ``RenderPlan`` and checks it (model readable, plan valid,
memory per task within budget, output free or resumable) before anything is written, joining the
Ray cluster at --address once for the whole render (``render`` or ``release`` leaves it);
``render`` then checks that the executor's cluster can place the workers (or its autoscaler can
add them), takes the store's lease (before writing anything), creates, overwrites or reopens
the store under it, runs the tasks that are not done yet on an executor, and marks the store
complete. A render that loses its lease stops (``LeaseLost``), resumably.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..store.canvas import Canvas, foreign_entries, plan_to_info, refuse_foreign
from .executors import Executor
from ..errors import PlanError, StoreError, TileError, UserError
from ..store.lease import Lease, LeaseLost
from ..planning.plan import RenderPlan, TaskKey, parse_size
from ..store.storage import check_settings, redact, strip_userinfo
from .request import RenderRequest
from .sizing import size_render
from .tile import RenderJob, TaskReport


@dataclass
class Prepared:
    request: RenderRequest
    plan: RenderPlan
    model: Any  # checkpoint.Model, loaded once on the driver (config, id)
    projected_task_bytes: int  # calibrated peak memory of a worker running the largest task
    notes: tuple[str, ...] = ()  # choices made for the user (an automatic chunk size), printed with the plan
    workers: int = 1  # the workers the plan was sized for
    worker_memory: int = 0  # bytes per worker the plan was checked against
    memory_known: bool = True  # False: worker_memory is an assumption (GPU memory of a remote cluster)
    workers_known: bool = True  # False: the cluster at --address was not asked (a given --tile) or did not say
    ray_joined: bool = False  # prepare joined the Ray cluster at --address; render (or release) leaves it


def release(p: Prepared) -> None:
    """Leave the Ray cluster that ``prepare`` joined for --address, when no render follows (a dry
    run); ``render`` leaves it itself. Idempotent."""
    _leave(p.ray_joined)
    p.ray_joined = False


def _leave(joined: bool) -> None:
    if joined:
        import ray

        ray.shutdown()


def check_model_path(model: str) -> None:
    """Refuse a local MODEL that is a file other than a checkpoint (``model/model.json``, the
    card) naming the folder to give instead; a folder, a ``.pt`` file or a URL goes on."""
    path = model.removeprefix("file://")
    if "://" in path or path.endswith(".pt") or not os.path.isfile(path):
        return
    folder = os.path.dirname(path) or "."
    hint = (
        f"give its folder, e.g. ourgan-dist render {folder} ..."
        if os.path.basename(path) == "model.json"
        else "give the model folder written by `ourgan-dist train` (holding model.pt), or its model.pt"
    )
    raise UserError(f"MODEL {model!r} is a file, not a model folder; {hint}")


def prepare(req: RenderRequest) -> Prepared:
    from ..models import checkpoint

    width, height = parse_size(req.size)
    check_settings()  # OURGAN_STORAGE_RETRIES and _BACKOFF: one line now, not deep in a read later
    check_model_path(req.model)
    from ..planning.noise import SEED_LIMIT

    if not 0 <= req.seed < SEED_LIMIT:
        raise PlanError(
            f"seed {req.seed}: seeds are 0 to {SEED_LIMIT - 1} (2**64 - 1); the noise is keyed by 64 bits "
            "of the seed, so a larger one would repeat a smaller one's image"
        )
    if req.workers < 0 or (req.workers == 0 and req.address is None):
        raise PlanError(f"--workers {req.workers}: must be >= 1 (0, all the cluster offers, needs --address)")
    joined = False
    if req.address is not None:  # joined once, here: an unreachable cluster fails in seconds, before anything is written
        from .executors.ray_cluster import connect

        joined = connect(req.address, num_cpus=1)  # the executor and the worker count use this connection
    try:
        p = _prepare(req, checkpoint.load(req.model, req.model_storage_options), width, height)
    except BaseException:
        _leave(joined)
        raise
    p.ray_joined = joined
    return p


def _prepare(req: RenderRequest, model: Any, width: int, height: int) -> Prepared:
    """The plan for ``req`` and its checks, with the model loaded and any cluster joined."""
    z = size_render(req, model.config, width, height)
    return Prepared(req, z.plan, model, z.need, z.notes, z.workers, z.budget, z.known, z.workers_known)


def render_info(p: Prepared) -> dict[str, Any]:
    """The resolved config written into the store: no credentials; the arithmetic environment
    (device kind, precision, ourgan-dist version, torch, oneDNN, CPU instruction set:
    ``fencing.py``) that a resume and every worker must match."""
    from ..store.fencing import runtime_environment

    r, m = p.request, p.model
    return {
        "name": f"ourgan-dist seed {r.seed}",
        "model": redact(strip_userinfo(r.model)) if "://" in r.model else os.path.abspath(r.model),
        "model_id": m.model_id,
        "model_preset": m.config.preset,
        "seed": r.seed,
        "size": [p.plan.width, p.plan.height],
        "plan": plan_to_info(p.plan),
        "exact": p.plan.exact,
        "precision": r.precision,
        "environment": runtime_environment(r.device, r.precision),
    }


def _file_in_the_way(url: str) -> str | None:
    """For a local --out: the path itself or the nearest existing folder above it, when that is
    a file (a store is a folder); None otherwise, and for object storage."""
    path = url.removeprefix("file://")
    if "://" in path:
        return None
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path if os.path.lexists(path) and not os.path.isdir(path) else None


@dataclass(frozen=True)
class OutputCheck:
    """What ``check_output`` found at --out and allowed: whether a store is there and, if so, its
    root ``zarr.json`` as read then. ``open_output`` confirms under the lease that neither changed
    rather than checking everything again."""

    exists: bool
    root: dict | None = None


def check_output(p: Prepared, lease: Lease | None = None) -> OutputCheck:
    """Refuse, reading only, an output this render may not use: an existing store without
    --resume/--overwrite, one that is not an ourgan-dist render, a resume with other settings, or
    a store another render holds (``lease``: ours, once taken). Cheap: run it once, before the
    plan is printed or any error measured, and hand what it found to ``render``."""
    r = p.request
    if blocker := _file_in_the_way(r.out):
        raise StoreError(
            f"--out {r.out!r}: {blocker!r} is a file, not a folder, so no render store can be made there; choose another --out"
        )
    try:
        exists = Canvas.exists(r.out, r.storage_options)
    except PermissionError:
        raise StoreError(f"--out {r.out!r}: permission denied; choose a location you can write") from None
    if exists and not (r.resume or r.overwrite):
        raise StoreError(f"--out {r.out!r} already exists; pass --resume to finish it or --overwrite to replace it")
    root = Canvas.root_metadata(r.out, r.storage_options) if exists else None
    if exists and r.resume:
        if not Canvas.is_render_metadata(root):
            raise StoreError(f"--out {r.out!r} exists but is not an ourgan-dist render; choose another --out")
        canvas = Canvas(r.out, r.storage_options)
        want = render_info(p)
        for k in ("model_id", "seed", "size", "plan", "precision"):
            if canvas.info.get(k) != want[k]:
                raise StoreError(
                    f"--resume {r.out!r}: the store was rendered with {k}={canvas.info.get(k)!r}, this "
                    f"command asks for {want[k]!r}; use the same model, seed, size, tile, halo and chunk, "
                    f"or --overwrite"
                )
        from ..store.fencing import mismatch

        if why := mismatch(canvas.info.get("environment"), want["environment"]):
            raise StoreError(
                f"--resume {r.out!r}: the store was rendered in another environment, or does not say "
                f"which ({why}), so the resumed tiles would not be bit-identical to the rest; resume it "
                "where it was started (same ourgan-dist version, torch build, CPU instruction set, device "
                "and precision), or render it anew with --overwrite"
            )
    if exists and r.overwrite:
        if not Canvas.is_render_metadata(root):
            raise StoreError(
                f"--overwrite {r.out!r}: refusing to delete something that is not an ourgan-dist render; "
                "remove it yourself or choose another --out"
            )
        if foreign := foreign_entries(r.out, r.storage_options):  # a render's folder that also holds other files
            raise StoreError(refuse_foreign(r.out, foreign))
        # a lease that cannot be read raises: never delete a store that may be in use
        (lease or Lease(r.out, r.storage_options)).refuse_if_held()
    return OutputCheck(exists, root)


def open_output(p: Prepared, lease: Lease, checked: OutputCheck | None = None) -> Canvas:
    """Under ``lease``: create the store, or reopen it for --resume, or clear and create it for
    --overwrite; never touch an existing output otherwise. ``checked``: what ``check_output``
    found before the lease; the output is checked in full again only if it changed since (or
    was never checked)."""
    r = p.request
    if checked is not None:  # now that no other render can start: is the output still what was checked?
        exists = Canvas.exists(r.out, r.storage_options)
        if checked != OutputCheck(exists, Canvas.root_metadata(r.out, r.storage_options) if exists else None):
            checked = None
    if checked is None:
        checked = check_output(p, lease)
    exists = checked.exists
    if exists and r.resume:
        return Canvas(r.out, r.storage_options, mode="r+")
    lease.check()
    if exists and r.overwrite:
        Canvas.clear(r.out, r.storage_options)
    try:
        return Canvas.create(r.out, p.plan, render_info(p), r.storage_options)
    except (PermissionError, OSError) as e:
        raise StoreError(f"--out {r.out!r}: cannot write there ({type(e).__name__}: {e}); choose a writable location") from None


def task_order(plan: RenderPlan) -> list[TaskKey]:
    return [*plan.all_tiles(), *plan.all_pyramid_tasks()]


@dataclass
class RenderSummary:
    url: str
    plan: RenderPlan
    tasks_run: int
    tasks_skipped: int
    seconds: float
    reports: list[TaskReport]
    halo_error: dict | None = None


def make_executor(req: RenderRequest, model=None) -> Executor:
    if req.workers == 1 and req.address is None:
        from .executors.local import LocalExecutor

        return LocalExecutor(model=model)
    try:
        from .executors.ray import RayExecutor
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise UserError(f"--workers {req.workers}: the Ray executor is unavailable ({e})") from None
    return RayExecutor(workers=req.workers or None, address=req.address, device=req.device)


def render(
    p: Prepared,
    on_progress: Callable[[TaskReport, int, int], None] | None = None,
    executor: Executor | None = None,
    checked: OutputCheck | None = None,
) -> RenderSummary:
    """Run every task the store does not record as done; mark the store complete at the end.
    ``on_progress(report, done, total)`` is called per finished task; if it has a ``begin`` method,
    that is called first with the tasks to run (``progress.ProgressBar`` weighs them). ``checked``:
    the caller's ``check_output``, else it is run here, before the executor starts."""
    r = p.request
    if checked is None:
        checked = check_output(p)  # refused before the lease is taken
    ex = executor or make_executor(r, model=p.model)
    try:
        ex.check_capacity()  # a cluster that can never place the workers refuses before the lease or the store exist
        # so do workers that cannot read the model or write the store (no credentials of their own)
        ex.check_access(r.model, r.model_storage_options, r.out, r.storage_options)
        return _render(p, ex, on_progress, checked)
    finally:
        ex.close()
        release(p)  # the connection prepare made for --address: the executor used it, never a second one


def _render(p: Prepared, ex: Executor, on_progress, checked: OutputCheck) -> RenderSummary:
    r = p.request
    reports: list[TaskReport] = []
    t0 = time.time()
    with Lease(r.out, r.storage_options) as lease:  # first: the store is created under the lease
        canvas = open_output(p, lease, checked)
        job = RenderJob(
            model=r.model,
            store=r.out,
            seed=r.seed,
            device=r.device,
            precision=r.precision,
            storage_options=r.storage_options,
            model_storage_options=r.model_storage_options,
            lease_token=lease.token,
        )
        done = canvas.done() if r.resume else set()
        todo = [k for k in task_order(p.plan) if k not in done]

        def on_done(rep: TaskReport) -> None:
            lease.check()  # a render that lost its lease submits nothing more
            reports.append(rep)
            if on_progress:
                on_progress(rep, len(reports), len(todo))

        begin = getattr(on_progress, "begin", None)  # a progress display that weighs the tasks it will see
        if begin and todo:
            begin(todo)
        if todo:
            try:
                ex.run(job, p.plan, todo, on_done)
            except TileError as e:
                lease.check()
                if isinstance(e.cause, LeaseLost):  # a worker found the lease taken before the driver did
                    raise e.cause from None
                raise
            except Exception:
                lease.check()
                raise
        lease.check()
        Canvas(r.out, r.storage_options, mode="r+").mark_complete()
    return RenderSummary(r.out, p.plan, len(todo), len(done), time.time() - t0, reports)
