"""Flow parameters: which rankflow config a run uses, validated before the run does any work.

A flow's ``config`` parameter is a :class:`ConfigParams`: the YAML file and dotted-key
overrides, exactly what ``python -m rankflow --config FILE --set KEY=VALUE`` takes. Prefect
validates flow parameters with Pydantic before the flow body starts, and validating a
``ConfigParams`` loads the config, so an unknown key, a bad value or a missing file fails the
flow run in its parameter check, with the message of :class:`rankflow.config.ConfigError`
naming the file and key, before a single task runs. Deployments add
``enforce_parameter_schema: true``, so the server rejects wrongly typed parameters even earlier,
when the run is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rankflow.config import DEFAULT_CONFIG_PATH, RankflowConfig, load_config
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.settings import Settings


class ConfigParams(BaseModel):
    """The rankflow config of a flow run: a YAML file plus dotted-key overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_path: str | None = Field(
        None,
        description="Pipeline config YAML; a relative path is read from the repository root "
        "(the worker's working directory does not matter). Default: configs/rankflow.yaml",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted keys overriding the file, e.g. {'simulation.n_impressions': 200000}",
    )

    @model_validator(mode="after")
    def _loads(self) -> ConfigParams:
        # Loading is the validation: every key and value of the resolved config is checked.
        # ConfigError is a ValueError, so Pydantic reports it as this parameter's error.
        self.load()
        return self

    @classmethod
    def default(cls) -> ConfigParams:
        """The default value of a flow's ``config`` parameter: ``configs/rankflow.yaml`` as is.

        Built without validation, so importing a flow module never reads the config file; the
        flow's first step (:meth:`load`) reads and validates it.
        """
        return cls.model_construct(config_path=None, overrides={})

    def resolved_path(self) -> Path:
        if not self.config_path:
            return DEFAULT_CONFIG_PATH
        path = Path(self.config_path).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    def load(self) -> RankflowConfig:
        """Read and validate the config and the model config it names; raises ``ConfigError``
        naming the file and key before any stage runs."""
        from rankflow.preflight import check_model_config

        config = load_config(self.resolved_path(), dict(self.overrides))
        check_model_config(config)
        return config

    def settled(self, paths: StatePaths) -> ConfigParams:
        """This config held to what the state in ``paths`` was built with
        (rankflow/built_with.py): the state's simulation / warehouse values where these
        overrides and the file ask for none; ``StateSettingsError`` (one line naming each key,
        the state's value and the requested one) if they ask to change one, before any work."""
        from rankflow.built_with import settled_overrides

        path = self.resolved_path() if self.config_path else None
        overrides = settled_overrides(paths, path, dict(self.overrides))
        return (
            self
            if overrides == self.overrides
            else self.model_copy(update={"overrides": overrides})
        )

    def describe(self) -> dict[str, Any]:
        """What the run was asked for (recorded next to the resolved config)."""
        return {"config_path": str(self.resolved_path()), "overrides": dict(self.overrides)}


# The default of every flow's ``config`` parameter (configs/rankflow.yaml, no overrides).
DEFAULT_CONFIG = ConfigParams.default()


def load_on_state(
    config: ConfigParams, settings: Settings, *, rebuild: bool = False
) -> tuple[ConfigParams, RankflowConfig]:
    """A flow's config on its state dir: settled against what the state was built with (a
    rebuild takes it as asked), and loaded. Subflows get the settled one."""
    settled = config if rebuild else config.settled(settings.paths)
    return settled, settled.load()


def record_build(
    config: ConfigParams, resolved: RankflowConfig, paths: StatePaths, by: str
) -> None:
    """Remember what the state's data was just built with: the raw data (if simulated) and
    the warehouse (rankflow/built_with.py); called when the build has completed."""
    from rankflow.built_with import build_request
    from rankflow.built_with import record_build as record
    from rankflow.tracking.lineage import git_sha

    path = config.resolved_path() if config.config_path else None
    sections = ("simulation", "warehouse") if resolved.source == "simulate" else ("warehouse",)
    request = build_request(path, dict(config.overrides))
    record(paths, request, sections, by=by, git_sha=git_sha())


def resolve_settings() -> Settings:
    """Where this flow run works: the settings of its process (the CLI, or a deployment's
    worker, set their environment), resolved once at the flow's start and handed to every
    task; the state dir is created if it is new."""
    settings = Settings.resolve()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings
