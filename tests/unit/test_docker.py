"""docker/: the Dockerfile lints clean, the compose file is valid and every reference resolves.

Docker has no engine here, so nothing is built or started: hadolint lints the Dockerfile, the
Compose Specification schema (vendored in check-jsonschema) validates compose.yaml, and this file
checks what the schema cannot: each ``depends_on``, volume, network and ``${VARIABLE}`` resolves,
each COPY source exists, each command exists in the CLI it names, and the environment the
rankflow services get resolves to the server profile through ``Settings``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankflow.cli import build_parser
from rankflow.paths import REPO_ROOT
from rankflow.settings import ENV_VARS, Settings

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
BIN = Path(sys.executable).parent
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed (it is in the dev extras of requirements.lock)"
    return path


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<:` merge keys


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if "#" not in k}


def _interpolate(value: str, env: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: env[m.group(1)], value)


# ---------------------------------------------------------------------------------------------
# Linters
# ---------------------------------------------------------------------------------------------


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def test_dockerfile_passes_hadolint() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_reject_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above could pass by not looking: the same binary fails a known-bad file.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    command = [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("depends_on:", "depends_onn:", 1))
    assert _check_compose(broken).returncode != 0


# ---------------------------------------------------------------------------------------------
# Published ports: loopback unless the user says otherwise
# ---------------------------------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}
DEFAULTED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}")


def _published_host_ips(compose: dict[str, Any]) -> dict[str, str]:
    """``service port`` -> the host address it binds to when no variable is set (each
    ``${VAR:-default}`` at its default); ``""`` for a port published on every interface."""
    found: dict[str, str] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):  # the long syntax
                found[f"{name} {port.get('published')}"] = str(port.get("host_ip", ""))
                continue
            text = str(port)
            assert "${" not in DEFAULTED.sub("", text), (
                f"{name}: {text} has a variable without default"
            )
            resolved = DEFAULTED.sub(lambda m: m.group(2), text)
            host, _, _container = resolved.rpartition(":")
            address, sep, published = host.rpartition(":")
            found[f"{name} {published if sep else host}"] = address if sep else ""
    return found


def test_every_published_port_binds_to_loopback_by_default() -> None:
    published = _published_host_ips(_compose())
    assert {p.split()[0] for p in published} == {"mlflow", "prefect-server", "service"}
    assert {p: ip for p, ip in published.items() if ip not in LOOPBACK} == {}
    # the documented example keeps them there too
    example = _env_example()
    binds = {k: v for k, v in example.items() if k.endswith("_BIND")}
    assert set(binds) == {"MLFLOW_BIND", "PREFECT_BIND", "SERVICE_BIND"}
    assert set(binds.values()) <= LOOPBACK


def test_the_loopback_check_does_catch_a_port_on_every_interface() -> None:
    compose = _compose()
    compose["services"]["service"]["ports"] = ["${SERVICE_PORT:-8080}:8080"]
    compose["services"]["mlflow"]["ports"] = [{"target": 5000, "published": 5000}]
    compose["services"]["prefect-server"]["ports"] = ["${PREFECT_BIND:-0.0.0.0}:4200:4200"]
    assert _published_host_ips(compose) == {
        "service 8080": "",
        "mlflow 5000": "",
        "prefect-server 4200": "0.0.0.0",
    }


# ---------------------------------------------------------------------------------------------
# Cross-references the schema does not check
# ---------------------------------------------------------------------------------------------


def test_every_depends_on_names_a_service() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert dependency != name
            if rule["condition"] == "service_healthy":
                has_check = "healthcheck" in services[dependency] or "build" in services[dependency]
                assert has_check, f"{name} waits for {dependency} to be healthy; it has no check"


def test_every_volume_and_network_is_declared_or_exists() -> None:
    compose = _compose()
    declared_volumes, declared_networks = set(compose["volumes"]), set(compose["networks"])
    used_volumes: set[str] = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
                used_volumes.add(source)
        for network in service.get("networks", []):
            assert network in declared_networks, f"{name}: network {network} is not declared"
    assert used_volumes == declared_volumes, "declared volumes nobody mounts"


def test_every_variable_is_in_env_example() -> None:
    example = _env_example()
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    assert used, "the pattern found no ${VARIABLE} at all"
    assert used <= set(example), f"missing from docker/.env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f"unused in compose.yaml: {sorted(set(example) - used)}"


def test_dockerfile_copies_only_what_exists() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_build_context_and_dockerfile_resolve() -> None:
    for name, service in _compose()["services"].items():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO_ROOT, name
            assert (context / build["dockerfile"]).is_file(), name


# ---------------------------------------------------------------------------------------------
# Commands and settings
# ---------------------------------------------------------------------------------------------


def _commands() -> list[tuple[str, list[str]]]:
    env = _env_example()
    out = []
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if command and "build" in service:  # our image; postgres / redis run their own
            out.append((name, [_interpolate(str(part), env) for part in command]))
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


RANKFLOW_COMMANDS = [(s, c) for s, c in _commands() if c[0] == "rankflow"]


@pytest.mark.parametrize(
    ("service", "command"), RANKFLOW_COMMANDS, ids=[s for s, _ in RANKFLOW_COMMANDS]
)
def test_every_rankflow_command_parses_with_the_cli(service: str, command: list[str]) -> None:
    parser = build_parser()
    subcommand = command[1]
    assert subcommand in _subparsers(parser), f"{service}: `rankflow {subcommand}` does not exist"
    parser.parse_args(command[1:])  # unknown flags exit here


def _help(words: list[str]) -> str:
    result = subprocess.run(
        [_tool(words[0]), *words[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"`{' '.join(words)}` does not exist: {result.stderr[-500:]}"
    return result.stdout


def _split(command: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(subcommand path, global options before it, options after it) of a CLI command."""
    path, before, after = [command[0]], [], []
    for word in command[1:]:
        if word.startswith("--"):
            (after if len(path) > 1 else before).append(word.split("=", 1)[0])
        elif not after:
            path.append(word)
    return path, before, after


@pytest.mark.slow
def test_every_server_command_and_option_exists() -> None:
    """mlflow / prefect commands: the subcommand exists and knows every option given to it."""
    checked = 0
    for service, command in _commands():
        if command[0] == "rankflow":
            continue
        path, before, after = _split(command)
        for words, options in ((path, after), (path[:1], before)):
            if options or words is path:
                text = _help(words)
                missing = [o for o in options if o not in text]
                assert not missing, f"{service}: `{' '.join(words)}` has no option {missing}"
        checked += 1
    assert checked >= 4  # mlflow server, prefect server, worker, deploy


def test_work_pool_of_the_worker_is_the_deployments_pool() -> None:
    worker = dict(_commands())["prefect-worker"]
    pool = worker[worker.index("--pool") + 1]
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} == {pool}


def test_rankflow_services_resolve_to_the_server_profile_through_settings() -> None:
    env = _env_example()
    compose = _compose()
    for name in ("pipeline", "prefect-worker", "service"):
        environ = {
            k: _interpolate(str(v), env)
            for k, v in compose["services"][name]["environment"].items()
        }
        # every setting the services pass is one Settings reads
        settings_vars = {v for v in environ if v.startswith("RANKFLOW_")}
        assert settings_vars <= set(ENV_VARS.values()), name
        settings = Settings.resolve(environ=environ)
        assert settings.profile == "server", name
        assert settings.feast_online_store == "redis", name
        assert settings.redis_url == "redis:6379"
        assert settings.mlflow_tracking_uri == "http://mlflow:5000"
        assert settings.prefect_api_url == "http://prefect-server:4200/api"
        assert settings.postgres_url and settings.postgres_url.startswith("postgresql://")
        assert str(settings.home) == "/data"
        # the password never shows in what `rankflow settings` prints
        assert env["POSTGRES_PASSWORD"] not in str(settings.describe())
