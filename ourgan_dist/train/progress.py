"""Training's progress as a person reads it: which stage runs, how much of the run's time is
behind it, and when it will end.

A step's cost differs by stage by one to two orders of magnitude (the paper preset's last base
scale costs about 20 times its first; an SR step more again), so counting steps misleads: the
first scales finish half the steps in a few percent of the time. Here each stage (a base scale,
the SR network, the detail library) has an expected cost per step, modelled from its arithmetic
(multiply-accumulates) and its layer calls (a fixed cost each: kernel launches and Python, which
dominate the small scales), and:

- the bar shows the share of the run's *time*: seconds spent so far over seconds spent plus the
  seconds expected for the steps left (the model's figures until anything is measured);
- the expected seconds of a stage come from its own measured steps once it has a few; a stage
  not yet started is predicted from the stages measured so far: a fit of seconds = a * calls +
  b * MACs over them (one scale factor on the model while only one stage is measured);
- the first report of each stage is left out of its own average (it carries the warm-up: the
  optimiser's creation, the first pass through a new size);
- stages on the ``SIDE`` track (the SR network in a second process) run beside the main-track
  stages listed before them; the main-track stages after them wait for both.

``TrainingWork`` is the arithmetic, with no torch and no clock of its own (tested on synthetic
step times); ``TrainingBar`` shows it with tqdm on stderr.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..config import BaseConfig, SRConfig, TrainConfig

MAIN, SIDE = "main", "side"
# Expected cost of one layer call in MACs, by device: measured on one CPU core (the base's GAN
# scales, 32 channels: 0.1 ms a call at about 30 GMAC/s), and for a GPU from the same split of a
# launch (~30 us) against its arithmetic (~10 TMAC/s). Only the first stages' ETA rests on it.
CALL_MACS = {"cpu": 3e6, "cuda": 3e8}
MIN_TIMED = 3  # reports of a stage before its own average replaces the model's prediction
DETAIL_CALLS = 4000  # the detail library: fixed work (one CPU core, about 0.4 s) ...
DETAIL_MACS_PER_PIXEL = 5000  # ... and work per photo pixel (about 0.2 us), measured on the cpu preset


@dataclass(frozen=True)
class Stage:
    """A run of steps that cost the same: one base scale, the SR network's training, the detail library."""

    name: str  # what the bar says: "base scale 3/8", "SR fine-tune", "detail library"
    steps: int
    macs: float  # multiply-accumulates of one step (forward and backward)
    calls: float  # layer calls of one step (each has a fixed cost)
    track: str = MAIN  # SIDE: runs in a second process beside the main track


def _stage_macs_per_pixel(base: BaseConfig) -> float:
    """One generator stage's 3x3 convs per pixel: image + y in, channels through, image out."""
    c, n = base.channels, base.convs_per_stage
    return 9 * (4 * c + (n - 2) * c * c + 3 * c)


def _critic_macs_per_pixel(train: TrainConfig, convs: int) -> float:
    c = train.critic_channels
    return 9 * (3 * c + (convs - 2) * c * c + c)


def base_stages(base: BaseConfig, train: TrainConfig, sizes: list[tuple[int, int]]) -> list[Stage]:
    """The GAN base's scales, coarsest first (``sizes``: (h, w) of each, as ``train_base`` trains
    them). A VAE scale's step runs the encoder and every scale up to its own, forward and back; a
    GAN scale's runs its stage twice (sample, reconstruction) and the critic about five passes'
    worth (real, fake, the gradient penalty's double backward), plus a sample of the scales below."""
    g, n = _stage_macs_per_pixel(base), base.convs_per_stage
    d = _critic_macs_per_pixel(train, n)
    pixels = [h * w for h, w in sizes]
    out = []
    for s in range(len(sizes)):
        name = f"base scale {s + 1}/{len(sizes)}"
        if s < base.vae_scales:
            macs, calls = 3 * g * (pixels[0] + sum(pixels[: s + 1])), 3 * n * (s + 2)
        else:
            macs = 6 * g * pixels[s] + 15 * d * pixels[s] + g * sum(pixels[:s])
            calls = 6 * n + 15 * n + n * s
        out.append(Stage(name, train.base_iterations, macs, calls))
    return out


def sr_stage(sr: SRConfig, train: TrainConfig, from_prior: bool, track: str = MAIN) -> Stage:
    """The SR network's training: ``sr_batch`` crops of ``sr_crop`` px a side per step, forward and back."""
    from ..planning.projection import detail_macs_per_pixel, sr_macs_per_pixel

    low_pixels = train.sr_batch * (train.sr_crop // 4) ** 2
    macs = 3 * low_pixels * (sr_macs_per_pixel(sr) - detail_macs_per_pixel(sr))  # the network alone
    convs = sr.convs + 2 if sr.arch == "srvgg" else sr.blocks * sr.rdbs_per_block * sr.dense_convs + 6
    name = "SR fine-tune" if from_prior else "SR training"
    return Stage(name, train.sr_iterations, macs, 3 * convs, track)


def detail_stage(photo_pixels: int) -> Stage:
    """Cutting the photo's detail library (models/detail.py): one step."""
    return Stage("detail library", 1, DETAIL_MACS_PER_PIXEL * photo_pixels, DETAIL_CALLS)


class TrainingWork:
    """Share of the run's time done and time left, from ``stages`` (in the order they run on each
    track) and the step times reported so far. ``call_macs``: the model's cost of a layer call in
    MACs (``CALL_MACS`` of the device). Times are whatever clock the caller passes (seconds)."""

    def __init__(self, stages: list[Stage], call_macs: float = CALL_MACS["cpu"], start: float = 0.0):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names repeat: {names}")
        self.stages = list(stages)
        self.call_macs = call_macs
        self.done = {s.name: 0 for s in stages}  # steps finished
        self.seconds = {s.name: 0.0 for s in stages}  # their measured seconds, warm-up included
        self.reports = {s.name: 0 for s in stages}  # how many reports came
        self._first = {s.name: (0, 0.0) for s in stages}  # the first report's (steps, seconds): the warm-up
        self._clock = {MAIN: start, SIDE: start}  # when each track's last report came
        self._fraction = 0.0

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def begin(self, track: str, now: float) -> None:
        """Time on ``track`` before ``now`` belongs to no stage (e.g. the wait for a second process)."""
        self._clock[track] = now

    def report(self, name: str, steps: int, now: float) -> None:
        """``steps`` steps of stage ``name`` finished at ``now`` (since the track's last report)."""
        track = self.stage(name).track
        seconds = max(0.0, now - self._clock[track])
        self._clock[track] = now
        if not self.reports[name]:
            self._first[name] = (steps, seconds)
        self.reports[name] += 1
        self.done[name] += steps
        self.seconds[name] += seconds

    def current(self, track: str = MAIN) -> Stage | None:
        """The first stage of ``track`` with steps left (None: the track is through)."""
        return next((s for s in self.stages if s.track == track and self.done[s.name] < s.steps), None)

    def label(self) -> str:
        """The stages running now, e.g. "base scale 3/8" or "base scale 3/8 + SR training"."""
        names = [s.name for s in (self.current(MAIN), self.current(SIDE)) if s is not None]
        return " + ".join(names) if names else "done"

    # ---- expected seconds per step ----------------------------------------------------------

    def _measured(self, name: str) -> float | None:
        """Mean seconds per step of ``name``'s reports, its first left out when it has enough."""
        steps, seconds = self.done[name], self.seconds[name]
        if self.reports[name] > MIN_TIMED:
            steps, seconds = steps - self._first[name][0], seconds - self._first[name][1]
        return seconds / steps if steps else None

    def _fit(self) -> tuple[float, float] | None:
        """(seconds per layer call, seconds per MAC) from the measured stages; None: none measured."""
        points = [(s.calls, s.macs, t) for s in self.stages if (t := self._measured(s.name)) is not None and t > 0]
        if not points:
            return None
        # least squares on relative error: each stage counts alike, whatever its size
        rows = [(c / t, m / t) for c, m, t in points]
        aa = sum(r[0] * r[0] for r in rows)
        ab = sum(r[0] * r[1] for r in rows)
        bb = sum(r[1] * r[1] for r in rows)
        ya, yb = sum(r[0] for r in rows), sum(r[1] for r in rows)
        det = aa * bb - ab * ab
        if len(points) >= 2 and det > 1e-9 * aa * bb:
            a, b = (ya * bb - yb * ab) / det, (yb * aa - ya * ab) / det
            if a >= 0 and b >= 0:
                return a, b
        # one stage, or stages alike, or a fit with a negative term: scale the model as it is
        k = sum(t for _, _, t in points) / sum(c * self.call_macs + m for c, m, _ in points)
        return k * self.call_macs, k

    def seconds_per_step(self, stage: Stage) -> float | None:
        """Expected seconds of one step of ``stage``: its own average once it has ``MIN_TIMED``
        reports, else the fit over the measured stages; None before anything is measured."""
        if self.reports[stage.name] >= MIN_TIMED:
            return self._measured(stage.name)
        fit = self._fit()
        return None if fit is None else fit[0] * stage.calls + fit[1] * stage.macs

    def _left(self, stage: Stage, fit: tuple[float, float] | None) -> float:
        """Expected seconds of ``stage``'s steps left: measured seconds when ``fit`` is given, else model MACs."""
        left = max(0, stage.steps - self.done[stage.name])
        if not left:
            return 0.0
        if fit is None:
            return left * (stage.calls * self.call_macs + stage.macs)
        return left * (self.seconds_per_step(stage) or 0.0)

    # ---- what the bar shows -----------------------------------------------------------------

    def fraction(self) -> float:
        """Share of the run's time done, in [0, 1]; it never goes back (a slower estimate holds it)."""
        fit = self._fit()
        left = sum(self._left(s, fit) for s in self.stages)
        if fit is None:  # nothing measured yet: the model's share of the work
            total = sum(s.steps * (s.calls * self.call_macs + s.macs) for s in self.stages)
            done = total - left
        else:
            done = sum(self.seconds.values())
            total = done + left
        f = done / total if total > 0 else 1.0
        self._fraction = min(1.0, max(self._fraction, f))
        return self._fraction

    def eta(self) -> float | None:
        """Seconds left; None until some stage has ``MIN_TIMED`` reports (the first carries warm-up)."""
        if all(n < MIN_TIMED for n in self.reports.values()):
            return None
        fit = self._fit()
        side = [i for i, s in enumerate(self.stages) if s.track == SIDE]
        join = side[-1] if side else -1  # main-track stages after the last side stage wait for it
        beside = sum(self._left(s, fit) for s in self.stages[: join + 1] if s.track == MAIN)
        after = sum(self._left(s, fit) for s in self.stages[join + 1 :])
        return max(beside, sum(self._left(self.stages[i], fit) for i in side)) + after


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class TrainingBar:
    """The training progress line on stderr, e.g.
    ``base scale 3/8  21%|##        | 120/2000 [00:41<02:36, rec=0.0213, d=-0.0041]``:
    the stages running, the share of the run's expected time done, the current stage's steps,
    elapsed < ETA, and the latest losses. ``enabled=False`` keeps the arithmetic and shows nothing."""

    RESOLUTION = 1000  # bar positions
    SHOW_EVERY = 0.25  # seconds between updates of the line (and a new stage at once)

    def __init__(self, stages: list[Stage], device: str = "cpu", enabled: bool = True, clock=time.monotonic, file=None):
        self.clock = clock
        self.work = TrainingWork(stages, CALL_MACS["cuda" if device.startswith("cuda") else "cpu"], start=clock())
        self.losses: dict[str, float] = {}
        self._shown = -float("inf")
        self.bar = None
        if enabled:
            from tqdm import tqdm

            work = self.work

            class _Bar(tqdm):
                @property
                def format_dict(self):
                    d = super().format_dict
                    stage = work.current(MAIN) or work.current(SIDE)
                    d["steps"] = f"{work.done[stage.name]}/{stage.steps}" if stage else ""
                    d["eta_w"] = _format_seconds(work.eta())
                    return d

            self.bar = _Bar(
                total=self.RESOLUTION,
                file=file or sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
                desc=self.work.label(),
                bar_format="{desc} {percentage:3.0f}%|{bar}| {steps} [{elapsed}<{eta_w}{postfix}]",
            )

    def begin(self, track: str) -> None:
        """``track`` starts its first stage now (time before it is no stage's)."""
        self.work.begin(track, self.clock())

    def step(self, stage: str, n: int = 1, losses: dict[str, float] | None = None) -> None:
        """``n`` steps of ``stage`` are done; ``losses`` (named) replace the ones shown."""
        label = self.work.label()
        now = self.clock()
        self.work.report(stage, n, now)
        if losses:
            self.losses.update(losses)
        if self.work.label() != label:  # a new stage shows at once
            self._show(refresh=True)
            self._shown = now
        elif now - self._shown >= self.SHOW_EVERY:
            self._show()
            self._shown = now

    def drop_losses(self, names: tuple[str, ...]) -> None:
        """Stop showing the losses ``names`` (of a stage that is over)."""
        self.losses = {k: v for k, v in self.losses.items() if k not in names}

    def _show(self, refresh: bool = False) -> None:
        if self.bar is None:
            return
        self.bar.set_description(self.work.label(), refresh=False)
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in self.losses.items()}, refresh=False)
        position = min(self.RESOLUTION, round(self.work.fraction() * self.RESOLUTION))
        self.bar.update(max(0, position - self.bar.n))  # never past the total, never back
        if refresh:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
