"""The deployment files (Dockerfile, compose.yaml, deploy/), checked without Docker or a cluster.

One real server runs for the module: the Dockerfile's ENTRYPOINT with its ENV and WORKDIR (a temporary
folder standing in for the volume), as the image would run it; its USER is checked against the user the
image creates and the Kubernetes securityContext (not run as: this machine's interpreter is root's).
The Dockerfile's HEALTHCHECK command runs against it while it serves and while it drains (when
``/health``, the Kubernetes readiness probe, answers 503); its ``/metrics``, scraped after some jobs
ran, is what the dashboard's and the alert rules' queries must name and what ``promtool check
metrics`` reads.

promtool is Debian's (``apt-get install prometheus``, as ``.ci/run`` does) and kubernetes-validate comes
from requirements-dev.txt (its schemas are bundled: it runs offline). Without them those checks skip,
but under CI (``CI=true``) they fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest
import yaml

import jobq
from jobq.auth import TokenBook, TokenError
from jobq.config import Config
from tests.procs import ROOT, free_port, http, wait_until

IN_CI = os.environ.get("CI") == "true"
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "jobq.json"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest and newest that the manifests must suit
TOKENS = {  # as the Kubernetes Secret and compose.yaml supply them
    "JOBQ_TOKEN": "deploy-test-client-0123456789",
    "JOBQ_WORKER_TOKEN": "deploy-test-worker-0123456789",
    "JOBQ_ADMIN_TOKEN": "deploy-test-admin-0123456789",
}
# names PromQL queries may use besides jobq's own metrics: Prometheus's target health
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if IN_CI:
            pytest.fail("promtool is missing: apt-get install prometheus (.ci/run does)")
        pytest.skip("promtool is missing: apt-get install prometheus")
    return found


def run_promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> None:
    result = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


# -- the Dockerfile, as a builder reads it -----------------------------------------------------------
@dataclass
class Image:
    """The runtime stage of the Dockerfile: what a container of the image starts with."""

    stages: list[str] = field(default_factory=list)  # each FROM line
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    volumes: list[str] = field(default_factory=list)
    expose: list[int] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)  # RUN lines of the runtime stage
    copies: list[list[str]] = field(default_factory=list)  # COPY arguments of every stage

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    @property
    def gid(self) -> int:
        return int(self.user.split(":")[1])


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def parse_env(arguments: str, env: dict[str, str]) -> None:
    for word in shlex.split(arguments):
        key, _, value = word.partition("=")
        env[key] = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m[1] or m[2], m[0]), value)


def read_dockerfile() -> Image:
    image = Image()
    for keyword, rest in dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":  # a new stage: only the last one's settings reach the image
            image = Image(stages=[*image.stages, rest], copies=image.copies)
        elif keyword == "ENV":
            parse_env(rest, image.env)
        elif keyword == "USER":
            image.user = rest
        elif keyword == "WORKDIR":
            image.workdir = rest
        elif keyword == "VOLUME":
            image.volumes += json.loads(rest) if rest.startswith("[") else rest.split()
        elif keyword == "EXPOSE":
            image.expose += [int(port.split("/")[0]) for port in rest.split()]
        elif keyword == "ENTRYPOINT":
            image.entrypoint = json.loads(rest)
        elif keyword == "CMD":
            image.cmd = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            options, _, command = rest.partition("CMD ")
            image.healthcheck = json.loads(command)
            image.healthcheck_options = dict(option.lstrip("-").split("=") for option in options.split())
        elif keyword == "RUN":
            image.runs.append(rest)
        elif keyword == "COPY":
            image.copies.append(rest.split())
    return image


IMAGE = read_dockerfile()


def container_env(path: str) -> dict[str, str]:
    """The image's environment here: its ENV, with the image's virtualenv replaced by this one."""
    venv_bin = str(Path(sys.executable).parent)
    env = {key: value.replace("/opt/jobq/bin", venv_bin) for key, value in IMAGE.env.items()}
    env["PATH"] = env["PATH"].replace("$PATH", path)
    return env


# -- one server, run as the image runs it -----------------------------------------------------------
@dataclass
class Served:
    log: str = ""
    exit_code: int | None = None
    volume: Path = Path()
    volume_files: list[str] = field(default_factory=list)
    metrics: str = ""
    healthy_code: int | None = None  # the HEALTHCHECK command's exit code while serving
    draining_code: int | None = None  # ... and while draining
    draining_health: Any = None  # GET /health while draining
    liveness: dict[str, int] = field(default_factory=dict)  # path -> status while serving ("ok") and draining


def call(url: str, method: str = "GET", body: Any = None, token: str = TOKENS["JOBQ_ADMIN_TOKEN"]) -> tuple[int, Any]:
    status, _, raw = http(url, method, body, token)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def answers(url: str) -> bool:
    try:
        return call(url)[0] == 200
    except OSError:  # not listening yet
        return False


def liveness_paths() -> set[str]:
    container = deployment()["spec"]["template"]["spec"]["containers"][0]
    return {container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "startupProbe")}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Start the image's entry point, run jobs, scrape, then SIGTERM it with a job running; record it all."""
    result = Served()
    volume = tmp_path_factory.mktemp("volume")  # stands for the image's WORKDIR and VOLUME
    result.volume = volume
    port = free_port()
    env = {
        "HOME": str(volume),
        **container_env(os.environ.get("PATH", "")),
        **TOKENS,
        "JOBQ_PORT": str(port),  # the HEALTHCHECK reads it: the image's 8080 may be taken here
        "JOBQ_GRPC_PORT": str(free_port()),
    }
    argv = [*IMAGE.entrypoint, *IMAGE.cmd]
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable, f"{argv[0]} is not on the image's PATH {env['PATH']}"
    log_path = tmp_path_factory.mktemp("log") / "jobq.log"
    url = f"http://127.0.0.1:{port}"

    def healthcheck() -> int:
        done = subprocess.run(IMAGE.healthcheck, env=env, cwd=volume, capture_output=True, timeout=30, check=False)
        return done.returncode

    with log_path.open("wb") as log:
        process = subprocess.Popen([executable, *argv[1:]], cwd=volume, env=env, stdout=log, stderr=log)
        try:
            wait_until(lambda: process.poll() is not None or answers(url + "/health"), "jobq to serve")
            assert process.poll() is None, f"jobq exited with {process.returncode}:\n{log_path.read_text()}"
            for job in (
                {"type": "echo", "payload": {"n": 1}},
                {"type": "echo", "queue": "reports"},
                {"type": "fail", "payload": {"message": "card declined"}, "max_attempts": 1},
            ):
                assert call(url + "/enqueue?wait=5", "POST", job)[0] == 200
            status, metrics = call(url + "/metrics", token=TOKENS["JOBQ_TOKEN"])
            assert status == 200, metrics
            result.metrics = metrics
            result.healthy_code = healthcheck()
            for path in liveness_paths():
                result.liveness[f"{path} ok"] = call(url + path)[0]
            # a job running while SIGTERM comes: jobq drains it, meanwhile neither ready nor healthy
            status, job = call(url + "/enqueue", "POST", {"type": "sleep", "payload": {"seconds": 1.5}})
            assert status == 202, job
            wait_until(lambda: call(f"{url}/jobs/{job['id']}")[1]["status"] == "processing", "the sleep job to run")
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: call(url + "/health")[1]["status"] != "ok", "jobq to drain")
            result.draining_health = call(url + "/health")
            result.draining_code = healthcheck()
            for path in liveness_paths():
                result.liveness[f"{path} draining"] = call(url + path)[0]
            result.exit_code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    result.log = log_path.read_text(errors="replace")
    result.volume_files = sorted(path.name for path in volume.iterdir())
    yield result


# -- the Dockerfile and .dockerignore ---------------------------------------------------------------
def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    assert len(IMAGE.stages) >= 2 and " AS " in IMAGE.stages[0], IMAGE.stages
    assert "slim" in IMAGE.stages[-1], "the runtime stage is a slim base"
    assert any("--from=" in part for copy in IMAGE.copies for part in copy), "the runtime copies the build's output"
    assert IMAGE.uid != 0 and IMAGE.gid != 0, IMAGE.user
    created = " ".join(IMAGE.runs)
    assert f"--uid {IMAGE.uid}" in created and f"--gid {IMAGE.gid}" in created, "USER is the user the image creates"
    assert IMAGE.volumes == [IMAGE.workdir], "the working directory is the volume"
    assert f"chown jobq:jobq {IMAGE.workdir}" in created, "the image's user owns the volume"


def test_dockerfile_settings_match_jobq() -> None:
    """Its entry point is `jobq serve`; its ports are jobq's; the default store lands on the volume."""
    assert IMAGE.entrypoint == ["jobq", "serve"]
    assert IMAGE.env["JOBQ_HOST"] == "0.0.0.0"
    defaults = {spec.name: spec.default for spec in fields(Config)}
    assert int(IMAGE.env["JOBQ_PORT"]) == defaults["port"]
    assert int(IMAGE.env["JOBQ_GRPC_PORT"]) == defaults["grpc_port"]
    assert set(IMAGE.expose) == {defaults["port"], defaults["grpc_port"], 7419}
    assert "JOBQ_STORE" not in IMAGE.env and defaults["store"] == "sqlite:///jobq.db", "relative to WORKDIR"
    assert {"interval", "timeout", "start-period", "retries"} <= set(IMAGE.healthcheck_options)


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last matching rule wins)."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if Path(path).match(pattern) or path == pattern or path.startswith(pattern + "/"):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    sources = [part for copy in IMAGE.copies if not copy[0].startswith("--") for part in copy[:-1]]
    assert sources, "COPY lines found"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(source), f"{source} is copied but .dockerignore leaves it out"
    for path in (".venv", ".git", "tests", "bench", "jobq.db", "jobq/__pycache__/app.cpython-311.pyc"):
        assert dockerignore_excludes(path), f".dockerignore should leave out {path}"


# -- the image's commands, run -------------------------------------------------------------------
def test_entry_point_serves_as_the_image_user_with_the_store_on_the_volume(served: Served) -> None:
    assert served.exit_code == 0, served.log
    assert "jobq.db" in served.volume_files, served.volume_files
    assert "bearer tokens required" in served.log, served.log


def test_healthcheck_is_healthy_while_serving_and_not_while_draining(served: Served) -> None:
    assert served.healthy_code == 0, served.log
    status, answer = served.draining_health  # what the Kubernetes readiness probe reads: not ready
    assert status == 503 and answer["status"] == "draining", served.draining_health
    assert served.draining_code == 1, served.log
    assert "drained 1 jobs" in served.log, served.log


def test_liveness_holds_while_draining(served: Served) -> None:
    """Liveness must not fail while jobq drains: the kubelet would kill it mid-drain."""
    assert served.liveness and set(served.liveness.values()) == {200}, served.liveness


# -- Kubernetes ---------------------------------------------------------------------------------
def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifest(name: str) -> dict[str, Any]:
    (document,) = load_yaml_documents(KUBERNETES / name)
    return document


def deployment() -> dict[str, Any]:
    return manifest("deployment.yaml")


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("kubernetes-validate is not installed: pip install -r requirements-dev.txt")
    kustomization = manifest("kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {name for name in on_disk if ".example." not in name}, "kustomization lists every manifest"
    checked = 0
    for name in sorted(on_disk):
        for document in load_yaml_documents(KUBERNETES / name):
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(document, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    where = ".".join(str(part) for part in error.absolute_path)
                    pytest.fail(f"{name} ({document['kind']}) against Kubernetes {version}: {where}: {error.message}")
                checked += 1
    assert checked >= 2 * 5


def test_deployment_probes_read_health_for_readiness_and_not_for_liveness() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}  # 503 while draining
    assert container["readinessProbe"]["periodSeconds"] <= 10
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    assert "command" not in container and "args" not in container, "the image's entry point, jobq serve"
    assert container["image"] == f"jobq:{jobq.__version__}", "kustomize edit set image jobq=... names the build"


def test_deployment_outlasts_the_drain() -> None:
    spec = deployment()["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pause + float(env["JOBQ_DRAIN_TIMEOUT"])
    assert spec["replicas"] >= 2
    budget = manifest("poddisruptionbudget.yaml")["spec"]
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_deployment_and_service_ports_are_the_image_ports() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert set(ports.values()) == set(IMAGE.expose)
    assert ports["http"] == int(IMAGE.env["JOBQ_PORT"]) and ports["grpc"] == int(IMAGE.env["JOBQ_GRPC_PORT"])
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert int(env["JOBQ_FAKTORY_PORT"]) == ports["faktory"]
    service = manifest("service.yaml")["spec"]
    assert {port["targetPort"] for port in service["ports"]} == set(ports)
    assert service["selector"].items() <= deployment()["spec"]["template"]["metadata"]["labels"].items()
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == IMAGE.uid and security["runAsGroup"] == IMAGE.gid


def test_tokens_come_from_the_secret() -> None:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    secret = manifest("secret.example.yaml")
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert set(secret["stringData"]) == {"JOBQ_STORE", *TOKENS}
    assert not any(item["name"] in secret["stringData"] for item in container["env"]), "no token in plain env"
    with pytest.raises(TokenError):  # the example's placeholders are refused, so nobody deploys them
        TokenBook.load(secret["stringData"])
    worker = manifest("worker.example.yaml")["spec"]["template"]["spec"]["containers"][0]
    refs = [item["valueFrom"]["secretKeyRef"] for item in worker["env"] if "valueFrom" in item]
    assert refs == [{"name": secret["metadata"]["name"], "key": "JOBQ_WORKER_TOKEN"}]


# -- compose.yaml ---------------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def published(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port of ``ports: ["127.0.0.1:HOST:CONTAINER"]``."""
    pairs = [entry.rsplit(":", 2)[-2:] for entry in service.get("ports", [])]
    return {int(host): int(container) for host, container in pairs}


def test_compose_builds_jobq_from_the_dockerfile_and_pins_the_rest() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if "build" in service:
            assert service["build"] == "." and (ROOT / "Dockerfile").exists(), name
        else:
            assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)*", service["image"]), f"{name}: pin {service['image']}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in compose()["volumes"], f"{name}: named volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services and services[dependency].get("profiles") in (None, service.get("profiles"))


def test_compose_profiles_each_run_two_jobq_nodes_on_their_store() -> None:
    services = compose()["services"]
    for profile, scheme in (("postgres", "postgresql"), ("redis", "redis")):
        nodes = {name: s for name, s in services.items() if "build" in s and s.get("profiles") == [profile]}
        assert len(nodes) == 2, (profile, nodes)
        aliases = sorted(alias for s in nodes.values() for alias in s["networks"]["default"]["aliases"])
        assert aliases == ["jobq-1", "jobq-2"]
        for name, node in nodes.items():
            env = node["environment"]
            store = env["JOBQ_STORE"]
            assert store.startswith(scheme + "://"), (name, store)
            host = re.match(r"\w+://(?:[^@/]*@)?([\w-]+)", store)[1]  # type: ignore[index]
            assert host in node["depends_on"] and services[host]["profiles"] == [profile]
            assert set(published(node).values()) <= set(IMAGE.expose), f"{name} publishes ports jobq has"
            assert int(env["JOBQ_FAKTORY_PORT"]) in IMAGE.expose
            assert TokenBook.load(env), "tokens, since the image listens on every interface"
            stop = int(node["stop_grace_period"].rstrip("s"))
            assert stop > float(env["JOBQ_DRAIN_TIMEOUT"]), f"{name}: docker stop must outlast the drain"
    assert published(services["prometheus"]) == {9090: 9090} and published(services["grafana"]) == {3000: 3000}


def test_compose_prometheus_scrapes_the_nodes_with_a_token_they_accept() -> None:
    services = compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert any(volume.startswith("./deploy/prometheus:/etc/prometheus") for volume in services["prometheus"]["volumes"])
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "jobq", "the alert rules select job=jobq"
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    assert targets == {f"jobq-{n}:{IMAGE.env['JOBQ_PORT']}" for n in (1, 2)}
    for name, service in services.items():
        if "build" in service:
            assert job["authorization"]["credentials"] == service["environment"]["JOBQ_TOKEN"], name
    assert (PROMETHEUS / config["rule_files"][0]).exists()


def test_compose_grafana_provisions_the_dashboard_on_that_prometheus() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "jobq.yaml").read_text())["providers"]
    assert mounts["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    uids = {
        panel["datasource"]["uid"] for panel in json.loads(DASHBOARD.read_text())["panels"] if "datasource" in panel
    }
    assert uids == {source["uid"]}


# -- Prometheus: rules and metrics ------------------------------------------------------------------
def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    run_promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert alerts == {
        "JobqQueueBacklog",
        "JobqFailureRatioHigh",
        "JobqLeaseExpiriesRising",
        "JobqNodeDown",
        "JobqStoreUnavailable",
    }


def test_live_metrics_pass_promtool(served: Served) -> None:
    run_promtool("check", "metrics", stdin=served.metrics)


def exported(metrics: str) -> dict[str, set[str]]:
    """Every series name of a scrape (``_bucket``, ``_count``, ``_sum`` included) -> its label names."""
    names: dict[str, set[str]] = {}
    for line in metrics.splitlines():
        match = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", line)
        if match and not line.startswith("#"):
            labels = set(re.findall(r'(\w+)="', match[2] or ""))
            names.setdefault(match[1], set()).update(labels)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return queries


def alert_queries() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def unknown_names(query: str, series: dict[str, set[str]]) -> list[str]:
    """The metrics and labels a query names that the scrape does not have."""
    bare = re.sub(r'"[^"]*"', '""', query)  # label values and regexes are not names
    metrics = set(re.findall(r"\bjobq_\w+", bare))
    problems = [f"metric {name}" for name in sorted(metrics - set(series))]
    metrics |= {name for name in PROMETHEUS_SERIES if re.search(rf"\b{name}\s*[{{\[]", bare)}
    labels = set(re.findall(r"(\w+)\s*=~?", "".join(re.findall(r"\{([^}]*)\}", bare))))
    for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", bare):
        labels.update(label.strip() for label in group.split(",") if label.strip())
    labels.update(re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)", bare))
    known = set().union(*(series.get(name, set()) for name in metrics)) | TARGET_LABELS | {"le"}
    problems += [f"label {label}" for label in sorted(labels - known)]
    assert metrics, f"no metric found in {query!r}"
    return problems


def test_dashboard_queries_name_metrics_jobq_exports(served: Served) -> None:
    series = exported(served.metrics)
    queries = dashboard_queries()
    assert len(queries) >= 15
    problems = {query: unknown_names(query, series) for query in queries}
    assert not {query: found for query, found in problems.items() if found}
    for metric in (
        "jobq_jobs_enqueued_total",
        "jobq_jobs_finished_total",
        "jobq_queue_depth",
        "jobq_queue_oldest_job_age_seconds",
        "jobq_job_wait_seconds_bucket",
        "jobq_job_run_seconds_bucket",
        "jobq_leases_expired_total",
        "jobq_http_request_duration_seconds_bucket",
    ):
        assert any(metric in query for query in queries), f"the dashboard shows {metric}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule, with Grafana's variables filled in."""
    rules = [
        {"record": f"jobq:dashboard_query_{n}", "expr": query.replace("$__rate_interval", "5m").replace("$queue", ".*")}
        for n, query in enumerate(dashboard_queries())
        if not query.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def test_alert_rules_name_metrics_jobq_exports(served: Served) -> None:
    series = exported(served.metrics)
    problems = {query: unknown_names(query, series) for query in alert_queries()}
    assert not {query: found for query, found in problems.items() if found}


def test_query_check_catches_a_misnamed_metric(served: Served) -> None:
    series = exported(served.metrics)
    assert unknown_names("sum by (queue) (rate(jobq_jobs_done_total[5m]))", series) == [
        "metric jobq_jobs_done_total",
        "label queue",  # a metric unknown, its labels are too
    ]
    assert unknown_names("sum by (queu) (jobq_queue_depth)", series) == ["label queu"]
    assert unknown_names('max(jobq_queue_depth{queue="x"}) > 3', series) == []
