"""What a command of the CLI runs with: its config (the file, ``--set``, and the values the state
was built with: rankflow/built_with.py) and its settings; and the parser that reads its line.

Beside :mod:`rankflow.cli`, which holds the commands; imports are local, as there, so
``rankflow --help`` loads nothing heavy.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig

# Commands that build the state's data take --rebuild (rankflow/built_with.py).
REBUILD_HELP = (
    "rebuild the state's data with this command's simulation / warehouse values even where they "
    "differ from those it was built with (without it such a command refuses)"
)


class SuggestingParser(argparse.ArgumentParser):
    """argparse's parser, with a did-you-mean for a mistyped command or choice (``rankflow
    setings`` -> ``invalid choice: 'setings'; did you mean 'settings'?``), as Python 3.14's
    ``suggest_on_error``. Sub-parsers are built by the parser's own class: every command's
    choices suggest too."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        from models.yaml_config import did_you_mean

        choices = action.choices
        if choices is None or value in choices:
            return
        close = did_you_mean(str(value), [str(choice) for choice in choices])
        hint = (
            f"did you mean {close!r}?" if close else f"choose from {', '.join(map(str, choices))}"
        )
        raise argparse.ArgumentError(action, f"invalid choice: {value!r}; {hint}")


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a dict of dotted keys to YAML-parsed values."""
    from models.yaml_config import parse_overrides as parse
    from rankflow.errors import ConfigError

    return parse(list(items or ()), ConfigError)


def command_overrides(
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The command's overrides, held to what the state was built with (rankflow/built_with.py):
    the state's values where the command asks for none; one line if it asks to change one
    (unless ``--rebuild``). ``extra``: the command's own values (dotted key -> value, None
    ignored; ``--set`` wins), ``flags`` the options that gave them (key -> ``--impressions``).
    A bad value is refused first, naming where it came from."""
    from rankflow.built_with import settled_overrides
    from rankflow.config import load_config

    overrides = {k: v for k, v in (extra or {}).items() if v is not None}
    overrides.update(parse_overrides(args.set))
    load_config(args.config, overrides, command_origins(args, overrides, extra, flags))
    if getattr(args, "rebuild", False):
        return overrides
    return settled_overrides(command_settings(args).paths, args.config, overrides)


def command_origins(
    args: argparse.Namespace,
    overrides: dict[str, Any],
    extra: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> dict[str, str]:
    """Where each override came from, for the errors that name it: ``--set KEY``, the
    command's option (``flags``) or its own value (``extra``), else the state's record."""
    asked = parse_overrides(args.set)
    record = command_settings(args).paths.built_with
    origins: dict[str, str] = {}
    for key in overrides:
        if key in asked:
            origins[key] = f"--set {key}"
        elif key in (extra or {}):
            origins[key] = (flags or {}).get(key, f"`rankflow {args.command}`")
        else:
            origins[key] = f"{record} (the values the state was built with)"
    return origins


def command_config(
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> RankflowConfig:
    """The config the command runs with (:func:`command_overrides` applied to the file)."""
    return config_of(args, command_overrides(args, extra, flags), extra, flags)


def record_build(args: argparse.Namespace, overrides: dict[str, Any], *sections: str) -> None:
    from rankflow.built_with import build_request
    from rankflow.built_with import record_build as record
    from rankflow.tracking.lineage import git_sha

    request = build_request(args.config, overrides)
    record(command_settings(args).paths, request, sections, by=args.command, git_sha=git_sha())


def command_settings(args: argparse.Namespace):
    from rankflow.settings import Settings

    return Settings.resolve(home=args.home)


def flow_config(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    # on the command line a relative --config is relative to the current directory
    path = str(Path(args.config).resolve()) if args.config else None
    return {"config_path": path, "overrides": overrides}


def config_of(
    args: argparse.Namespace,
    overrides: dict[str, Any],
    extra: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> RankflowConfig:
    """The config file with the command's settled ``overrides``, errors naming their origin."""
    from rankflow.config import load_config

    return load_config(args.config, overrides, command_origins(args, overrides, extra, flags))


def what_commands_run_with(args: argparse.Namespace) -> dict[str, Any]:
    """``rankflow settings``: the environment (where each value came from) and the pipeline
    config (the file, ``--set`` and the state's build record; each override with its origin).
    A bad environment value or an unknown key raises, as for any other command."""
    from rankflow.config import DEFAULT_CONFIG_PATH
    from rankflow.settings import setting_sources

    settings = command_settings(args)
    overrides = command_overrides(args)
    config = config_of(args, overrides)
    origins = command_origins(args, overrides)
    sources = setting_sources({"home": args.home})
    if sources["home"] == "argument":
        sources["home"] = "--home"
    return {
        "environment": settings.describe(),
        "environment_from": sources,
        "config_file": str(Path(args.config).resolve() if args.config else DEFAULT_CONFIG_PATH),
        "overrides": {k: {"value": v, "from": origins[k]} for k, v in overrides.items()},
        "config": json.loads(config.model_dump_json()),
    }
