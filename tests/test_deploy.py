"""The deployment files validate offline (deploy/validate.py), and the validation fails when
one of them is broken: compose schema and semantics, Dockerfiles, Kubernetes schemas, and
what the cluster manifests promise."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def validator() -> ModuleType:
    """deploy/validate.py, imported (in-process: its schema cache lasts the module)."""
    spec = importlib.util.spec_from_file_location("deploy_validate", ROOT / "deploy/validate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deploy_files_validate(validator: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    status = validator.main([])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "are valid" in out


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A repository to break: deploy files copied, sources and lock linked."""
    for name in ("libs", "services", "pyproject.toml", "uv.lock"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    for name in ("docker-compose.yml", ".env.example", ".dockerignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


BREAKAGES = [
    # Kubernetes schemas: a required field missing, an unknown field (strict).
    pytest.param(
        "k8s",
        "deploy/k8s/base/chat.yaml",
        "  selector:\n    matchLabels:\n      app.kubernetes.io/name: chat\n"
        "      app.kubernetes.io/component: api\n  strategy:",
        "  strategy:",
        "'selector' is a required property",
        id="k8s-missing-required-field",
    ),
    pytest.param(
        "k8s",
        "deploy/k8s/base/identity.yaml",
        "          resources:\n",
        "          resourcez:\n",
        "'resourcez' was unexpected",
        id="k8s-unknown-field",
    ),
    # What the platform promises.
    pytest.param(
        "k8s",
        "deploy/k8s/base/agents.yaml",
        "          livenessProbe:\n            httpGet: {path: /health/live, port: http}",
        "          livenessProbe:\n            tcpSocket: {port: http}",
        "no livenessProbe on /health/*",
        id="k8s-probe-not-on-health",
    ),
    pytest.param(
        "k8s",
        "deploy/k8s/overlays/production/kustomization.yaml",
        "AGENTMESH_STREAM_REPLICAS=3",
        "AGENTMESH_STREAM_REPLICAS=1",
        "3 replicas",
        id="k8s-production-stream-replicas",
    ),
    pytest.param(
        "k8s",
        "deploy/k8s/base/networkpolicies.yaml",
        "  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector:\n"
        "            matchLabels:\n              app.kubernetes.io/name: gateway",
        "  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - namespaceSelector: {}\n"
        "          podSelector:\n            matchLabels:\n"
        "              app.kubernetes.io/name: gateway",
        "only the gateway takes ingress",
        id="k8s-service-open-to-outside",
    ),
    # Compose: the schema, then what the schema cannot see.
    pytest.param(
        "compose",
        "docker-compose.yml",
        "  chat:\n    <<: *app\n",
        "  chat:\n    <<: *app\n    replicaz: 2\n",
        "not a valid compose file",
        id="compose-schema",
    ),
    pytest.param(
        "compose",
        "docker-compose.yml",
        'command: ["agentmesh", "migrate", "chat"]',
        'command: ["agentmesh", "migrate", "gateway"]',
        "no migrations for gateway",
        id="compose-migrate-command",
    ),
    pytest.param(
        "compose",
        "docker-compose.yml",
        "dockerfile: deploy/docker/agents.Dockerfile}\n    environment:",
        "dockerfile: deploy/docker/agent.Dockerfile}\n    environment:",
        "Dockerfile deploy/docker/agent.Dockerfile does not exist",
        id="compose-missing-dockerfile",
    ),
    pytest.param(
        "compose",
        "deploy/docker/chat.Dockerfile",
        '"agentmesh.chat.app:create_app"',
        '"agentmesh.chat.app:make_app"',
        "uvicorn target 'agentmesh.chat.app:make_app' does not exist",
        id="compose-image-command",
    ),
    pytest.param(
        "compose",
        "docker-compose.yml",
        "    build: {context: ., dockerfile: deploy/docker/identity.Dockerfile}\n    environment:",
        "    build: {context: ., dockerfile: deploy/docker/identity.Dockerfile}\n"
        '    ports: ["8081:8000"]\n    environment:',
        "only the gateway may",
        id="compose-second-published-port",
    ),
]


@pytest.mark.parametrize(("part", "path", "old", "new", "expected"), BREAKAGES)
def test_validation_fails_on_a_broken_file(
    validator: ModuleType,
    capsys: pytest.CaptureFixture[str],
    repo_copy: Path,
    part: str,
    path: str,
    old: str,
    new: str,
    expected: str,
) -> None:
    target = repo_copy / path
    text = target.read_text()
    assert old in text, f"the breakage no longer applies to {path}"
    target.write_text(text.replace(old, new, 1))
    status = validator.main(["--root", str(repo_copy), "--only", part])
    out = capsys.readouterr().out
    assert status == 1, out
    assert expected in out, out
