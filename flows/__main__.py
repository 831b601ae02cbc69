"""Run a flow as plain Python: ``python -m flows [--config FILE] [--set KEY=VALUE] FLOW``.

Without ``PREFECT_API_URL`` Prefect starts its temporary server for the run (about 20 s).
Prefect's home (database, results, profiles) defaults to ``$RANKFLOW_HOME/prefect``, and
analytics are off; both are set before Prefect is imported, because Prefect reads its settings
at import. With ``PREFECT_API_URL`` pointing at a server, the run is recorded there instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FLOWS = ("build-features", "train", "pipeline")


def _prefect_environment() -> None:
    from rankflow.paths import StatePaths

    os.environ.setdefault("PREFECT_HOME", str(StatePaths.default().prefect))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(raw)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML config (default configs/rankflow.yaml)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set simulation.n_impressions=200000",
    )
    parser.add_argument("flow", choices=FLOWS, help="which flow to run")
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="build-features / pipeline: rebuild the warehouse's incremental models",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from pydantic import ValidationError

    from flows.params import ConfigParams

    try:
        params = ConfigParams(
            # on the command line a relative --config is relative to the current directory
            config_path=str(args.config.resolve()) if args.config else None,
            overrides=_overrides(args.set),
        )
    except ValidationError as error:
        # the config was read and rejected before Prefect started: say which key is wrong
        messages = "\n".join(
            str(e["ctx"]["error"]) if "ctx" in e else e["msg"] for e in error.errors()
        )
        print(f"error: {messages}", file=sys.stderr)
        return 2

    _prefect_environment()  # before Prefect is imported: it reads its settings at import
    from flows.build_features import build_features
    from flows.pipeline import pipeline
    from flows.records import render
    from flows.train import train

    try:
        if args.flow == "build-features":
            summary = build_features(config=params, full_refresh=args.full_refresh)
        elif args.flow == "train":
            summary = train(config=params)
        else:
            summary = pipeline(config=params, full_refresh=args.full_refresh)
    except _user_errors() as error:
        # bad input or a failed check: Prefect logged the traceback; the message names the cause
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(render(summary))
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from rankflow.config import ConfigError
    from rankflow.data.contract import ContractError
    from rankflow.features.store import FeatureStoreError
    from rankflow.features.training_set import TrainingSetError
    from rankflow.warehouse.build import WarehouseError

    return (ConfigError, ContractError, WarehouseError, FeatureStoreError, TrainingSetError)


if __name__ == "__main__":
    sys.exit(main())
