"""--address reaches the Ray cluster once per render: one address check and one ``ray.init``
shared by the worker count, the executor and its checks, and one ``ray.shutdown`` at the end,
for a render and for a dry run. Ray's entry points are counted with stand-ins (no cluster)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ourgan_dist.cli import main
from ourgan_dist.engine.executors import capacity
from ourgan_dist.engine.executors import ray as ray_executor
from ourgan_dist.engine.executors import ray_cluster
from ourgan_dist.engine.executors.local import LocalExecutor
from ourgan_dist.engine.render import RenderRequest, prepare, release, render

ADDRESS = "10.11.12.13:6379"
NODES = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 2.0}}]


@pytest.fixture
def calls(monkeypatch):
    import ray

    seen = {"check": 0, "init": 0, "shutdown": 0, "up": False}

    def init(*args, **kwargs):
        assert not seen["up"], "ray.init while connected"
        seen["init"] += 1
        seen["up"] = True

    def shutdown():
        seen["shutdown"] += int(seen["up"])
        seen["up"] = False

    def check(address, timeout=None):
        seen["check"] += 1

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", shutdown)
    monkeypatch.setattr(ray, "is_initialized", lambda: seen["up"])
    monkeypatch.setattr(ray, "nodes", lambda: NODES if seen["up"] else pytest.fail("ray.nodes() without a connection"))
    monkeypatch.setattr(ray_cluster, "check_address", check)
    monkeypatch.setattr(capacity, "read_offer", lambda: capacity.Offer(tuple(n["Resources"] for n in NODES)))
    return seen


class ThroughTheConnection(ray_executor.RayExecutor):
    """The Ray executor's own connection and sizing; its tasks run in this process."""

    def check_access(self, *args) -> None:
        self.check_capacity()

    def run(self, job, plan, keys, on_done) -> None:
        self.check_capacity()
        LocalExecutor().run(job, plan, keys, on_done)


def test_a_render_joins_the_cluster_once(tiny_model, tmp_path, calls):
    p = prepare(RenderRequest(model=tiny_model, out=str(tmp_path / "r.zarr"), size="301x187", workers=0, address=ADDRESS))
    assert p.workers == 2 and p.workers_known  # counted over the connection prepare made
    summary = render(p, executor=ThroughTheConnection(workers=None, address=ADDRESS))
    assert summary.tasks_run > 0
    assert (calls["check"], calls["init"], calls["shutdown"], calls["up"]) == (1, 1, 1, False)


def test_a_dry_run_joins_once_and_leaves(tiny_model, tmp_path, calls):
    r = CliRunner().invoke(
        main, ["render", tiny_model, "--out", str(tmp_path / "r.zarr"), "--size", "301x187", "--address", ADDRESS, "--dry-run"]
    )
    assert r.exit_code == 0, r.output
    assert "load on 2 worker(s)" in r.output
    assert (calls["check"], calls["init"], calls["shutdown"], calls["up"]) == (1, 1, 1, False)


def test_a_refused_plan_leaves_the_cluster_it_joined(tiny_model, tmp_path, calls):
    with pytest.raises(Exception, match="--tile"):
        prepare(
            RenderRequest(
                model=tiny_model,
                out=str(tmp_path / "r.zarr"),
                size="4096x2730",
                tile=4096,
                workers=2,
                address=ADDRESS,
                worker_memory=300 << 20,
            )
        )
    assert (calls["init"], calls["shutdown"], calls["up"]) == (1, 1, False)
    release_twice = prepare(
        RenderRequest(model=tiny_model, out=str(tmp_path / "s.zarr"), size="301x187", workers=2, address=ADDRESS)
    )
    release(release_twice)
    release(release_twice)  # idempotent
    assert (calls["init"], calls["shutdown"], calls["up"]) == (2, 2, False)
