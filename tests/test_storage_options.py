"""--storage-options without putting secrets on the command line (where `ps` and the shell history
show them): `@FILE` reads the JSON from a file, and OURGAN_STORAGE_OPTIONS (JSON or @FILE) is read
when the option is not given; the command line wins over the environment. Checked against moto's
S3 server on 127.0.0.1, where the endpoint is only known through these options."""

from __future__ import annotations

import json

import fsspec
import pytest
from click.testing import CliRunner

from ourgan_dist.cli import main
from ourgan_dist.commands.shared import storage_options_option
from ourgan_dist.errors import UserError
from synthetic import write_synthetic_store


def run(*args, env=None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def store(s3_server):
    _, opts = s3_server
    fsspec.filesystem("s3", **opts).mkdir("options")
    url = "s3://options/r.zarr"
    write_synthetic_store(url, 64, 48, chunk=32, storage_options=opts)
    return url


def test_options_from_a_file_and_from_the_environment(store, s3_server, tmp_path, monkeypatch):
    _, opts = s3_server
    path = tmp_path / "s3.json"
    path.write_text(json.dumps(opts))
    monkeypatch.delenv("OURGAN_STORAGE_OPTIONS", raising=False)
    code, text = run("inspect", store, "--storage-options", f"@{path}")
    assert code == 0 and "64x48" in text, text
    for value in (f"@{path}", json.dumps(opts)):
        code, text = run("inspect", store, env={"OURGAN_STORAGE_OPTIONS": value})
        assert code == 0 and "64x48" in text, text
    # the command line wins: a broken environment value is not even read when the option is given
    code, text = run("inspect", store, "--storage-options", f"@{path}", env={"OURGAN_STORAGE_OPTIONS": "{broken"})
    assert code == 0 and "64x48" in text, text


def test_bad_sources_are_one_line_naming_them(tmp_path, monkeypatch):
    monkeypatch.delenv("OURGAN_STORAGE_OPTIONS", raising=False)
    code, text = run("inspect", tmp_path, "--storage-options", f"@{tmp_path / 'missing.json'}")
    assert code == 2 and "missing.json" in text and "--storage-options" in text
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text
    code, text = run("inspect", tmp_path, env={"OURGAN_STORAGE_OPTIONS": "{broken"})
    assert code == 2 and "OURGAN_STORAGE_OPTIONS" in text and "not valid JSON" in text
    assert len(text.strip().splitlines()) == 1
    (tmp_path / "list.json").write_text("[1, 2]")
    monkeypatch.setenv("OURGAN_STORAGE_OPTIONS", f"@{tmp_path / 'list.json'}")
    with pytest.raises(UserError, match="OURGAN_STORAGE_OPTIONS.*list.json.*expected a JSON object"):
        storage_options_option(None)
    assert storage_options_option('{"anon": true}') == {"anon": True}  # the option wins
    monkeypatch.setenv("OURGAN_STORAGE_OPTIONS", "")
    assert storage_options_option(None) == {}
