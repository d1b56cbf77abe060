"""SR training in a second process, so that on a CPU the base generator and the SR network train
at the same time (their work is independent, and each is seeded on its own).

The child is ``python -m ourgan_dist.train.background JOB_DIR``: a fresh interpreter (never a
re-import of the caller's main script, as multiprocessing's spawn would do). The job and the
weights travel through files in a private temporary folder (weights as ``torch.save`` bytes,
loaded with ``weights_only=True``); progress comes back as JSON lines on the child's stdout,
read by a thread so that the base training never waits for it.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import subprocess
import sys
import tempfile
import threading
from typing import Any, Callable

REPORT_EVERY = 5  # SR steps per progress message
MARK = "@@ourgan-sr "  # prefix of our protocol lines on the child's stdout


def _emit(kind: str, **data: Any) -> None:
    sys.stdout.write(MARK + json.dumps({"kind": kind, **data}) + "\n")
    sys.stdout.flush()


def child_main(job_dir: str) -> int:
    """The child process: train the SR network described in ``job_dir`` and save its weights."""
    try:
        import torch

        from ..config import SRConfig, TrainConfig, from_dict
        from ..models.sr import build_sr
        from .sr import HOLDOUT, load_sr_photo, train_sr

        with open(os.path.join(job_dir, "job.json")) as f:
            job = json.load(f)
        torch.set_num_threads(job["threads"])
        net = build_sr(from_dict(SRConfig, job["sr"]))
        net.load_state_dict(torch.load(os.path.join(job_dir, "init.pt"), weights_only=True))
        net.train()
        photo = load_sr_photo(job["image"])
        pending: list[Any] = [0, {}]

        def step(_stage: str, losses: dict) -> None:
            pending[0] += 1
            pending[1] = losses
            if pending[0] == REPORT_EVERY:
                _emit("step", n=pending[0], losses=losses)
                pending[0] = 0

        hist = train_sr(
            net,
            photo,
            from_dict(TrainConfig, job["train"]),
            job["seed"],
            HOLDOUT,
            step,
            base_width=job["base_width"],
            from_prior=job["from_prior"],
        )
        if pending[0]:
            _emit("step", n=pending[0], losses=pending[1])
        torch.save(net.state_dict(), os.path.join(job_dir, "final.pt"))
        with open(os.path.join(job_dir, "hist.json"), "w") as f:
            json.dump({"hist": hist, "size": [int(photo.shape[3]), int(photo.shape[2])]}, f)
        _emit("done")
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        from ..errors import UserError

        _emit("error", message=f"{type(e).__name__}: {e}", user=isinstance(e, UserError), text=str(e))
        return 1


class BackgroundSR:
    """A running SR training in a child process."""

    def __init__(
        self, net, image: str, train_cfg, seed: int, threads: int, base_width: int | None = None, from_prior: bool = False
    ):
        import torch

        from ..config import to_dict

        self._net = net
        self._dir = tempfile.TemporaryDirectory(prefix="ourgan-sr-")
        d = self._dir.name
        torch.save(net.state_dict(), os.path.join(d, "init.pt"))
        job = {
            "image": os.path.abspath(image),
            "sr": to_dict(net.cfg),
            "train": to_dict(train_cfg),
            "seed": seed,
            "threads": threads,
            "base_width": base_width,
            "from_prior": from_prior,
        }
        with open(os.path.join(d, "job.json"), "w") as f:
            json.dump(job, f)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ourgan_dist.train.background", d],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._q: queue_mod.Queue = queue_mod.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self._proc.stderr), daemon=True).start()
        self.result: tuple[dict, list[int]] | None = None

    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            if line.startswith(MARK):
                self._q.put(json.loads(line[len(MARK) :]))
        self._q.put({"kind": "eof"})

    def _handle(self, msg: dict, on_step: Callable[[int, dict], None]) -> None:
        import torch

        kind = msg["kind"]
        if kind == "step":
            on_step(msg["n"], msg["losses"])
        elif kind == "done":
            d = self._dir.name
            self._net.load_state_dict(torch.load(os.path.join(d, "final.pt"), weights_only=True))
            with open(os.path.join(d, "hist.json")) as f:
                out = json.load(f)
            self.result = (out["hist"], out["size"])
        elif kind == "error":
            from ..errors import UserError

            if msg["user"]:
                raise UserError(msg["text"])
            raise RuntimeError(f"SR training process failed: {msg['message']}\n{''.join(self._stderr[-20:])}")
        else:  # eof before done: the child died
            self._proc.wait()
            raise RuntimeError(
                f"SR training process died (exit code {self._proc.returncode}): {''.join(self._stderr[-5:]).strip()[-500:]}"
            )

    def poll(self, on_step: Callable[[int, dict], None]) -> None:
        """Handle the messages that have arrived, without waiting."""
        while self.result is None:
            try:
                msg = self._q.get_nowait()
            except queue_mod.Empty:
                return
            self._handle(msg, on_step)

    def join(self, on_step: Callable[[int, dict], None]) -> tuple[dict, list[int]]:
        """Wait for the child; load its weights into the network; return (losses, photo size)."""
        while self.result is None:
            self._handle(self._q.get(), on_step)
        self._proc.wait()
        return self.result

    def stop(self) -> None:
        """End the child (if still running) and remove the job folder."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
