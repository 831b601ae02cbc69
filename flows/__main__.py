"""``python -m flows [--config FILE] [--set KEY=VALUE] FLOW [--full-refresh]``: kept for old
habits; the ``rankflow`` command is the one entry (``pipeline`` is ``rankflow run``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rankflow.cli import main as rankflow_main

FLOW_COMMANDS = {"pipeline": "run", "train": "train", "build-features": "build-features"}


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
    from rankflow.temp_server import guard_temporary_server

    for note in guard_temporary_server():  # no temporary server outlives a killed run
        print(f"note: {note}", file=sys.stderr)
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
    from rankflow.errors import RankflowError
    from rankflow.features.store import FeatureStoreError
    from rankflow.features.training_set import TrainingSetError
    from rankflow.warehouse.build import WarehouseError

    return (
        RankflowError,
        ConfigError,
        ContractError,
        WarehouseError,
        FeatureStoreError,
        TrainingSetError,
    )


if __name__ == "__main__":
    sys.exit(main())
