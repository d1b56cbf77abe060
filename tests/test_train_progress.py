"""The training bar's arithmetic: the share of the run's time done, weighted by each stage's
expected cost and corrected by measured step times; stage names; never outside [0, 1]."""

from __future__ import annotations

import io
import warnings

import pytest

from ourgan_dist.config import PRESETS, BaseConfig, TrainConfig
from ourgan_dist.train.progress import MAIN, SIDE, Stage, TrainingBar, TrainingWork, base_stages, detail_stage, sr_stage

SIZES = [(20, 32), (28, 45), (40, 64), (57, 91), (80, 128), (113, 181), (160, 256)]  # the paper's base, 7 scales


def paper_stages(steps: int = 50) -> list[Stage]:
    base = BaseConfig(n_scales=len(SIZES))
    train = TrainConfig(base_iterations=steps, sr_iterations=steps)
    return [*base_stages(base, train, SIZES), sr_stage(PRESETS["paper"].sr, train, from_prior=True), detail_stage(4096 * 2560)]


def run(work: TrainingWork, stages: list[Stage], seconds, upto: int | None = None, t: float = 0.0) -> float:
    """Report every step of the first ``upto`` stages, each taking ``seconds(stage)``."""
    for stage in stages[:upto]:
        for _ in range(stage.steps):
            t += seconds(stage)
            work.report(stage.name, 1, t)
    return t


def test_stage_names_and_costs_grow_with_the_scale():
    stages = paper_stages()
    assert [s.name for s in stages[:2]] == ["base scale 1/7", "base scale 2/7"]
    assert stages[-2].name == "SR fine-tune" and stages[-1].name == "detail library"
    assert sr_stage(PRESETS["paper"].sr, TrainConfig(), from_prior=False).name == "SR training"
    macs = [s.macs for s in stages[:7]]
    assert macs == sorted(macs) and macs[-1] > 20 * macs[0]


def test_fraction_is_the_cost_share_when_steps_cost_what_the_model_says():
    """Measured step times proportional to the model: after the first k stages the bar is at
    exactly their share of the run's cost, and the ETA is the rest of it."""
    stages = paper_stages()
    rate = 2e-11  # seconds per modelled MAC

    def cost(s: Stage) -> float:
        return s.steps * (s.calls * 1e6 + s.macs)

    assert TrainingWork(stages).fraction() == 0.0 and TrainingWork(stages).eta() is None
    for k in (1, 3, 6):
        work = TrainingWork(stages, call_macs=1e6)
        run(work, stages, lambda s: rate * (s.calls * 1e6 + s.macs), upto=k)
        share = sum(cost(s) for s in stages[:k]) / sum(cost(s) for s in stages)
        assert work.fraction() == pytest.approx(share, rel=1e-9)
        assert work.eta() == pytest.approx(rate * sum(cost(s) for s in stages[k:]), rel=1e-9)
    assert share < 0.5  # the first six of seven scales are far less than half of the run's time


def test_eta_learns_a_fixed_cost_per_call_the_model_got_wrong():
    """Real steps whose fixed cost per call is 30x the model's: after three scales the fit of
    seconds = a * calls + b * MACs predicts the rest within 1%, where counting steps is far off."""
    stages = paper_stages()[:7]
    work = TrainingWork(stages, call_macs=1e6)

    def truth(s: Stage) -> float:
        return 3e-5 * s.calls + 1e-12 * s.macs

    t = run(work, stages, truth, upto=3)
    left = sum(s.steps * truth(s) for s in stages[3:])
    assert work.eta() == pytest.approx(left, rel=0.01)
    by_steps = t * (sum(s.steps for s in stages) / sum(s.steps for s in stages[:3]) - 1)
    assert abs(by_steps - left) > 0.5 * left
    assert work.fraction() == pytest.approx(t / (t + left), rel=0.01)


def test_first_report_of_a_stage_is_warm_up_and_left_out():
    stage = Stage("base scale 1/1", 10, macs=1e6, calls=10)
    work = TrainingWork([stage])
    work.report(stage.name, 1, 5.0)  # import, first pass: 5 s
    for i in range(4):
        work.report(stage.name, 1, 5.1 + 0.1 * i)
    assert work.seconds_per_step(stage) == pytest.approx(0.1)
    assert work.eta() == pytest.approx(0.5)


def test_side_track_runs_beside_the_base_and_detail_waits_for_both():
    base = Stage("base scale 1/1", 10, macs=1e6, calls=10)
    sr = Stage("SR training", 10, macs=1e6, calls=10, track=SIDE)
    detail = Stage("detail library", 1, macs=1e6, calls=10)
    work = TrainingWork([base, sr, detail], call_macs=0)
    for i in range(1, 5):  # both tracks at 1 s a step
        work.report(base.name, 1, float(i))
        work.report(sr.name, 1, float(i))
    assert work.label() == "base scale 1/1 + SR training"
    assert work.eta() == pytest.approx(6 + 1)  # six more steps on each track at once, then the library
    assert work.current(MAIN) is base and work.current(SIDE) is sr


def test_fraction_stays_in_range_and_never_goes_back():
    stage = Stage("SR training", 4, macs=1.0, calls=0)
    work = TrainingWork([stage, Stage("detail library", 1, macs=1.0, calls=0)])
    seen = []
    for t in (1, 2, 3, 13, 14, 15, 16):  # a slow step, then more steps than planned
        work.report(stage.name, 1, float(t))
        seen.append(work.fraction())
    assert all(0 <= f <= 1 for f in seen) and seen == sorted(seen)
    work.report("detail library", 1, 20.0)
    assert work.fraction() == 1.0 and work.eta() == 0.0


def test_bar_names_the_stage_and_never_warns_about_clamping():
    stages = [Stage("base scale 1/2", 3, 1e6, 10), Stage("base scale 2/2", 3, 4e6, 10), Stage("SR fine-tune", 2, 1e7, 10)]
    ticks = iter(range(100))
    out = io.StringIO()
    bar = TrainingBar(stages, enabled=True, clock=lambda: float(next(ticks)), file=out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in stages:
            for _ in range(s.steps + 2):  # more steps than planned too
                bar.step(s.name, 1, {"rec": 0.5})
        bar.close()
    text = out.getvalue()
    assert "base scale 1/2" in text and "base scale 2/2" in text and "SR fine-tune" in text
    assert "rec=0.5000" in text and "100%" in text
    assert bar.bar.n <= bar.RESOLUTION
