"""What `train` refuses before any work, and what it never leaves behind: a damaged photo (unless
--allow-damaged), an --out that already holds a model (unless --overwrite) or other files, and a
half-written model after an interrupted or killed training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import make_photo
from ourgan_dist.cli import main


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


TRAIN = ["--preset", "tiny", "--iterations", "0"]


def test_damaged_photo_is_refused_unless_allowed(tmp_path):
    good = make_photo(tmp_path / "full.jpg", 200, 150)
    data = open(good, "rb").read()
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(data[: len(data) // 3])
    code, text = run("train", cut, "--out", tmp_path / "m", *TRAIN)
    assert code == 2 and "damaged" in text and "--allow-damaged" in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    code, text = run("train", cut, "--out", tmp_path / "m", *TRAIN, "--allow-damaged")
    assert code == 0 and "Warning:" in text and "damaged" in text
    assert json.loads((tmp_path / "m" / "model.json").read_text())["meta"]["photo"]["damaged"] is True
    code, text = run("train", good, "--out", tmp_path / "g", *TRAIN)  # an intact photo: no warning
    assert code == 0 and "Warning" not in text


def test_set_changes_one_config_field_and_refuses_bad_settings_before_any_work(photo, tmp_path):
    code, text = run(
        "train",
        photo,
        "--out",
        tmp_path / "m",
        *TRAIN,
        "--set",
        "base.pieces=2",
        "--set",
        "train.sr_blur=0.5",
        "--set",
        "base.vertical_coord=false",
        "--set",
        "sr.skip=bicubic",
    )
    assert code == 0, text
    config = json.loads((tmp_path / "m" / "model.json").read_text())["config"]
    assert (config["base"]["pieces"], config["train"]["sr_blur"]) == (2, 0.5)
    assert (config["base"]["vertical_coord"], config["sr"]["skip"]) == (False, "bicubic")
    assert config["base"]["patch"] == 5  # the rest is the preset's
    for bad, says in (
        ("base.piece=2", "known fields"),
        ("model.x=1", "SECTION.FIELD=VALUE"),
        ("base.pieces", "SECTION.FIELD=VALUE"),
        ("base.pieces=two", "expected an int"),
        ("base.pieces=0", "pieces"),
        ("base.vertical_coord=maybe", "expected true or false"),
        ("sr.skip=cubic", "skip"),
    ):
        code, text = run("train", photo, "--out", tmp_path / "bad", *TRAIN, "--set", bad)
        assert code == 2 and says in text and "Traceback" not in text, (bad, text)
        assert len(text.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_existing_model_needs_overwrite_and_other_files_are_never_replaced(photo, tmp_path):
    out = tmp_path / "m"
    assert run("train", photo, "--out", out, *TRAIN, "--seed", "1")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, text = run("train", photo, "--out", out, *TRAIN, "--seed", "2")
    assert code == 2 and "already holds a model" in text and "--overwrite" in text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, text = run("train", photo, "--out", out, *TRAIN, "--seed", "2", "--overwrite")
    assert code == 0, text
    assert (out / "model.pt").read_bytes() != before["model.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no partial or old folder left beside it
    (out / "notes.txt").write_text("mine")
    code, text = run("train", photo, "--out", out, *TRAIN, "--overwrite")
    assert code == 2 and "notes.txt" in text and (out / "notes.txt").exists()
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.jpg").write_bytes(b"x")
    code, text = run("train", photo, "--out", tmp_path / "pictures", *TRAIN)
    assert code == 2 and "not a model" in text


def test_only_model_files_and_their_crash_leftovers_count_as_the_model(photo, tmp_path):
    """A user's file whose name merely contains ``.tmp-`` is not the model's: --out holding it is
    refused and it is kept; a model file's own leftover from a crash (``model.pt.tmp-123``) is
    replaced with the model."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.tmp-1.txt").write_text("mine")
    code, text = run("train", photo, "--out", out, *TRAIN)
    assert code == 2 and "notes.tmp-1.txt" in text and (out / "notes.tmp-1.txt").read_text() == "mine"
    (out / "notes.tmp-1.txt").unlink()
    (out / "model.pt.tmp-123").write_bytes(b"half")
    code, text = run("train", photo, "--out", out, *TRAIN)
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt", "training.json"]


def test_model_files_of_another_origin_are_never_replaced(photo, tmp_path):
    """Only a model this tool wrote counts as the model --overwrite replaces: a user's own
    ``training.json``, another program's ``model.pt`` and ``model.json``, or a model of ours whose
    weights are no longer the ones its card names, are refused and kept, with or without --overwrite."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "training.json").write_text('{"my": "notes"}')
    for extra in ((), ("--overwrite",)):
        code, text = run("train", photo, "--out", out, *TRAIN, *extra)
        assert code == 2 and "training.json" in text and "not a model" in text, text
    assert (out / "training.json").read_text() == '{"my": "notes"}'
    (out / "model.pt").write_bytes(b"another program's weights")
    (out / "model.json").write_text('{"name": "my net"}')
    code, text = run("train", photo, "--out", out, *TRAIN, "--overwrite")
    assert code == 2 and "model.pt" in text and (out / "model.pt").read_bytes() == b"another program's weights"
    ours = tmp_path / "ours"
    assert run("train", photo, "--out", ours, *TRAIN)[0] == 0
    (ours / "model.pt").write_bytes(b"replaced by hand")
    code, text = run("train", photo, "--out", ours, *TRAIN, "--overwrite")
    assert code == 2 and (ours / "model.pt").read_bytes() == b"replaced by hand", text


def test_a_file_added_to_out_during_publication_is_kept(photo, tmp_path, monkeypatch):
    """Between the last check of --out and the replacement of the old model, a user adds a file:
    the old model's files are removed, the user's file is not, and a warning says where it is."""
    import ourgan_dist.train as train

    out = tmp_path / "m"
    train.train_model(photo, str(out), preset="tiny", iterations=0, device="cpu", progress=False)
    checked, calls = train.check_out, []

    def check_then_add(path, overwrite=False):  # the third check is the one before publication
        checked(path, overwrite)
        calls.append(path)
        if len(calls) == 3:
            (out / "late.txt").write_text("mine")

    monkeypatch.setattr(train, "check_out", check_then_add)
    with pytest.warns(UserWarning, match="late.txt"):
        train.train_model(photo, str(out), preset="tiny", iterations=0, seed=3, device="cpu", progress=False, overwrite=True)
    kept = [p for p in tmp_path.rglob("late.txt")]
    assert len(kept) == 1 and kept[0].read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt", "training.json"]


def test_interrupted_training_leaves_no_model_and_keeps_the_old_one(photo, tmp_path, monkeypatch):
    """Interrupted right after the weights are written (the last moment a partial model could be
    left): nothing appears at --out, and an earlier model there is untouched."""
    import ourgan_dist.train as train

    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "write_json_atomic", interrupted)
    new = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        train.train_model(photo, str(new), preset="tiny", iterations=0, device="cpu", progress=False)
    assert not new.exists() and os.listdir(tmp_path) == []
    monkeypatch.undo()
    old = tmp_path / "old"
    train.train_model(photo, str(old), preset="tiny", iterations=0, seed=1, device="cpu", progress=False)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    monkeypatch.setattr(train, "write_json_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_model(photo, str(old), preset="tiny", iterations=0, seed=2, device="cpu", progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["old"]


def test_sigkilled_training_leaves_no_model_pt(photo, tmp_path):
    out = tmp_path / "m"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ourgan_dist.cli",
            "train",
            photo,
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--iterations",
            "500",
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.time()
        while not any(n.startswith(".m.partial-") for n in os.listdir(tmp_path)):  # training has begun
            assert proc.poll() is None and time.time() - t0 < 60
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "model.pt").exists()
    # the killed run's hidden work folder does not make the next training refuse
    code, text = run("train", photo, "--out", out, *TRAIN)
    assert code == 0 and (out / "model.pt").exists()


def test_the_model_folder_has_the_usual_permissions(photo, tmp_path):
    """A model folder is readable by others as any folder the user makes (not mkdtemp's 0700)."""
    import stat

    code, text = run("train", photo, "--out", tmp_path / "m", *TRAIN)
    assert code == 0, text
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "m").st_mode) == 0o777 & ~umask


def test_a_file_added_to_out_during_training_is_kept_and_the_model_waits_beside_it(photo, tmp_path, monkeypatch):
    """--out is checked again before the model is published: a file that appeared there during
    training is never removed, and the finished model stays in its hidden folder, named."""
    import ourgan_dist.train as train
    from ourgan_dist.errors import UserError

    out = tmp_path / "m"
    real = train._train_into

    def train_then_someone_writes(*args, **kwargs):
        model_id = real(*args, **kwargs)
        out.mkdir(exist_ok=True)
        (out / "keep.txt").write_text("mine")
        return model_id

    monkeypatch.setattr(train, "_train_into", train_then_someone_writes)
    with pytest.raises(UserError, match="changed during training") as e:
        train.train_model(photo, str(out), preset="tiny", iterations=0, seed=1, device="cpu", progress=False)
    assert (out / "keep.txt").read_text() == "mine" and not (out / "model.pt").exists()
    kept = str(e.value).rsplit("kept in ", 1)[1].rstrip(")")
    assert os.path.exists(os.path.join(kept, "model.pt"))


def test_a_second_training_into_the_same_out_is_refused_while_the_first_runs(photo, tmp_path):
    from ourgan_dist.errors import UserError
    from ourgan_dist.train import out_lock, train_model

    out = str(tmp_path / "m")
    with out_lock(os.path.realpath(out)):  # the first training holds the lock
        with pytest.raises(UserError, match="another training"):
            train_model(photo, out, preset="tiny", iterations=0, seed=1, device="cpu", progress=False)
    assert not os.path.exists(out)
    train_model(photo, out, preset="tiny", iterations=0, seed=1, device="cpu", progress=False)  # then it may
    train_model(photo, out, preset="tiny", iterations=0, seed=2, device="cpu", progress=False, overwrite=True)
    assert sorted(os.listdir(out)) == ["model.json", "model.pt", "training.json"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".m.old-") or n.startswith(".m.partial-")] == []


def test_an_unwritable_out_is_one_line_naming_it(photo, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: a folder under a file stands in for "cannot be written"
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "m"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked / "m"
    code, text = run("train", photo, "--out", out, *TRAIN)
    assert code == 2 and str(out) in text and ".partial" not in text and "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1
