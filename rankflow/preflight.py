"""Checks that run before any stage: both configs load and validate, or nothing starts.

The pipeline config is validated by ``rankflow.config.load_config``; the model config
(``model_config_path``) is otherwise read only when training starts, after dbt and Feast have
run. ``check_model_config`` reads it up front and turns its error into a one-line
``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankflow.errors import ConfigError

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig


def check_model_config(config: RankflowConfig) -> None:
    """Load and validate the model config ``config`` points at; raise ``ConfigError`` if bad."""
    from models.config import ModelConfigError, load_model_config

    path = config.resolved_model_config_path()
    try:
        load_model_config(path)
    except ModelConfigError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ConfigError("; ".join(lines) or f"{path}: invalid model config") from None
    except OSError as error:
        raise ConfigError(f"{path}: model config cannot be read ({error.strerror})") from None
