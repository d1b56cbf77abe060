"""Sizing the render's workers against a cluster's offer (pure arithmetic, no Ray), recognising an
autoscaler from what Ray publishes, and the order of a refusal: a cluster that can never place the
workers is refused before the lease is taken or the store created, so the next try starts clean."""

from __future__ import annotations

import json

import pytest

from ourgan_dist.errors import UserError
from ourgan_dist.engine.executors.capacity import NodeType, Offer, _v1_autoscales, parse_node_groups, size_workers

HEAD = {"CPU": 0.0}  # cluster/aws-g5.yaml's head: no render work
A10G = NodeType("gpu_a10g_x1", {"CPU": 4.0, "GPU": 1.0}, 8)


def test_without_an_autoscaler_the_check_is_immediate_and_the_advice_fits():
    with pytest.raises(UserError) as e:
        size_workers(Offer((HEAD,)), 8, "cuda")
    msg = str(e.value)
    assert "8 GPU worker(s) asked for, the Ray cluster has 0 GPU(s)" in msg and "no autoscaler" in msg
    assert "--workers 0" not in msg and "--workers 1 " not in msg and "add GPU nodes" in msg
    with pytest.raises(UserError, match=r"pass --workers 2 or fewer, add GPU nodes"):
        size_workers(Offer((HEAD, {"CPU": 8.0, "GPU": 2.0})), 8, "cuda")
    with pytest.raises(UserError, match="has no GPU .*add GPU nodes to it, or pass --device cpu"):
        size_workers(Offer((HEAD,)), None, "cuda")
    with pytest.raises(UserError, match=r"room for 2 worker\(s\) of 1 CPU\(s\) .*no autoscaler.*--workers 2 or fewer"):
        size_workers(Offer(({"CPU": 1.0}, {"CPU": 1.0})), 3, "cpu")
    s = size_workers(Offer(({"CPU": 4.0}, {"CPU": 2.0})), 3, "cpu")
    assert (s.workers, s.cpus, s.gpu, s.wait) == (3, 2, False, False)


def test_an_autoscaler_is_asked_instead_of_refusing():
    s = size_workers(Offer((HEAD,), autoscaling=True), 8, "cuda")  # v1: node types not known
    assert (s.workers, s.gpu, s.wait) == (8, True, True) and s.bundles == [{"GPU": 1}] * 8
    s = size_workers(Offer((HEAD,), True, (A10G,)), 8, "cuda")  # v2: known, and enough
    assert s.wait and s.cpus == 4  # a g5.xlarge's CPUs per GPU as threads
    s = size_workers(Offer((HEAD, {"CPU": 4.0, "GPU": 1.0}), True, (A10G,)), 1, "cuda")
    assert not s.wait  # room now: nothing to ask for
    s = size_workers(Offer((HEAD,), True), 2, "cpu")
    assert (s.workers, s.cpus, s.wait, s.bundles) == (2, 1, True, [{"CPU": 1}, {"CPU": 1}])
    s = size_workers(Offer((HEAD,), True, (NodeType("cpu8", {"CPU": 8.0}, 3),)), 2, "cpu")
    assert (s.cpus, s.wait) == (8, True)


def test_an_autoscaler_that_cannot_reach_the_count_is_refused_at_once():
    with pytest.raises(UserError, match=r"its autoscaler can reach 8 .*--workers 8 or fewer"):
        size_workers(Offer((HEAD,), True, (A10G,)), 9, "cuda")
    with pytest.raises(UserError, match=r"pass --workers N .*autoscaler starts GPU nodes"):
        size_workers(Offer((HEAD,), True, (A10G,)), None, "cuda")
    with pytest.raises(UserError, match=r"autoscaler can reach 3"):
        size_workers(Offer((HEAD,), True, (NodeType("cpu1", {"CPU": 1.0}, 3),)), 4, "cpu")


def test_the_autoscaler_is_recognised_from_what_ray_publishes():
    from ray.core.generated import autoscaler_pb2

    readonly = {"autoscaler_report": {"active_nodes": {"node_ab12": 1, "node_cd34": 1}, "pending_launches": {}}}
    real = {"autoscaler_report": {"active_nodes": {"head": 1}, "pending_launches": {"gpu_a10g_x1": 2}}}
    assert not _v1_autoscales(json.dumps(readonly)) and _v1_autoscales(json.dumps(real))
    assert not _v1_autoscales(None) and not _v1_autoscales("not json")
    config = autoscaler_pb2.ClusterConfig()
    g = config.node_group_configs.add(name="gpu_a10g_x1", max_count=8)
    g.resources["CPU"], g.resources["GPU"] = 4, 1
    config.node_group_configs.add(name="head", max_count=0)
    assert parse_node_groups(config.node_group_configs) == (A10G,)
