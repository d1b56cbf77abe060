"""Installing: the package metadata builds quietly; the build puts OpenSeadragon (and its licence)
into the package; a wheel installed into a fresh environment runs train, render, export and view."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_metadata_builds_without_deprecation_warnings(tmp_path):
    code = "import setuptools.build_meta as b, sys; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    r = subprocess.run(
        [sys.executable, "-W", "always", "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Deprecat" not in r.stderr and "deprecated" not in r.stdout, r.stderr[-2000:]
    metadata = (tmp_path / r.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata


# --------------------------------------------------------------------------- OpenSeadragon in the build


def build_script():
    """setup.py as a module (its ``setup()`` call runs only as a script)."""
    spec = importlib.util.spec_from_file_location("ourgan_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_openseadragon(where: Path, version: str) -> Path:
    """A stand-in for the openseadragon npm package: its layout, a few bytes per file."""
    build = where / "build" / "openseadragon"
    (build / "images").mkdir(parents=True)
    (where / "package.json").write_text(json.dumps({"name": "openseadragon", "version": version}))
    (build / "openseadragon.min.js").write_text("window.OpenSeadragon = function () {};\n")
    (build / "openseadragon.js.map").write_text("{}")  # not shipped
    (build / "images" / "home_rest.png").write_bytes(b"\x89PNG")
    (where / "LICENSE.txt").write_text("BSD-3-Clause text\n")
    return where


def test_build_puts_openseadragon_and_its_licence_in_the_package(tmp_path, monkeypatch):
    setup = build_script()
    version = setup.pinned_version()
    package = fake_openseadragon(tmp_path / "pkg", version)
    monkeypatch.setenv(setup.PACKAGE_ENV, str(package))
    target = tmp_path / "build" / "openseadragon"
    assert setup.vendor_openseadragon(target) == str(package)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        "LICENSE.txt",
        "VERSION",
        "images",
        "images/home_rest.png",
        "openseadragon.min.js",
    ]
    assert (target / "VERSION").read_text().strip() == version
    # the same package as an `npm pack` tarball
    tgz = tmp_path / "openseadragon.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(package, arcname="package")
    monkeypatch.setenv(setup.PACKAGE_ENV, str(tgz))
    setup.vendor_openseadragon(tmp_path / "from-tgz")
    assert (tmp_path / "from-tgz" / "openseadragon.min.js").read_bytes() == (target / "openseadragon.min.js").read_bytes()


def test_build_refuses_another_version_a_bad_tarball_and_says_when_npm_is_missing(tmp_path, monkeypatch):
    setup = build_script()
    monkeypatch.setenv(setup.PACKAGE_ENV, str(fake_openseadragon(tmp_path / "old", "1.0.0")))
    with pytest.raises(setup.OpenSeadragonError, match=r"version 1\.0\.0, package\.json pins"):
        setup.vendor_openseadragon(tmp_path / "t1")
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("package/../../escaped.txt")
        tar.addfile(info)
    monkeypatch.setenv(setup.PACKAGE_ENV, str(evil))
    with pytest.raises(setup.OpenSeadragonError, match="refusing the path"):
        setup.vendor_openseadragon(tmp_path / "t2")
    assert not (tmp_path / "escaped.txt").exists()
    # a source tree with no copy of OpenSeadragon and no npm on the PATH: one line saying what to install
    monkeypatch.delenv(setup.PACKAGE_ENV)
    bare = tmp_path / "src"
    (bare / setup.STATIC).mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, setup.STATIC, "package.json"), bare / setup.STATIC / "package.json")
    monkeypatch.setattr(setup.shutil, "which", lambda name: None)
    with pytest.raises(setup.OpenSeadragonError, match="needs npm to fetch OpenSeadragon .* install Node.js and npm"):
        setup.vendor_openseadragon(tmp_path / "t3", root=bare)


# --------------------------------------------------------------------------- a wheel in a fresh environment


def local_openseadragon() -> Path | None:
    """An npm package of OpenSeadragon already on this machine (the build takes it from there, so
    the test needs no network), or None."""
    static = Path(ROOT) / "ourgan_dist" / "view" / "static"
    package = static / "node_modules" / "openseadragon"
    return package if (package / "package.json").is_file() else None


def copy_source(dest: Path) -> Path:
    """The repository as a fresh clone has it (plus an OpenSeadragon copy already vendored by an
    editable install, which the build then reuses)."""
    skip = shutil.ignore_patterns(
        ".git",
        ".venv",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        "node_modules",
        ".pytest_cache",
        ".hypothesis",
        "*.zarr",
        "demo-out",
    )
    shutil.copytree(ROOT, dest, ignore=skip)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = copy_source(tmp / "src")
    env = build_env(src)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (built,) = (tmp / "dist").glob("ourgan_dist-*.whl")
    return built


@pytest.mark.slow
def test_wheel_carries_the_data_the_viewer_and_no_test_scaffolding(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "data/LICENSES.md",
        "data/picos_de_europa.jpg",
        "data/rocket.jpg",
        "data/demo-model/model.pt",
        "data/demo-model/model.json",
        "data/demo-model/training.json",
        "models/priors.py",
        "models/ncnn.py",
        "models/srvgg.py",
        "view/static/index.html",
        "view/static/viewer.js",
        "view/static/viewer.css",
        "view/static/openseadragon/openseadragon.min.js",
        "view/static/openseadragon/LICENSE.txt",
        "view/static/openseadragon/images/home_rest.png",
        "commands/shared.py",
        "outputs/deepzoom.py",
    ):
        assert f"ourgan_dist/{name}" in names, name
    assert not any("synthetic" in n or "node_modules" in n or n.startswith("tests/") for n in names)
    licences = zipfile.ZipFile(wheel).read("ourgan_dist/data/LICENSES.md").decode()
    assert "OpenSeadragon" in licences and "BSD-3-Clause" in licences


def fresh_env(where: Path) -> Path:
    """A new virtual environment that sees this one's packages (torch, Ray, ...) but not this
    checkout: its own site-packages comes first, then ours as a plain path (so our editable
    install's finder is not loaded)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(site, "_outer_site_packages.pth").write_text(ours + "\n")
    return python


def build_env(src: Path) -> dict[str, str]:
    """The environment a build of ``src`` needs to find OpenSeadragon without the network (the test
    is skipped when this machine has no copy)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    package = local_openseadragon()
    if package is not None:
        env["OURGAN_OPENSEADRAGON_PACKAGE"] = str(package)
    elif not (src / "ourgan_dist" / "view" / "static" / "openseadragon" / "VERSION").is_file():
        pytest.skip("no local OpenSeadragon to build with (run `make setup`); the build would fetch it with npm")
    return env


def test_editable_install_prints_no_build_backend_warning(tmp_path):
    """`pip install -e .` as a contributor runs it (into a fresh environment, from a copy of the
    source) says nothing but its progress: no warning relayed from setuptools."""
    src = copy_source(tmp_path / "src")
    env = build_env(src)
    python = fresh_env(tmp_path / "venv")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed", "--no-index"]
        + ["--no-build-isolation", "-e", str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Successfully installed ourgan-dist" in r.stdout
    assert "Warning" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import ourgan_dist; print(ourgan_dist.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(src / "ourgan_dist" / "__init__.py")  # the install is the copy, editable


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


@pytest.mark.slow
def test_wheel_in_a_fresh_environment_runs_train_render_export_and_view(wheel, tmp_path):
    """The issue's criterion: a wheel installed with pip into a fresh environment runs `train`,
    `render`, `export` and `view` (tiny preset, tiny size), the viewer serving its page and
    OpenSeadragon from the installed package over 127.0.0.1."""
    from conftest import make_photo

    python = fresh_env(tmp_path / "venv")
    # --ignore-installed: never touch the outer environment's own install of the project
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--ignore-installed",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cli = str(tmp_path / "venv" / "bin" / "ourgan-dist")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OURGAN_OPENSEADRAGON")}
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import ourgan_dist; print(ourgan_dist.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where

    def ourgan(*args: str) -> str:
        r = subprocess.run([cli, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"ourgan-dist {' '.join(args)}:\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}"
        return r.stdout

    photo = make_photo(work / "photo.png", 53, 37)
    ourgan("train", photo, "--out", "model", "--preset", "tiny", "--iterations", "1", "--device", "cpu")
    ourgan("render", "model", "--out", "r.zarr", "--size", "96x64", "--chunk", "16", "--tile", "32", "--quiet")
    assert "exported 96x64" in ourgan("export", "r.zarr", "r.png", "--quiet")
    assert (work / "r.png").read_bytes()[:4] == b"\x89PNG"
    # Ctrl-C stops it; SIGINT reset to its default first, since a shell's background job starts with it ignored
    view = subprocess.Popen(
        [cli, "view", "r.zarr", "--port", "0"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = view.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert m, line + view.stderr.read() if view.poll() is not None else line
        base = m[1]
        status, page = get(base)
        assert status == 200 and b"/osd/openseadragon.min.js" in page
        status, js = get(base + "osd/openseadragon.min.js")
        packaged = Path(where).parent / "view" / "static" / "openseadragon" / "openseadragon.min.js"
        assert status == 200 and js == packaged.read_bytes() and len(js) > 1000
        assert get(base + "osd/images/home_rest.png")[0] == 200
        status, dzi = get(base + "image.dzi")
        assert status == 200 and b'Width="96" Height="64"' in dzi
        status, tile = get(base + "image_files/7/0_0.png")
        assert status == 200 and tile[:4] == b"\x89PNG"
    finally:
        view.send_signal(signal.SIGINT)
        try:
            view.wait(timeout=30)
        except subprocess.TimeoutExpired:
            view.kill()
            view.wait()
    assert view.returncode == 0 and "stopped" in view.stdout.read()
