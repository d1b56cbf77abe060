"""What `train` takes as a photo: a JPEG whose data is scrambled mid-file (which libjpeg reports
only as a warning, "Corrupt JPEG data") is damaged, refused unless --allow-damaged; a photo whose
header declares more than the pixel limit (300 megapixels, OURGAN_MAX_PHOTO_PIXELS raises it) is
refused before anything decodes it, in little memory."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
import zlib

import numpy as np
from click.testing import CliRunner

from conftest import make_photo
from ourgan_dist import images
from ourgan_dist.cli import main

TRAIN = ["--preset", "tiny", "--iterations", "0"]


def run(*args, env=None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r.exit_code, r.output


def scrambled_jpeg(tmp_path) -> str:
    good = make_photo(tmp_path / "full.jpg", 400, 300)
    data = open(good, "rb").read()
    mid, n = len(data) // 2, 4000
    junk = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    path = tmp_path / "scrambled.jpg"
    path.write_bytes(data[: mid - n // 2] + junk + data[mid + n // 2 :])  # same length, the end marker intact
    return str(path)


def huge_png(path, width: int, height: int) -> str:
    """A small PNG file whose header declares width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )
    return str(path)


def test_scrambled_jpeg_is_damaged_and_refused_unless_allowed(tmp_path):
    path = scrambled_jpeg(tmp_path)
    assert "Corrupt JPEG data" in images.find_damage(path)
    code, text = run("train", path, "--out", tmp_path / "m", *TRAIN)
    assert code == 2 and "damaged" in text and "Corrupt JPEG data" in text and "--allow-damaged" in text, text
    assert len(text.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    code, text = run("train", path, "--out", tmp_path / "m", *TRAIN, "--allow-damaged")
    assert code == 0 and "damaged" in text, text


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = huge_png(tmp_path / "huge.png", 100_000, 100_000)  # 10 gigapixels: 30 GB decoded
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run(
        [sys.executable, "-m", "ourgan_dist.cli", "train", path, "--out", str(tmp_path / "m"), *TRAIN],
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
    assert r.returncode == 2, r.stderr
    assert "100000x100000" in r.stderr and "OURGAN_MAX_PHOTO_PIXELS" in r.stderr and "300 megapixels" in r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "m").exists()
    assert peak < 1.5 * 2**20 or peak == before, f"peak {peak / 2**20:.1f} GiB"  # never decoded


def test_the_pixel_limit_can_be_raised_or_lowered(tmp_path):
    photo = make_photo(tmp_path / "p.png", 53, 37)
    code, text = run("train", photo, "--out", tmp_path / "m", *TRAIN, env={"OURGAN_MAX_PHOTO_PIXELS": "1000"})
    assert code == 2 and "53x37" in text and "OURGAN_MAX_PHOTO_PIXELS" in text, text
    code, text = run("train", photo, "--out", tmp_path / "m", *TRAIN, env={"OURGAN_MAX_PHOTO_PIXELS": "2e3"})
    assert code == 0, text
    code, text = run("train", photo, "--out", tmp_path / "n", *TRAIN, env={"OURGAN_MAX_PHOTO_PIXELS": "lots"})
    assert code == 2 and "OURGAN_MAX_PHOTO_PIXELS='lots'" in text and len(text.strip().splitlines()) == 1, text
