"""Deployment files, checked as far as this machine allows (issue 7).

- cluster/*.yaml pass Ray's own cluster-launcher preparation and validation (the schema inside
  the installed ``ray`` wheel), and declare one GPU per render actor and an install of the project;
- k8s/*.yaml validate against the KubeRay v1 CRD schemas (made strict: a field the API server
  would silently prune is an error here) and, for the plain Kubernetes parts, with
  ``kubernetes-validate``; credentials only ever come from a Secret. The CRDs are read from the
  folder named by $OURGAN_KUBERAY_SCHEMAS, else from ../shared/schemas/kuberay beside the
  repository (see ``kuberay_schemas``);
- k8s/Dockerfile builds on the Ray GPU image of the installed Ray and installs like the Makefile;
- the job path runs: a real Ray head on 127.0.0.1 with its dashboard runs the RayJob's own
  entrypoint (Ray Jobs API) and each documented ``ray job submit`` command, against moto S3 on
  127.0.0.1, and every result equals a local untiled render bit for bit.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import arrays, assert_same_arrays, do_render, free_ports

REPO = Path(__file__).parents[1]
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas" / "kuberay"
SCHEMAS_VAR = "OURGAN_KUBERAY_SCHEMAS"
CLUSTER_CONFIGS = ["aws-g5.yaml", "onprem.yaml"]
KUBERAY = {"rayjob.yaml": "ray.io_rayjobs.yaml", "raycluster.yaml": "ray.io_rayclusters.yaml"}
K8S_VERSION = "1.37"
# AWS g5 sizes (A10G): GPUs and vCPUs per instance type, from the EC2 instance type table.
G5 = {
    "g5.xlarge": (1, 4),
    "g5.2xlarge": (1, 8),
    "g5.4xlarge": (1, 16),
    "g5.8xlarge": (1, 32),
    "g5.12xlarge": (4, 48),
    "g5.16xlarge": (1, 64),
    "g5.24xlarge": (4, 96),
    "g5.48xlarge": (8, 192),
}


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def makefile_torch_pin() -> str:
    m = re.search(r"^TORCH\s*\?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile has no TORCH ?= pin"
    return m.group(1)


def ray_version() -> str:
    import ray

    return ray.__version__


def documented_submit(path: Path) -> list[str]:
    """The ``ray job submit ...`` command documented in a config's header comment, as argv."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   ray job submit"))
    parts = []
    for line in lines[start:]:
        text = line.lstrip("#").strip()
        parts.append(text.rstrip("\\").strip())
        if not text.endswith("\\"):
            break
    return shlex.split(" ".join(parts))


def render_argv(argv: list[str]) -> list[str]:
    """The ``ourgan-dist render`` part of a command line (after ``--`` for ray job submit)."""
    i = argv.index("ourgan-dist")
    assert argv[i + 1] == "render", argv
    return argv[i:]


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} missing or repeated in {argv}"
    return argv[argv.index(name) + 1]


def rayjob_entrypoint() -> list[str]:
    return shlex.split(load(REPO / "k8s" / "rayjob.yaml")["spec"]["entrypoint"])


# --------------------------------------------------------------------------- container image


def dockerfile_args() -> tuple[str, dict[str, str]]:
    text = (REPO / "k8s" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)", text, re.M))
    return text, args


def dockerfile_base() -> str:
    """The FROM image of k8s/Dockerfile with its ARG defaults filled in."""
    text, args = dockerfile_args()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def test_dockerfile_base_image_is_the_ray_gpu_image_of_the_installed_ray():
    _, args = dockerfile_args()
    assert dockerfile_base() == f"rayproject/ray:{ray_version()}-{args['PYTHON_TAG']}-gpu"
    minor = int(re.fullmatch(r"py3(\d+)", args["PYTHON_TAG"]).group(1))
    requires = re.search(r'^requires-python\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert requires.startswith(">=") and tuple(map(int, requires[2:].split("."))) <= (3, minor)


def test_dockerfile_installs_like_the_makefile():
    text, args = dockerfile_args()
    assert args["TORCH"] == makefile_torch_pin()
    assert args["RAY_VERSION"] == ray_version()
    run = " ".join(re.search(r"^RUN (.+?)(?<!\\)$", text, re.M | re.S).group(1).split())
    steps = [s.strip() for s in run.replace("\\", " ").split("&&")]
    # the torch pin first (so pip never resolves another torch), then the project itself
    assert steps[0].startswith("pip install") and steps[0].endswith('"$TORCH"')
    assert shlex.split(steps[1])[:2] == ["pip", "install"] and "." in shlex.split(steps[1])
    assert '"ray[default]==${RAY_VERSION}"' in steps[1]


def dockerfile_sources() -> list[str]:
    """What k8s/Dockerfile copies from the repository (COPY lines; no --from)."""
    text, _ = dockerfile_args()
    out = []
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        out += [p for p in line.split() if not p.startswith("--")][:-1]
    return out


def test_dockerfile_copies_enough_to_build_the_package(tmp_path):
    """The files the Dockerfile copies are exactly what a wheel of the project is built from."""
    import importlib.util
    import shutil

    text, _ = dockerfile_args()
    ctx = tmp_path / "context"
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, dest = [p for p in line.split() if not p.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which the repository lacks"
            target = ctx / dest / Path(src).name if dest.endswith("/") else ctx / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / src).is_dir():
                shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
            else:
                shutil.copy(REPO / src, target)
    out = tmp_path / "wheel"
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    # the Dockerfile's ADD brings OpenSeadragon's npm tarball; here a stand-in of its layout (no network)
    from test_install import fake_openseadragon

    (version,) = re.findall(r"openseadragon-([\d.]+)\.tgz", text)
    assert json.loads((REPO / "ourgan_dist/view/static/package.json").read_text())["dependencies"]["openseadragon"] == version, (
        "the Dockerfile's OpenSeadragon is the version package.json pins"
    )
    env = dict(os.environ, OURGAN_OPENSEADRAGON_PACKAGE=str(fake_openseadragon(tmp_path / "osd", version)))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(out), str(ctx)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    import zipfile

    (wheel,) = out.glob("ourgan_dist-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ourgan_dist/cli.py" in names and "ourgan_dist/engine/executors/ray.py" in names
    assert "did not match any files" not in r.stderr, r.stderr[-2000:]  # every license file is copied
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "ourgan_dist/view/static/openseadragon/openseadragon.min.js" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ourgan-dist = ourgan_dist.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


# --------------------------------------------------------------------------- cluster launcher


def ray_validate(config: dict) -> dict:
    """What `ray up` does before touching a cloud: fill in defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", CLUSTER_CONFIGS)
def test_cluster_config_passes_rays_own_validation(name):
    import json

    import jsonschema
    import ray.autoscaler

    config = load(REPO / "cluster" / name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written, before Ray merges its defaults
    prepared = ray_validate(config)
    assert prepared["max_workers"] >= 1
    workers = [t for n, t in prepared["available_node_types"].items() if n != prepared["head_node_type"]] or [
        prepared["available_node_types"][prepared["head_node_type"]]
    ]
    assert all(t.get("max_workers", 0) >= t.get("min_workers", 0) for t in workers)
    assert "idle_timeout_minutes" in config


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda c: c.update(setup_comands=c.pop("setup_commands")), "setup_comands"),
        (lambda c: c["available_node_types"]["gpu_a10g_x1"]["resources"].update(GPU="1"), "'1' is not of type"),
        (lambda c: c["available_node_types"]["gpu_a10g_x1"].update(min_workers=9), "max_workers"),
    ],
)
def test_cluster_validation_rejects_mistakes(mutate, match):
    """The validation the configs pass is a real check: a typo or a wrong type fails it."""
    import jsonschema

    config = load(REPO / "cluster" / "aws-g5.yaml")
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=match):
        ray_validate(config)


def test_aws_gpu_workers_declare_one_actor_per_gpu():
    config = load(REPO / "cluster" / "aws-g5.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    capacity = 0
    for name, t in types.items():
        if name == config["head_node_type"]:
            continue
        gpus, vcpus = G5[t["node_config"]["InstanceType"]]
        assert t["resources"]["GPU"] == gpus, f"{name}: declares {t['resources']['GPU']} GPUs, instance has {gpus}"
        assert 0 < t["resources"]["CPU"] <= vcpus
        capacity += gpus * t["max_workers"]
    argv = render_argv(documented_submit(REPO / "cluster" / "aws-g5.yaml"))
    assert option(argv, "--device") == "cuda" and option(argv, "--address") == "auto"
    assert 1 <= int(option(argv, "--workers")) <= capacity
    assert config["docker"]["image"] == dockerfile_base()


@pytest.mark.parametrize("name", CLUSTER_CONFIGS)
def test_cluster_setup_installs_the_project_like_the_makefile(name):
    config = load(REPO / "cluster" / name)
    mounts = config["file_mounts"]
    assert all((REPO / src).resolve() != REPO.resolve() for src in mounts.values()), (
        "the whole checkout is not synced (a credentials file beside it would reach every node)"
    )
    remote = sorted({os.path.dirname(dst) for dst in mounts})
    assert len(remote) == 1 and all(os.path.basename(dst) == Path(src).name for dst, src in mounts.items())
    assert sorted(Path(src).name for src in mounts.values()) == sorted(dockerfile_sources()), (
        "the nodes get what the Dockerfile copies: the files a wheel is built from"
    )
    commands = [shlex.split(c) for c in config["setup_commands"]]
    installs = [c[c.index("install") + 1 :] for c in commands if "pip" in c[0] and "install" in c]
    torch_at = next(i for i, c in enumerate(installs) if makefile_torch_pin() in c)
    project_at = next(i for i, c in enumerate(installs) if remote[0] in c)
    assert torch_at < project_at, "the torch pin is installed before the project, as in the Makefile"
    assert f"ray[default]=={ray_version()}" in installs[project_at]
    assert "**/.venv" in config["rsync_exclude"]
    argv = render_argv(documented_submit(REPO / "cluster" / name))
    assert option(argv, "--address") == "auto" and option(argv, "--out").startswith("s3://")


# --------------------------------------------------------------------------- KubeRay and Kubernetes


def strict(schema: dict) -> dict:
    """A CRD's structural schema as JSON Schema that rejects unknown fields (the API server would
    prune them silently), lets ``nullable`` fields be null and int-or-string fields be either."""
    out = dict(schema)
    out.pop("nullable", None)
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    return out


def kuberay_schemas() -> Path:
    """The folder of KubeRay CRD files: $OURGAN_KUBERAY_SCHEMAS, else ../shared/schemas/kuberay.

    Missing files skip the CRD tests with the steps that make them run, except where skipping
    would hide them: under CI (CI=true, where ../shared is always beside the clone) and when the
    variable is set (its user asked for them), they fail instead."""
    named = os.environ.get(SCHEMAS_VAR)
    folder = Path(named) if named else SHARED_SCHEMAS
    missing = sorted(f for f in KUBERAY.values() if not (folder / f).is_file())
    if missing:
        where = f"${SCHEMAS_VAR}={named}" if named else f"{folder} (../shared/schemas/kuberay beside the repository)"
        message = (
            f"KubeRay CRD schemas not found: {where} lacks {', '.join(missing)}. To run these tests, download "
            f"{' and '.join(sorted(KUBERAY.values()))} of a KubeRay release (ray-operator/config/crd/bases/ "
            f"in github.com/ray-project/kuberay at the release's tag) into a folder and set "
            f"{SCHEMAS_VAR} to that folder."
        )
        if named or os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return folder


@functools.cache
def crd_validator(crd_path: Path):
    """A validator for the ``v1`` version of a KubeRay CRD (read once per test session)."""
    import jsonschema

    crd = load(crd_path)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(v1["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_validate(manifest: dict, crd_file: str) -> None:
    crd_validator(kuberay_schemas() / crd_file).validate(manifest)


def pod_templates(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]


def containers(manifest: dict) -> list[dict]:
    return [c for t in pod_templates(manifest) for c in t["spec"]["containers"]]


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_manifest_validates_against_the_crd(name):
    import kubernetes_validate

    manifest = load(REPO / "k8s" / name)
    assert manifest["apiVersion"] == "ray.io/v1"
    crd_validate(manifest, KUBERAY[name])
    # the embedded pod templates and the object metadata, with Kubernetes' own strict schemas
    for template in pod_templates(manifest):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": manifest["metadata"], "template": template},
            K8S_VERSION,
            strict=True,
        )
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    assert spec["rayVersion"] == ray_version()
    images = {c["image"] for c in containers(manifest)}
    assert len(images) == 1, "head and workers run the same image (built from k8s/Dockerfile)"


@pytest.mark.parametrize(
    "path, value, match",
    [
        (["spec", "rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "nodeselector"], {}, "nodeselector"),
        (["spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"], 0, "is not of type 'string'"),
        (["spec", "rayClusterSpec", "workerGroupSpecs", 0, "maxReplicas"], "four", "is not of type 'integer'"),
        (["spec", "entrypont"], "x", "entrypont"),
    ],
)
def test_crd_validation_rejects_mistakes(path, value, match):
    import jsonschema

    manifest = load(REPO / "k8s" / "rayjob.yaml")
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=match):
        crd_validate(manifest, KUBERAY["rayjob.yaml"])


def test_missing_crd_schemas_say_how_to_run_the_tests(tmp_path, monkeypatch):
    """Without the CRD files the tests skip with the steps that make them run; under CI, or with
    $OURGAN_KUBERAY_SCHEMAS naming a folder that lacks a file, they fail with the same steps."""
    monkeypatch.delenv(SCHEMAS_VAR, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setitem(globals(), "SHARED_SCHEMAS", tmp_path / "no-shared")
    with pytest.raises(pytest.skip.Exception) as skipped:
        kuberay_schemas()
    text = str(skipped.value)
    assert str(tmp_path / "no-shared") in text and f"set {SCHEMAS_VAR} to that folder" in text
    assert "ray.io_rayclusters.yaml and ray.io_rayjobs.yaml" in text and "ray-project/kuberay" in text
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"set {SCHEMAS_VAR} to that folder"):
        kuberay_schemas()
    monkeypatch.delenv("CI")
    half = tmp_path / "half"
    half.mkdir()
    (half / KUBERAY["rayjob.yaml"]).write_text("{}")
    monkeypatch.setenv(SCHEMAS_VAR, str(half))
    with pytest.raises(pytest.fail.Exception) as failed:
        kuberay_schemas()
    assert f"${SCHEMAS_VAR}={half} lacks ray.io_rayclusters.yaml." in str(failed.value)


def test_the_schemas_variable_names_the_folder_the_crds_are_read_from(tmp_path, monkeypatch):
    """A folder whose RayJob CRD lacks ``entrypoint``: with the variable naming it, the shipped
    manifest fails on exactly that field, so the CRDs come from that folder."""
    import json

    import jsonschema

    source = kuberay_schemas()
    crd = load(source / KUBERAY["rayjob.yaml"])
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    del v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["entrypoint"]
    folder = tmp_path / "crds"
    folder.mkdir()
    (folder / KUBERAY["rayjob.yaml"]).write_text(json.dumps(crd))  # JSON is YAML
    (folder / KUBERAY["raycluster.yaml"]).symlink_to(source / KUBERAY["raycluster.yaml"])
    monkeypatch.setenv(SCHEMAS_VAR, str(folder))
    assert kuberay_schemas() == folder
    manifest = load(REPO / "k8s" / "rayjob.yaml")
    with pytest.raises(jsonschema.ValidationError, match="'entrypoint' was unexpected"):
        crd_validate(manifest, KUBERAY["rayjob.yaml"])
    crd_validate(load(REPO / "k8s" / "raycluster.yaml"), KUBERAY["raycluster.yaml"])
    monkeypatch.setenv(SCHEMAS_VAR, str(source))
    crd_validate(manifest, KUBERAY["rayjob.yaml"])  # the unaltered CRD accepts it


def test_quantities_accept_int_or_string():
    manifest = load(REPO / "k8s" / "rayjob.yaml")
    limits = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["nvidia.com/gpu"], limits["cpu"] = "1", 3
    crd_validate(manifest, KUBERAY["rayjob.yaml"])
    limits["cpu"] = "three cores"
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        crd_validate(manifest, KUBERAY["rayjob.yaml"])


def test_rayjob_runs_one_actor_per_gpu_on_object_storage():
    manifest = load(REPO / "k8s" / "rayjob.yaml")
    argv = render_argv(rayjob_entrypoint())
    assert argv[2].startswith("s3://") and option(argv, "--out").startswith("s3://")
    assert option(argv, "--address") == "auto" and option(argv, "--device") == "cuda"
    gpus = 0
    for group in manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        (c,) = pod["containers"]
        per_pod = int(c["resources"]["limits"]["nvidia.com/gpu"])
        assert per_pod >= 1 and pod["nodeSelector"] and pod["tolerations"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        gpus += per_pod * group["replicas"]
    assert int(option(argv, "--workers")) == gpus
    cluster = load(REPO / "k8s" / "raycluster.yaml")
    capacity = sum(
        int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) * g["maxReplicas"]
        for g in cluster["spec"]["workerGroupSpecs"]
    )
    assert 1 <= int(option(render_argv(documented_submit(REPO / "k8s" / "raycluster.yaml")), "--workers")) <= capacity


SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_credentials_only_from_a_secret(name):
    import kubernetes_validate

    secret = load(REPO / "k8s" / "s3-credentials.example.yaml")
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert all("REPLACE-ME" in v for v in secret["stringData"].values()), "example Secret holds placeholders only"
    manifest = load(REPO / "k8s" / name)
    for c in containers(manifest):
        env = {e["name"]: e for e in c["env"]}
        for needed in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "secretKeyRef" in env[needed].get("valueFrom", {}), f"{c['name']}: {needed} not from a Secret"
        for e in c["env"]:
            if SECRET_NAME.search(e["name"]):
                assert "value" not in e, f"{c['name']}: {e['name']} is inline"
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert "AWS_SECRET" not in manifest["spec"].get("entrypoint", "") and "--storage-options" not in manifest["spec"].get(
        "entrypoint", ""
    )


# --------------------------------------------------------------------------- the job path

SIZE, TILE, CHUNK, WORKERS = "301x187", "32", "16", "2"


def for_this_machine(argv: list[str], model: str, out: str) -> list[str]:
    """A documented render command with only what this machine needs changed: the model and
    output URLs, a small size and tile, two CPU workers. Everything else stays as written."""
    argv = list(argv)
    assert argv[2].startswith("s3://")
    argv[2] = model
    for name, value in {
        "--out": out,
        "--size": SIZE,
        "--tile": TILE,
        "--chunk": CHUNK,
        "--workers": WORKERS,
        "--device": "cpu",
    }.items():
        option(argv, name)  # present in the documented command, exactly once
        argv[argv.index(name) + 1] = value
    assert option(argv, "--address") == "auto"
    return argv


def manifest_env(endpoint: str) -> dict[str, str]:
    """The head container's environment as the RayJob builds it, with the Secret's values being
    moto's (its endpoint on 127.0.0.1, its test credentials)."""
    secret = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": endpoint}
    head = load(REPO / "k8s" / "rayjob.yaml")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    env = {}
    for e in head["spec"]["containers"][0]["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = secret[ref["key"]] if ref else e["value"]
    assert env["AWS_ENDPOINT_URL"] == endpoint
    return env


class RayHead:
    """A real Ray head (`ray start --head`) on 127.0.0.1 with its dashboard, in its own temp dir,
    so that stopping it ends exactly its processes and no other Ray on this machine."""

    def __init__(self, env: dict[str, str]):
        # Ray 2.60 heads may require a token (token authentication); this one always does, with
        # its own token, as KubeRay's `authOptions: {mode: token}` sets up.
        token = secrets.token_hex(32)
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        self.auth_header = {"Authorization": f"Bearer {token}"}
        self.temp_dir = tempfile.mkdtemp(prefix="ogd-", dir="/tmp")  # short: Ray's socket paths
        names = (
            "port",
            "ray-client-server-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "node-manager-port",
            "object-manager-port",
        )
        dashboard, *drawn = free_ports(len(names) + 1)  # distinct: Ray refuses a port given to two components
        self.dashboard = f"http://127.0.0.1:{dashboard}"
        ports = dict(zip(names, drawn))
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            *(f"--{k}={v}" for k, v in ports.items()),
        ]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {r.stderr[-2000:]}")

    def client(self, timeout: float = 60):
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + timeout
        while True:
            try:
                return JobSubmissionClient(self.dashboard, headers=self.auth_header)
            except (ConnectionError, RuntimeError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        """End every process of this head (found by its temp dir) and their children, by pid."""
        import psutil

        procs = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(self.temp_dir in part for part in p.info["cmdline"] or []):
                    procs[p.pid] = p
                    for child in p.children(recursive=True):
                        procs[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        for p in procs.values():
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(procs.values()), timeout=3)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        subprocess.run(["rm", "-rf", self.temp_dir], check=False)


@pytest.fixture(scope="module")
def bucket(s3_server, tiny_model):
    import fsspec

    _, opts = s3_server
    fs = fsspec.filesystem("s3", **opts)
    fs.mkdir("ourgan-test")
    fs.put(tiny_model + "/", "ourgan-test/models/tiny/", recursive=True)
    return opts


@pytest.fixture(scope="module")
def ray_head(s3_server):
    endpoint, _ = s3_server
    env = {
        **os.environ,
        **manifest_env(endpoint),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    head = RayHead(env)
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def untiled(tiny_model, tmp_path_factory):
    """The local, untiled (--tile 0) reference render, with the manifest's seed."""
    seed = int(option(rayjob_entrypoint(), "--seed"))
    assert all(
        int(option(render_argv(documented_submit(p)), "--seed")) == seed
        for p in [REPO / "cluster" / n for n in CLUSTER_CONFIGS] + [REPO / "k8s" / "raycluster.yaml"]
    )
    out = str(tmp_path_factory.mktemp("untiled") / "ref.zarr")
    do_render(tiny_model, out, SIZE, tile=0, chunk=int(CHUNK), seed=seed)
    return arrays(out)


@pytest.mark.slow  # a Ray head and a Jobs API job: about a minute; CI runs it
def test_rayjob_entrypoint_runs_on_a_ray_head_through_the_jobs_api(ray_head, bucket, untiled):
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = "s3://ourgan-test/renders/rayjob.zarr"
    argv = for_this_machine(render_argv(rayjob_entrypoint()), "s3://ourgan-test/models/tiny", out)
    client = ray_head.client()
    with pytest.raises(Exception, match="(?i)auth"):  # the head refuses a submission without its token
        JobSubmissionClient(ray_head.dashboard).submit_job(entrypoint="echo refused")
    job = client.submit_job(entrypoint=shlex.join(argv))
    deadline = time.time() + 240
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, f"job {job} still {status}:\n{client.get_job_logs(job)[-3000:]}"
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "done:" in logs and out in logs
    assert_same_arrays(arrays(out, bucket), untiled)
    import dask.array as da  # the way docs/deployment.md reads a result from object storage

    image = da.from_zarr(out, component="0", storage_options=bucket)
    width, height = map(int, SIZE.split("x"))
    assert image.shape == (3, height, width) and (image.compute() == untiled["0"]).all()


DOCUMENTED = ["cluster/onprem.yaml", "cluster/aws-g5.yaml", "k8s/raycluster.yaml"]


def test_documented_commands_differ_only_in_what_the_job_path_test_substitutes():
    """Every documented render command equals the RayJob's once the machine-specific values are
    substituted, so the RayJob's run on a Ray head (above, in the default suite) runs them all;
    each documented ``ray job submit`` command line itself runs with the slow tests (below)."""
    model, out = "s3://b/model", "s3://b/out.zarr"
    want = for_this_machine(render_argv(rayjob_entrypoint()), model, out)
    for config in DOCUMENTED:
        assert for_this_machine(render_argv(documented_submit(REPO / config)), model, out) == want, config


@pytest.mark.slow  # a Ray job each (~45 s on 2 cores); the job path itself is in the default suite (above)
@pytest.mark.parametrize("config", DOCUMENTED)
def test_documented_submit_command_runs_on_a_ray_head(ray_head, bucket, untiled, config):
    argv = documented_submit(REPO / config)
    assert argv[:3] == ["ray", "job", "submit"] and argv.index("--") < argv.index("ourgan-dist")
    split = argv.index("--")
    submit, render = argv[:split], argv[split + 1 :]
    submit[submit.index("--address") + 1] = ray_head.dashboard
    out = f"s3://ourgan-test/renders/{Path(config).stem}.zarr"
    cmd = [*submit, "--", *for_this_machine(render, "s3://ourgan-test/models/tiny", out)]
    r = subprocess.run(cmd, env=ray_head.env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "succeeded" in r.stdout
    assert_same_arrays(arrays(out, bucket), untiled)


def _find(node, key):
    """Every value of ``key`` anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _find(v, key)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def open_dashboard(cmd: str) -> str | None:
    """The host a `ray start --head` command serves its dashboard on when that is reachable from
    the network without token authentication, else None (Ray's default host is localhost)."""
    m = re.search(r"--dashboard-host[= ]+(\S+)", cmd)
    host = m.group(1).strip("'\"") if m else "localhost"
    return None if host in LOOPBACK or re.search(r"\bRAY_AUTH_MODE=token\b", cmd) else host


@pytest.mark.parametrize("name", CLUSTER_CONFIGS)
def test_cluster_dashboard_and_jobs_api_are_not_exposed_without_auth(name):
    """The dashboard (and with it the Jobs API, which runs any command it is sent) listens on the
    head's loopback, reached through `ray dashboard`'s SSH tunnel, unless token authentication
    is on for it. Ray's own default host is localhost."""
    config = load(REPO / "cluster" / name)
    heads = [c for c in config["head_start_ray_commands"] if re.search(r"\bray start\b.*--head", c)]
    assert heads
    for cmd in heads:
        assert open_dashboard(cmd) is None, f"{name}: dashboard open on {open_dashboard(cmd)} without auth: {cmd}"
    header = (REPO / "cluster" / name).read_text().split("\ncluster_name:")[0]
    if not any(re.search(r"RAY_AUTH_MODE=token", c) for c in heads):
        assert "ray dashboard cluster/" in header  # the documented route is the SSH tunnel
        assert documented_submit(REPO / "cluster" / name)[
            documented_submit(REPO / "cluster" / name).index("--address") + 1
        ].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_dashboard_on_all_interfaces_only_with_token_auth(name):
    doc = load(REPO / "k8s" / name)
    hosts = [p.get("dashboard-host") for p in _find(doc, "rayStartParams")]
    modes = [a.get("mode") for a in _find(doc, "authOptions")]
    if any(h and h not in LOOPBACK for h in hosts):
        assert modes == ["token"], f"{name}: dashboard on {hosts} needs authOptions.mode token, has {modes}"


def test_exposure_check_catches_an_open_dashboard():
    """The check above is a real one: the old aws-g5 head command fails it, token auth passes."""
    assert open_dashboard("ray start --head --port=6379 --dashboard-host=0.0.0.0") == "0.0.0.0"
    assert open_dashboard("RAY_AUTH_MODE=token ray start --head --dashboard-host=0.0.0.0") is None
    assert open_dashboard("ray start --head --port=6379") is None
