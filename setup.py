"""Build step for ``ourgan-dist view``: OpenSeadragon inside the package.

The viewer's page runs OpenSeadragon (BSD-3-Clause, https://openseadragon.github.io), a
JavaScript package from npm; the Python package must carry it, since nothing is downloaded at
run time. ``build_py`` copies its built files (``openseadragon.min.js``, ``images/``) and its
licence into ``ourgan_dist/view/static/openseadragon/`` of the build (of the source tree for an
editable install), with a ``VERSION`` file. The version is the one pinned in
``ourgan_dist/view/static/package.json``. Where it comes from, first found:

1. ``OURGAN_OPENSEADRAGON_PACKAGE``: the npm package as a folder or an ``npm pack`` tarball;
2. a copy already in the source tree (``static/openseadragon/`` with the right ``VERSION``, as an
   editable install or an sdist leaves it, or ``static/node_modules/openseadragon``, as
   ``npm install --prefix ourgan_dist/view/static`` leaves it);
3. ``npm pack openseadragon@VERSION`` (npm checks the tarball against the registry's hash).

Without any of them the build stops with one line saying what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
STATIC = Path("ourgan_dist") / "view" / "static"
VENDORED = STATIC / "openseadragon"
PACKAGE_ENV = "OURGAN_OPENSEADRAGON_PACKAGE"
BUILD = Path("build") / "openseadragon"  # inside the npm package


class OpenSeadragonError(RuntimeError):
    pass


def pinned_version(root: Path = HERE) -> str:
    """The OpenSeadragon version pinned in the viewer's package.json."""
    with open(root / STATIC / "package.json") as f:
        return json.load(f)["dependencies"]["openseadragon"]


def _package_version(package: Path) -> str | None:
    try:
        with open(package / "package.json") as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def _vendored_version(folder: Path) -> str | None:
    try:
        return (folder / "VERSION").read_text().strip()
    except OSError:
        return None


def _copy_package(package: Path, target: Path, version: str) -> None:
    """The built files and the licence of an unpacked npm package into ``target``."""
    found = _package_version(package)
    if found != version:
        raise OpenSeadragonError(f"OpenSeadragon at {package} is version {found}, package.json pins {version}")
    build = package / BUILD
    if not (build / "openseadragon.min.js").is_file() or not (package / "LICENSE.txt").is_file():
        raise OpenSeadragonError(f"OpenSeadragon at {package}: no {BUILD}/openseadragon.min.js or LICENSE.txt in it")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(build / "openseadragon.min.js", target / "openseadragon.min.js")
    shutil.copytree(build / "images", target / "images")
    shutil.copy2(package / "LICENSE.txt", target / "LICENSE.txt")
    (target / "VERSION").write_text(version + "\n")


def _copy_tarball(tarball: Path, target: Path, version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]  # no links, devices
        for m in members:
            if m.name.startswith("/") or ".." in Path(m.name).parts:
                raise OpenSeadragonError(f"{tarball}: refusing the path {m.name!r}")
        tar.extractall(tmp, members=members)
        _copy_package(Path(tmp) / "package", target, version)


def _npm_pack(version: str, target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise OpenSeadragonError(
            f"building ourgan-dist needs npm to fetch OpenSeadragon {version} (BSD-3-Clause) for `ourgan-dist view`: "
            f"install Node.js and npm, or set {PACKAGE_ENV} to the openseadragon npm package (a folder or a tarball)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [npm, "pack", f"openseadragon@{version}", "--json", "--pack-destination", tmp], capture_output=True, text=True
        )
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise OpenSeadragonError(
                f"`npm pack openseadragon@{version}` failed ({last}); check npm's registry "
                f"access, or set {PACKAGE_ENV} to the package (a folder or a tarball)"
            )
        (tarball,) = Path(tmp).glob("openseadragon-*.tgz")
        _copy_tarball(tarball, target, version)


def vendor_openseadragon(target: Path, root: Path = HERE) -> str:
    """Put OpenSeadragon's built files and licence in ``target``; returns where they came from."""
    version = pinned_version(root)
    given = os.environ.get(PACKAGE_ENV)
    if given:
        path = Path(given)
        if path.is_file():
            _copy_tarball(path, target, version)
        else:
            _copy_package(path, target, version)
        return given
    source_copy = root / VENDORED
    if _vendored_version(source_copy) == version and (source_copy / "openseadragon.min.js").is_file():
        if source_copy.resolve() != target.resolve():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source_copy, target)
        return str(source_copy)
    npm_copy = root / STATIC / "node_modules" / "openseadragon"
    if _package_version(npm_copy) == version:
        _copy_package(npm_copy, target, version)
        return str(npm_copy)
    _npm_pack(version, target)
    return f"npm pack openseadragon@{version}"


class BuildPyWithViewer(build_py):
    """``build_py``, then OpenSeadragon into the build (into the source tree when editable)."""

    def run(self) -> None:
        super().run()
        target = HERE / VENDORED if self.editable_mode else Path(self.build_lib) / VENDORED
        try:
            origin = vendor_openseadragon(target)
        except OpenSeadragonError as e:
            raise SystemExit(f"error: {e}") from None
        self.announce(f"OpenSeadragon {pinned_version()} for the viewer, from {origin}", level=2)


def quiet_editable_note() -> None:
    """Drop setuptools' "Editable installation." note, which pip shows as a ``BuildBackendWarning``
    on every ``pip install -e``. setuptools says it so for any package that sits at the top of its
    project (not under ``src/``), as this one does: a folder named ``ourgan_dist`` in the working
    directory is imported before the installed one. That holds for any installed package, editable
    or not, so there is nothing to act on; setuptools raises it as a warning only because pip shows
    a build backend nothing else (its class is ``InformationOnly``). Only that note is dropped: any
    other warning of the build still shows."""
    import warnings

    from setuptools.warnings import InformationOnly

    warnings.filterwarnings("ignore", message=r"Editable installation\.", category=InformationOnly)


if __name__ == "__main__":
    quiet_editable_note()
    setup(cmdclass={"build_py": BuildPyWithViewer})
