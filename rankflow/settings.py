"""Where rankflow runs: the one module that reads the process environment.

Everything that differs between a laptop and a server (the state directory, the MLflow tracking
URI, the Feast online store, the Redis / Postgres / service addresses) is a field of
:class:`Settings`, resolved once and handed to every stage. Each field is taken from the first
of these that sets it:

1. an explicit argument (``Settings.resolve(home=...)``, a CLI flag, a test fixture);
2. the environment variable named in :data:`ENV_VARS`;
3. the config file (``settings:`` in ``configs/rankflow.yaml``; ``tracking.uri`` for MLflow);
4. the default below, which is the embedded profile: everything in files under ``.state/``.

``profile: server`` only changes defaults (Redis as the online store) and requires the server
URIs to be given (:data:`SERVER_NEEDS`; a one-line ``ConfigError`` names each one missing and
its variable); no other code branches on it. Only this module writes ``os.environ``, once
per process (:func:`configure_process` at the CLI's start; :func:`apply_process_defaults` for
library switches that exist only as environment variables, never overriding a user's value):
child processes (dbt, ``mlflow server``, the Feast CLI) get :meth:`Settings.child_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from models.yaml_config import did_you_mean
from rankflow.errors import ConfigError
from rankflow.paths import REPO_ROOT, StatePaths

__all__ = [
    "ENV_VARS",
    "SERVER_NEEDS",
    "Settings",
    "apply_process_defaults",
    "configure_process",
    "setting_sources",
]

Profile = Literal["local", "server"]
OnlineStore = Literal["sqlite", "redis"]

# field -> environment variable (the documented names; README.md, "Configuration")
ENV_VARS: dict[str, str] = {
    "home": "RANKFLOW_HOME",
    "profile": "RANKFLOW_PROFILE",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "feast_online_store": "RANKFLOW_FEAST_PROFILE",
    "redis_url": "RANKFLOW_REDIS",
    "postgres_url": "RANKFLOW_POSTGRES_URL",
    "prefect_api_url": "PREFECT_API_URL",
    "service_url": "RANKFLOW_SERVICE_URL",
}
# Library behaviour whose only switch is an environment variable (read on every use), set once
# per process by apply_process_defaults: MLflow's per-file artifact progress bars flood flow
# and CI logs (mlflow.environment_variables.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR).
PROCESS_DEFAULTS: dict[str, str] = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
_CHOICES: dict[str, tuple[str, ...]] = {
    "profile": ("local", "server"),
    "feast_online_store": ("sqlite", "redis"),
}
# What the server profile cannot run without (docs/scale-out.md, docker/compose.yaml), each
# with the form expected: without them it would quietly fall back to an embedded store (an
# MLflow SQLite file or a localhost Redis per machine, a temporary Prefect server per run, a
# file lock that other machines cannot see). redis_url only while Redis is the online store.
SERVER_NEEDS: dict[str, str] = {
    "mlflow_tracking_uri": "an MLflow tracking server, http(s)://host:port",
    "redis_url": "Feast's Redis connection string, host:port",
    "postgres_url": "the promotion lock's database, postgresql://user:pass@host:port/db",
    "prefect_api_url": "the Prefect server's API, http(s)://host:port/api",
}
_SERVER_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Settings:
    """The resolved environment of one rankflow process (immutable; use :meth:`replace`)."""

    home: Path
    profile: Profile = "local"
    mlflow_tracking_uri: str | None = None  # None: the embedded SQLite store under home
    feast_online_store: OnlineStore = "sqlite"
    redis_url: str = "localhost:6379"
    postgres_url: str | None = None
    prefect_api_url: str | None = None  # None: Prefect's temporary server per run
    service_url: str = "http://127.0.0.1:8080"

    @classmethod
    def resolve(
        cls,
        explicit: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        file: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Settings:
        """Resolve every field by the precedence in the module docstring.

        ``explicit`` and ``kwargs`` are explicit arguments (``None`` values are ignored);
        ``environ`` defaults to the process environment; ``file`` is the config file's layer.
        """
        environ = os.environ if environ is None else environ
        given = {k: v for k, v in {**(explicit or {}), **kwargs}.items() if v is not None}
        unknown = sorted(set(given) - set(ENV_VARS)) + sorted(set(file or {}) - set(ENV_VARS))
        if unknown:
            raise ConfigError(f"settings: unknown key(s) {unknown}; expected {sorted(ENV_VARS)}")
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            if name in given:
                values[name] = given[name]
            elif environ.get(var, "").strip():
                values[name] = environ[var].strip()
            elif file and file.get(name) is not None:
                values[name] = file[name]
        for name, choices in _CHOICES.items():
            if name in values and values[name] not in choices:
                source = "argument" if name in given else ENV_VARS[name]
                close = did_you_mean(str(values[name]), choices)
                raise ConfigError(
                    f"settings.{name}: {values[name]!r} (from {source}) is not one of {choices}"
                    + (f"; did you mean {close!r}?" if close else "")
                )
        if values.get("profile") == "server":
            values.setdefault("feast_online_store", "redis")
            _check_server_profile(values, given)
        home = Path(values.pop("home", REPO_ROOT / ".state")).expanduser().resolve()
        return cls(home=home, **values)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def paths(self) -> StatePaths:
        """Every folder under :attr:`home`."""
        return StatePaths(self.home)

    def as_env(self) -> dict[str, str]:
        """These settings as the environment variables that carry them to a child process."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if value is not None:
                out[ENV_VARS[name]] = str(value)
        return out

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child process: this process's, with these settings on top."""
        return {**os.environ, **self.as_env(), **(extra or {})}

    def describe(self) -> dict[str, str | None]:
        """Printable, with any password in a URI masked."""
        return {f.name: _mask(getattr(self, f.name)) for f in fields(self)}


def setting_sources(
    explicit: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Where :meth:`Settings.resolve` takes each field from, by the same precedence (without a
    file layer): ``"argument"``, the environment variable's name, or ``"default"``."""
    environ = os.environ if environ is None else environ
    given = {k for k, v in (explicit or {}).items() if v is not None}
    return {
        name: "argument" if name in given else var if environ.get(var, "").strip() else "default"
        for name, var in ENV_VARS.items()
    }


def _check_server_profile(values: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse a server profile that lacks a server: one line naming every missing setting."""
    needed = [
        n for n in SERVER_NEEDS if n != "redis_url" or values["feast_online_store"] == "redis"
    ]
    missing = [f"{n} (set {ENV_VARS[n]}: {SERVER_NEEDS[n]})" for n in needed if not values.get(n)]
    not_servers = [
        f"{n} {values[n]!r} (from {'argument' if n in given else ENV_VARS[n]}) is not a server: "
        f"expected {SERVER_NEEDS[n]}"
        for n in ("mlflow_tracking_uri", "prefect_api_url")
        if values.get(n) and not str(values[n]).startswith(_SERVER_SCHEMES)
    ]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + not_servers
    if problems:
        raise ConfigError(f"settings: the server profile needs its servers: {'; '.join(problems)}")


def apply_process_defaults() -> None:
    """Set :data:`PROCESS_DEFAULTS` in this process's environment where the user has not.

    Idempotent; called by the stages that use those libraries (MLflow tracking set-up,
    logging and downloading models) rather than patched around each call.
    """
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _mask(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else text
    return text


def configure_process(settings: Settings) -> None:
    """Set the tools' own environment once, at process start, before they are imported.

    Prefect reads its settings when it is imported, so the CLI calls this before it starts a
    flow: Prefect's home under the state dir, no telemetry (it would try the network), and the
    API URL of the server profile; and the resolved settings themselves, so the flows it starts
    (and their child processes) resolve the same ones. Existing values of the tools' own
    variables win (a deployment's worker sets its own).
    """
    os.environ.update(settings.as_env())
    os.environ.setdefault("PREFECT_HOME", str(settings.paths.prefect))
    # Prefect creates its home on import without parents: on a fresh RANKFLOW_HOME it warned
    # "Failed to create the Prefect home directory" (harmless, but the first line a user saw).
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The temporary API server takes ~20 s to start on an idle 2-core machine, which is
    # Prefect's own startup timeout: on a busy host (or two test workers) a flow then failed
    # with "Timed out while attempting to connect to ephemeral Prefect API server".
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    apply_process_defaults()
