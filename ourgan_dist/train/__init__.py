"""One-shot training: the base generator on the photo's scale pyramid, the x4 SR network on
random crops of the full-resolution photo. ``train_model`` is the entry point the CLI uses."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import time
import warnings
from typing import Iterator, Callable, Sequence

from .. import images
from ..store.atomic import write_json_atomic
from ..config import ModelConfig, apply_settings, preset as get_preset
from ..errors import UserError, some_names


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
    return device


def resolve_config(
    preset: str,
    iterations: int | None,
    vertical_coord: bool,
    schedule: tuple[int, int] | None = None,
    settings: Sequence[str] = (),
    config: ModelConfig | None = None,
) -> ModelConfig:
    """The preset with ``settings`` (``SECTION.FIELD=VALUE``, ``config.apply_settings``) applied,
    then ``iterations`` (steps per base scale and SR steps alike) or an explicit ``schedule`` (base
    steps per scale, SR steps) overriding its training length."""
    cfg = apply_settings(get_preset(preset) if config is None else config, settings)
    base = cfg.base if vertical_coord else dataclasses.replace(cfg.base, vertical_coord=False)  # either kind
    train = cfg.train
    if iterations is not None:
        train = dataclasses.replace(train, base_iterations=iterations, sr_iterations=iterations)
    if schedule is not None:
        train = dataclasses.replace(train, base_iterations=schedule[0], sr_iterations=schedule[1])
    return dataclasses.replace(cfg, base=base, train=train)


MODEL_FILES = ("model.pt", "model.json", "training.json")  # what a model folder holds
_LEFTOVER = re.compile(r"^(?:%s)\.tmp-\d+$" % "|".join(re.escape(n) for n in MODEL_FILES))  # write_atomic's, after a crash


def is_model_file(name: str) -> bool:
    """A name a model folder holds: a model file, or one of ``write_atomic``'s temporaries of
    one left by a crash. Nothing else in a model folder is ever removed."""
    return name in MODEL_FILES or _LEFTOVER.match(name) is not None


def holds_our_model(out: str) -> bool:
    """Whether the folder ``out`` holds a model this tool wrote: a ``model.json`` card of ours
    whose ``model_id`` is the hash of the ``model.pt`` beside it (if one is there). A folder's
    ``model.pt``, ``model.json`` or ``training.json`` of any other origin is not ours."""
    import json

    try:
        with open(os.path.join(out, "model.json"), "rb") as f:
            card = json.load(f)
        if not isinstance(card, dict) or not {"format_version", "model_id", "config"} <= card.keys():
            return False
        weights = os.path.join(out, "model.pt")
        if not os.path.exists(weights):
            return True
        return images.file_sha256(weights)[:16] == card["model_id"]  # checkpoint.save's model id
    except (OSError, ValueError):
        return False


def check_out(out: str, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that would lose something: a folder that holds a model
    (unless ``overwrite``), or one that holds other files (never deleted, even with ``overwrite``),
    a ``model.pt`` or ``training.json`` that is not a model of ours among them."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out!r} is a file, not a folder; choose a folder for the model")
    if not os.path.isdir(out):
        return
    names = sorted(os.listdir(out))
    has_model = "model.json" in names and holds_our_model(out)
    other = [n for n in names if not is_model_file(n) or (n in MODEL_FILES and not has_model)]
    if other:
        what = "a model and other files" if has_model else "files that are not a model"
        raise UserError(f"--out {out!r} holds {what} ({some_names(other)}); choose a new or empty folder")
    if has_model and not overwrite:
        raise UserError(f"--out {out!r} already holds a model; pass --overwrite to replace it, or choose another --out")


@contextlib.contextmanager
def out_lock(target: str) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` (an exclusive ``flock``) from the check of --out to
    the model's publication, so two trainings into one --out cannot both go ahead: the second is
    refused at once. The lock file is removed at the end; a lock taken on a file that was removed
    meanwhile is taken again on the new one, so two holders never coexist."""
    import fcntl

    path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"--out {target!r}: another training is writing this model now ({path} is locked); "
                "wait for it to finish or choose another --out"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed the file we locked: lock the current one
    try:
        yield
    finally:
        os.unlink(path)  # while still holding it: a newcomer then locks a new file
        os.close(fd)


def _publish(tmp: str, out: str, overwrite: bool) -> None:
    """Move the finished model folder ``tmp`` into place at ``out``. ``out`` is checked again
    first (something may have been added to it during training): a model there is replaced file
    by file, and nothing that is not a model file is ever removed."""
    try:
        check_out(out, overwrite)
    except UserError as e:
        raise UserError(f"{e} (it changed during training; the new model is kept in {tmp})") from None
    if os.path.isdir(out) and os.listdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "model"))
        os.rename(tmp, out)
        kept = []
        for name in os.listdir(os.path.join(old, "model")):
            if is_model_file(name):
                os.remove(os.path.join(old, "model", name))
            else:  # added after the check above: not ours, never removed
                kept.append(name)
        if kept:
            warnings.warn(f"--out {out!r}: {', '.join(kept)} appeared while the model was replaced; kept in {old}", stacklevel=2)
        else:
            os.rmdir(os.path.join(old, "model"))
            os.rmdir(old)
    else:
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)


def train_model(
    image: str,
    out: str,
    *,
    preset: str = "cpu",
    iterations: int | None = None,
    seed: int = 0,
    device: str = "auto",
    vertical_coord: bool = True,
    progress: bool = True,
    schedule: tuple[int, int] | None = None,
    parallel: bool | None = None,
    overwrite: bool = False,
    allow_damaged: bool = False,
    warn: Callable[[str], None] | None = None,
    settings: Sequence[str] = (),
    config: ModelConfig | None = None,
) -> str:
    """Train (or, with ``iterations=0``, just initialise) a model from one photo; returns its id.

    ``out/model.pt`` and ``out/model.json`` hold the weights, the config and a deterministic meta
    (photo size and hash, seed, final losses, noise amplitudes): the same photo, preset and seed
    give the same bytes on CPU. Timings and loss curves go to ``out/training.json``.

    ``out`` must be new, empty, or (with ``overwrite``) an earlier model; this is checked before
    any work. The model is written into a hidden sibling folder and renamed into place at the end,
    so an interrupted training never leaves a partial model at ``out`` (nor touches the old one).
    A damaged photo (truncated, corrupt) is refused unless ``allow_damaged``, which trains on what
    can be decoded and reports it through ``warn`` (default: ``warnings.warn``). ``config`` (a
    whole ``ModelConfig``, for library callers) replaces the preset and its settings."""
    check_out(out, overwrite)
    target = _out_folder(out)
    with out_lock(target):
        check_out(out, overwrite)  # again, now that no other training can be between the check and the publication
        info = images.probe(image)
        cfg = resolve_config(preset, iterations, vertical_coord, schedule, settings, config)
        dev = resolve_device(device)
        damaged = _check_damage(image, allow_damaged, warn)
        tmp = _partial_folder(target)
        try:
            model_id = _train_into(tmp, image, info, cfg, dev, seed, progress, parallel, damaged)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, target, overwrite)  # on refusal the finished model stays in tmp, and the message says where
        return model_id


def _out_folder(out: str) -> str:
    """Where the model will really be (a symlinked folder is replaced where it is), once its
    parent folder exists and is writable; a ``UserError`` naming --out otherwise."""
    target = os.path.realpath(out)
    parent = os.path.dirname(target)
    above = parent
    while above and not os.path.exists(above):
        above = os.path.dirname(above)
    if above and not os.path.isdir(above):
        raise UserError(f"--out {out!r}: {above!r} is a file, where a folder is needed; choose another --out")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out!r}: its folder {parent!r} cannot be created ({e.strerror}); choose another --out") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out!r}: its folder {parent!r} is not writable; choose a folder you can write to")
    return target


def _check_damage(image: str, allow_damaged: bool, warn: Callable[[str], None] | None) -> bool:
    """Whether the photo is damaged: refused unless ``allow_damaged``, which warns instead."""
    damage = images.find_damage(image)
    if damage and not allow_damaged:
        raise UserError(
            f"photo {image!r} is damaged ({damage}); use an intact copy, or pass --allow-damaged to train on the part that decodes"
        )
    if damage:
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(
            f"photo {image!r} is damaged ({damage}); training on the part that decodes (--allow-damaged)"
        )
    return bool(damage)


def _partial_folder(target: str) -> str:
    """A new hidden folder beside ``target`` for the model being written, with the usual
    permissions (not mkdtemp's 0700: it becomes the published folder)."""
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def _train_into(
    out: str,
    image: str,
    info: images.PhotoInfo,
    cfg: ModelConfig,
    dev: str,
    seed: int,
    progress: bool,
    parallel: bool | None,
    damaged: bool,
) -> str:
    """Build the model, train it on the photo (a decodable copy of a damaged one), and write it
    with its meta and training log into the folder ``out``; returns its id."""
    t0 = time.time()
    model, prior = _build(cfg, seed)
    trained = bool(cfg.train.base_iterations or cfg.train.sr_iterations)
    with tempfile.TemporaryDirectory(prefix="ourgan-photo-") as scratch:
        source = images.write_decodable_copy(image, os.path.join(scratch, "photo.tif")) if damaged else image
        meta, log = _train(model, source, info, dev, seed, progress, parallel, trained, prior is not None)
    meta.update(
        {
            "photo": {"name": image.rsplit("/", 1)[-1], "width": info.width, "height": info.height, "sha256": info.sha256},
            "seed": seed,
            "trained": trained,
            "sr_prior": prior,  # origin and licence of the pre-trained SR weights, None: learnt from scratch
        }
    )
    if damaged:
        meta["photo"]["damaged"] = True
    return _save(model, out, meta, log, time.time() - t0)


def _build(cfg: ModelConfig, seed: int):
    """The seeded model of ``cfg``, its SR network started from its prior; returns (model, the
    prior's provenance or None). Without the prior's package the config says so: no prior."""
    from ..models import checkpoint

    model = checkpoint.build(cfg, seed)
    prior = _load_prior(model)
    if cfg.sr.prior and prior is None:  # the checkpoint says what its SR weights really are
        model.config = dataclasses.replace(cfg, sr=dataclasses.replace(cfg.sr, prior=""))
    return model, prior


def _train(model, image: str, info, dev: str, seed: int, progress: bool, parallel, trained: bool, from_prior: bool):
    """Train ``model`` in place (``fit``); untrained, the patch base still keeps the photo, which
    makes it whole. Returns (meta, log)."""
    if trained:
        from .loop import fit

        result = fit(model, image, info, seed=seed, device=dev, progress=progress, parallel=parallel, from_prior=from_prior)
        return result.meta, result.log
    if model.config.base.kind == "patches":
        from .loop import keep_photo

        keep_photo(model, image, info)
    return {}, {"device": dev}


def _save(model, out: str, meta: dict, log: dict, seconds: float) -> str:
    """Write the model (on the CPU) and its training log into ``out``; returns its id."""
    from ..models import checkpoint

    model.base.cpu()
    model.sr.cpu()
    model_id = checkpoint.save(model, out, meta)
    log = {"model_id": model_id, "preset": model.config.preset, "wall_seconds": round(seconds, 2), **log}
    write_json_atomic(os.path.join(out, TRAINING_LOG), log)
    return model_id


def _load_prior(model) -> dict | None:
    """Start the SR network from its pre-trained prior; without the package that ships it, say so
    in one line and learn from scratch. Returns the prior's provenance (None: from scratch)."""
    import sys

    from ..models.priors import PriorUnavailable
    from .sr import start_from_prior

    try:
        return start_from_prior(model.sr)
    except PriorUnavailable as e:
        print(f"note: {e}; training the SR network from scratch instead", file=sys.stderr)
        return None


TRAINING_LOG = "training.json"
