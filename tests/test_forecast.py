"""The dry run's time forecast: one time with a range, the parts it adds up, a probe that times a
real tile of the plan for long enough to mean something, and the patch base's recorded times."""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner

from ourgan_dist.cli import main
from ourgan_dist.engine import forecast as fc
from ourgan_dist.engine.render import RenderRequest, prepare
from ourgan_dist.planning import projection
from ourgan_dist.planning.plan import RenderPlan, TileKey, chunk_for_tile

# A core with two 512-bit FMA units at 4 GHz does 2 x 16 x 4e9 = 128 G fp32 MACs a second: no
# probe of one thread can honestly report more.
MACS_PER_THREAD_CEILING = 128e9


@pytest.fixture(scope="module")
def prepared(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fc") / "r.zarr"
    return prepare(RenderRequest(model=tiny_model, out=str(out), size="1999x1333", workers=2))


def test_dry_run_prints_one_time_with_a_range(tiny_model, tmp_path):
    r = CliRunner().invoke(main, ["render", tiny_model, "--out", str(tmp_path / "r"), "--size", "1999x1333", "--dry-run"])
    assert r.exit_code == 0, r.output
    times = [line for line in r.output.splitlines() if line.startswith("time:")]
    assert len(times) == 1, r.output
    m = re.match(r"time: about (.+?) \((.+?) to (.+?)\): start-up .+, base .+, SR .+, viewing pyramid .+ \[(.+)\]$", times[0])
    assert m, times[0]
    assert "probe" in m.group(4) and "recorded rate" not in r.output  # what it rests on; no second, contradicting time

    def seconds(text):
        return sum(float(v) * {"h": 3600, "min": 60, "s": 1}[u] for v, u in re.findall(r"([\d.]+) (h|min|s)\b", text))

    assert seconds(m.group(2)) <= seconds(m.group(1)) <= seconds(m.group(3))


def test_probe_times_a_real_tile_for_at_least_the_minimum(prepared):
    probe = fc.probe_tile(prepared, threads=1)
    plan, cfg = prepared.plan, prepared.model.config
    assert probe.level == plan.final_level and probe.threads == 1
    assert len(probe.runs) >= 2 and probe.seconds >= fc.PROBE_MIN_S
    # the MACs it counts are the plan's own count for a tile of that side, with the plan's halo
    tp = RenderPlan.create(
        plan.width, plan.height, base=cfg.base, sr=cfg.sr, tile=probe.tile, halo=plan.halo, chunk=chunk_for_tile(probe.tile)
    )
    rows, cols = tp.tile_grid(plan.final_level)
    key = TileKey(plan.final_level, min(1, rows - 1), min(1, cols - 1))
    assert probe.macs == projection.Work(tp, cfg.sr, cfg.base).macs(key) > 0
    assert 0 < probe.macs_per_s < MACS_PER_THREAD_CEILING
    assert probe.tile <= plan.tile


def test_probe_keeps_running_until_the_minimum(prepared, monkeypatch):
    monkeypatch.setattr(fc, "PROBE_MIN_S", 0.0)
    short = fc.probe_tile(prepared, threads=1)
    assert len(short.runs) == 2  # two runs at least, then no more than asked
    monkeypatch.setattr(fc, "PROBE_MIN_S", 10 * short.seconds)
    long = fc.probe_tile(prepared, threads=1)
    assert long.seconds >= 10 * short.seconds and len(long.runs) > 2


def fake_probe(p, runs, macs=10**10):
    return fc.Probe(tile=p.plan.tile, level=p.plan.final_level, macs=macs, runs=runs, threads=1, device="cpu")


def test_time_is_the_sum_of_its_parts_and_follows_the_probe(prepared):
    t1, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)))
    assert t1.seconds == pytest.approx(t1.startup_s + t1.base_s + t1.sr_s + t1.pyramid_s)
    t2, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0), macs=2 * 10**10))  # a machine twice as fast
    assert t2.sr_s < t1.sr_s and t2.base_s == pytest.approx(t1.base_s / 2)
    assert t2.pyramid_s < t1.pyramid_s  # I/O and averaging are CPU work too: they follow the probe
    assert t1.low < t1.seconds < t1.high


def test_start_up_is_stretched_by_the_machines_load(prepared, monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    idle, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)))
    assert idle.startup_s == fc.STARTUP_S["ray"]  # two local workers: Ray starts first
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0 * cores, 0.5, 0.5))
    busy, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)))
    assert busy.startup_s == pytest.approx(3 * idle.startup_s) and "busy" in busy.basis


def test_the_base_is_scaled_against_the_same_kind_of_probe(prepared):
    """A probe of a guided first level runs at more MACs/s than one of an SR level on the same
    machine: the base's time is scaled against the rate that kind of probe had when recorded."""
    pixels = prepared.plan.base_height * prepared.plan.base_width
    assert fc.base_seconds(pixels, fc.GUIDED_PROBE_RATE, guided=True) == pytest.approx(fc.base_seconds(pixels, fc.BASE_PROBE_RATE))


def test_the_patch_base_follows_a_one_thread_probe(prepared):
    workers, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)))
    slow, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)), thread_probe=fake_probe(prepared, (1.0, 1.0), 10**9))
    fast, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)), thread_probe=fake_probe(prepared, (1.0, 1.0), 4 * 10**9))
    assert slow.base_s == pytest.approx(4 * fast.base_s) and slow.sr_s == fast.sr_s == workers.sr_s
    assert "probed on one thread" in fast.basis


def test_a_worker_of_several_threads_is_never_slower_than_one(prepared):
    slow_pair, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0), 10**9), fake_probe(prepared, (1.0, 1.0)))
    one, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)))
    assert slow_pair.sr_s == pytest.approx(one.sr_s) and "taken as one thread's" in slow_pair.basis
    fast_pair, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0), 4 * 10**10), fake_probe(prepared, (1.0, 1.0)))
    assert fast_pair.sr_s < one.sr_s and "taken as" not in fast_pair.basis


def test_a_probe_that_wavers_widens_the_range(prepared):
    steady, _ = fc.forecast_time(prepared, fake_probe(prepared, (1.0, 1.0)))
    wavering, _ = fc.forecast_time(prepared, fake_probe(prepared, (0.5, 1.5)))
    assert wavering.seconds == pytest.approx(steady.seconds)  # same mean rate
    assert wavering.low < steady.low and wavering.high > steady.high


def test_without_a_probe_the_time_says_so(prepared):
    t, _ = fc.forecast_time(prepared, None)
    assert "no probe" in t.basis and t.low < t.seconds < t.high


def test_patch_base_time_from_its_recorded_points():
    (p0, s0), (p1, s1) = fc.BASE_SECONDS[:2]
    assert fc.base_seconds(p0, fc.BASE_PROBE_RATE) == pytest.approx(s0)
    assert fc.base_seconds((p0 + p1) // 2, fc.BASE_PROBE_RATE) == pytest.approx((s0 + s1) / 2, rel=1e-3)
    assert fc.base_seconds(p1, fc.BASE_PROBE_RATE / 2) == pytest.approx(2 * s1)  # a machine half as fast
    last = fc.BASE_SECONDS[-1]
    assert fc.base_seconds(4 * last[0], fc.BASE_PROBE_RATE) > last[1]  # beyond the points: still growing


def test_a_gpu_render_still_counts_the_patch_base_on_a_cpu_thread(prepared):
    """The patch base runs on one CPU thread on GPU workers too: its time is not the GPU's rate."""
    import dataclasses

    assert prepared.model.config.base.kind == "patches"
    on_gpu = dataclasses.replace(prepared, request=dataclasses.replace(prepared.request, device="cuda"))
    t, _ = fc.forecast_time(on_gpu, None)
    pixels = prepared.plan.base_height * prepared.plan.base_width
    assert t.base_s == pytest.approx(fc.base_seconds(pixels, fc.RECORDED_THREAD_RATE))
    assert t.base_s > 1.0 and "one CPU thread" in t.basis
