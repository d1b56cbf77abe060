"""Resuming on S3 reads the completion records with a few listings, not a request per task:
every HTTP request is counted by a loopback proxy in front of moto's S3 server (127.0.0.1)."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest

from ourgan_dist.store.canvas import Canvas, plan_to_info
from ourgan_dist.planning.plan import PyramidKey, RenderPlan, TileKey
from s3proxy import FaultProxy

BUCKET = "records"


@pytest.fixture(scope="module")
def counted(s3_server):
    """(direct storage options, options through the counting proxy, the list of requests seen)."""
    endpoint, opts = s3_server
    fsspec.filesystem("s3", **opts).mkdir(BUCKET)
    proxy, seen = FaultProxy(endpoint), []
    proxy.fail = lambda method, path: seen.append((method, path)) and False
    yield opts, dict(opts, endpoint_url=proxy.url, skip_instance_cache=True), seen
    proxy.close()


def test_resume_lists_records_in_a_few_requests_not_one_per_task(counted):
    direct, through_proxy, seen = counted
    # 1,014 SR tiles (26 x 39) and 359 pyramid blocks: more records than one LIST page (1,000) holds,
    # and few enough to write quickly (moto takes about 70 PUTs a second)
    plan = RenderPlan(
        width=1248, height=832, n_sr=1, base_height=208, base_width=312, tile=32, halo=0, receptive_radius=0, chunk=32
    )
    url = f"s3://{BUCKET}/resume.zarr"
    info = {
        "name": "records",
        "model": "(none)",
        "model_id": "none",
        "model_preset": "none",
        "seed": 0,
        "size": [plan.width, plan.height],
        "plan": plan_to_info(plan),
        "exact": True,
        "precision": "fp32",
    }
    c = Canvas.create(url, plan, info, direct)
    c.array("progress/L1")[:] = np.ones(plan.tile_grid(1), np.uint8)  # every tile recorded (one PUT each)
    c.mark_done(TileKey(0, 0, 0))
    c.mark_done(PyramidKey(1, 2, 3))
    want = {*plan.tiles(1), TileKey(0, 0, 0), PyramidKey(1, 2, 3)}
    tasks = plan.n_tiles + len(list(plan.all_pyramid_tasks()))
    assert len(want) == 1016 and tasks > 1350

    seen.clear()
    resumed = Canvas(url, through_proxy)
    opened = len(seen)
    seen.clear()
    assert resumed.done() == want
    listed = list(seen)
    # 1,016 records: two pages of ListObjectsV2 (1,000 keys each), nothing per task
    assert len(listed) <= 3 and all(m == "GET" and "list-type=2" in p for m, p in listed), listed
    assert opened <= 4, seen
    seen.clear()
    progress = resumed.progress()["tasks"]
    assert progress["level 1"] == (1014, 1014) and progress["pyramid"][0] == 1 and len(seen) <= 3
