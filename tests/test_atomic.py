"""The one atomic-write helper (models, training logs, the prior cache): fsynced before the
rename, and an interrupted write leaves the old file and no temporary."""

from __future__ import annotations

import os

import pytest

from ourgan_dist.store import atomic


def test_write_atomic_fsyncs_before_it_renames(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    target = tmp_path / "model.json"
    atomic.write_json_atomic(str(target), {"b": 1, "a": [2]})
    assert calls == ["fsync", "replace"]
    assert target.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert os.listdir(tmp_path) == ["model.json"]


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic(str(target), b"new bytes")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.pt"]


def test_checkpoints_training_logs_and_the_prior_cache_share_it():
    from ourgan_dist import train
    from ourgan_dist.models import checkpoint, priors

    assert checkpoint.write_atomic is priors.write_atomic is atomic.write_atomic
    assert train.write_json_atomic is atomic.write_json_atomic
