"""The ``rankflow`` command line: each pipeline stage on its own, and ``run`` for the main job.

Imports are local to each command so ``rankflow --help`` answers without loading dbt, Feast
and torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None):
    from rankflow.config import load_config

    overrides: dict[str, Any] = {k: v for k, v in (extra or {}).items() if v is not None}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        import yaml

        overrides[key] = yaml.safe_load(raw)
    return load_config(args.config, overrides)


def _paths():
    from rankflow.paths import StatePaths

    return StatePaths.default()


def _run_flow(args: argparse.Namespace, flow: str) -> int:
    """Hand over to ``python -m flows``: the same flow, config and overrides, one code path."""
    from flows.__main__ import main as run_flow

    argv = ["--config", str(args.config)] if args.config else []
    for item in args.set or []:
        argv += ["--set", item]
    argv.append(flow)
    if getattr(args, "full_refresh", False):
        argv.append("--full-refresh")
    return run_flow(argv)


def cmd_run(args: argparse.Namespace) -> int:
    return _run_flow(args, "pipeline")


def cmd_train(args: argparse.Namespace) -> int:
    return _run_flow(args, "train")


def cmd_simulate(args: argparse.Namespace) -> int:
    from rankflow.data.simulate import simulate

    flags = {
        "simulation.seed": args.seed,
        "simulation.n_impressions": args.impressions,
        "simulation.n_users": args.users,
        "simulation.n_items": args.items,
        "simulation.days": args.days,
        "simulation.end_date": args.end_date,
        "simulation.drift_day": args.drift_day,
    }
    config = _config(args, flags)
    paths = _paths()
    summary = simulate(config.simulation, config.resolved_raw_dir(paths), paths.truth)
    print(summary)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from rankflow.data.contract import validate_raw

    config = _config(args)
    inventory = validate_raw(config.resolved_raw_dir(_paths()))
    print(inventory)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from rankflow.pipeline import build_warehouse_step

    result = build_warehouse_step(_config(args), _paths(), full_refresh=args.full_refresh)
    print(result)
    return 0


def cmd_dbt_docs(args: argparse.Namespace) -> int:
    from rankflow.warehouse.build import generate_docs

    print(generate_docs(_paths()))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from rankflow.pipeline import feature_store_step

    print(feature_store_step(_paths()))
    return 0


def cmd_training_set(args: argparse.Namespace) -> int:
    from rankflow.features.training_set import build_training_set

    config = _config(args)
    training_set = build_training_set(_paths(), config.training_set)
    print(json.dumps(training_set.describe(), indent=2, default=str))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid", "test"):
            getattr(training_set, name).to_parquet(out / f"{name}.parquet", index=False)
        # The feature service's types, so `python -m models train --schema` need not guess them
        # from parquet dtypes (an int feature with nulls reads back as float).
        (out / "schema.json").write_text(json.dumps(training_set.feature_types, indent=2))
        print(f"wrote {out}/{{train,valid,test}}.parquet and {out}/schema.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankflow", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML config (default configs/rankflow.yaml)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set simulation.n_impressions=200000",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="the main job, the Prefect `pipeline` flow: simulate -> dbt -> Feast -> training "
        "set -> Wide & Deep + DCN -> MLflow registry",
    )
    run.add_argument("--full-refresh", action="store_true", help="rebuild incremental models")
    run.set_defaults(func=cmd_run)
    sub.add_parser(
        "train",
        help="the Prefect `train` flow: training set -> Wide & Deep + DCN -> MLflow registry",
    ).set_defaults(func=cmd_train)
    sim = sub.add_parser(
        "simulate",
        help="write simulated raw data and its ground truth (flags override simulation.*)",
    )
    sim.add_argument("--seed", type=int)
    sim.add_argument("--impressions", type=int, help="total impressions over all days")
    sim.add_argument("--users", type=int)
    sim.add_argument("--items", type=int)
    sim.add_argument("--days", type=int)
    sim.add_argument("--end-date", help="exclusive UTC end day, YYYY-MM-DD (default: today)")
    sim.add_argument("--drift-day", type=int, help="0-based day from which the truth drifts")
    sim.set_defaults(func=cmd_simulate)
    sub.add_parser(
        "validate", help="check the raw data against docs/data-contract.md"
    ).set_defaults(func=cmd_validate)
    build = sub.add_parser("build", help="dbt build of the warehouse and the Feast exports")
    build.add_argument(
        "--full-refresh", action="store_true", help="rebuild incremental models from scratch"
    )
    build.set_defaults(func=cmd_build)
    sub.add_parser("dbt-docs", help="dbt docs generate").set_defaults(func=cmd_dbt_docs)
    sub.add_parser("features", help="feast apply + materialize-incremental").set_defaults(
        func=cmd_features
    )
    ts = sub.add_parser(
        "training-set", help="point-in-time training set through the feature service"
    )
    ts.add_argument("--out", help="write train/valid/test parquet files into this folder")
    ts.set_defaults(func=cmd_training_set)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as error:
        # Bad config, bad input or a failed gate: the message names the file / key / check,
        # so a traceback would only bury it.
        print(f"error: {error}", file=sys.stderr)
        return 2 if type(error).__name__ == "ConfigError" else 1


def _user_errors() -> tuple[type[BaseException], ...]:
    from rankflow.config import ConfigError
    from rankflow.data.contract import ContractError
    from rankflow.features.store import FeatureStoreError
    from rankflow.features.training_set import TrainingSetError
    from rankflow.warehouse.build import WarehouseError

    return (
        ConfigError,
        ContractError,
        WarehouseError,
        FeatureStoreError,
        TrainingSetError,
        FileExistsError,
    )
