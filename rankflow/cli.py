"""The ``rankflow`` command line: the one entry point for every stage and flow.

``rankflow run`` is the main job (the Prefect ``pipeline`` flow); ``train`` and
``build-features`` run the other flows; the rest run one stage in-process. Flows are started by
their ``prefect.yaml`` entrypoints, as a Prefect worker would start them, so the library never
imports the orchestration layer; this module is the composition root. Imports are local to each
command so ``rankflow --help`` answers without loading dbt, Feast or torch.

Every :class:`~rankflow.errors.RankflowError` (bad config, bad input, a failed check) prints as
one line naming the file, key or check, and exits with the error's code (2 for configuration).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rankflow.cli_inputs import REBUILD_HELP, SuggestingParser, parse_overrides
from rankflow.cli_inputs import command_config as _config
from rankflow.cli_inputs import command_overrides as _overrides
from rankflow.cli_inputs import command_settings as _settings
from rankflow.cli_inputs import config_of as _config_of
from rankflow.cli_inputs import flow_config as _flow_config
from rankflow.cli_inputs import record_build as _record_build
from rankflow.cli_inputs import what_commands_run_with as _what_commands_run_with
from rankflow.console import add_verbose_option, set_verbose
from rankflow.errors import RankflowError

__all__ = ["FLOW_ENTRYPOINTS", "build_parser", "main", "parse_overrides"]

# The flows' entrypoints: the same dotted paths as the deployments in prefect.yaml (a test
# keeps the two in step).
FLOW_ENTRYPOINTS: dict[str, str] = {
    "build-features": "flows.build_features.build_features",
    "train": "flows.train.train",
    "pipeline": "flows.pipeline.pipeline",
    "gap-check": "flows.gap_check.gap_check",
    "canary": "flows.canary.canary",
}


def _run_flow(args: argparse.Namespace, name: str, **parameters: Any) -> int:
    """Validate the config here (a one-line error before Prefect starts), then run the flow."""
    from rankflow.preflight import check_model_config
    from rankflow.settings import configure_process
    from rankflow.temp_server import guard_temporary_server

    overrides = _overrides(args)  # the state's values, or one line before Prefect starts
    check_model_config(_config_of(args, overrides))  # both configs, before any stage
    settings = _settings(args)
    configure_process(settings)  # before Prefect is imported: it reads its settings at import
    for note in guard_temporary_server():  # no temporary server outlives a killed run
        print(f"note: {note}", file=sys.stderr)
    from prefect.utilities.importtools import import_object

    flow = import_object(FLOW_ENTRYPOINTS[name])
    summary = flow(config=_flow_config(args, overrides), **parameters)
    print(summary.render())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run_flow(args, "pipeline", full_refresh=args.full_refresh, rebuild=args.rebuild)


def cmd_build_features(args: argparse.Namespace) -> int:
    return _run_flow(args, "build-features", full_refresh=args.full_refresh, rebuild=args.rebuild)


def cmd_train(args: argparse.Namespace) -> int:
    return _run_flow(args, "train")


def cmd_simulate(args: argparse.Namespace) -> int:
    from rankflow.sim.simulate import simulate

    options = {
        "simulation.seed": "seed",
        "simulation.n_impressions": "impressions",
        "simulation.n_users": "users",
        "simulation.n_items": "items",
        "simulation.days": "days",
        "simulation.end_date": "end_date",
        "simulation.drift_day": "drift_day",
    }
    flags = {key: f"--{dest.replace('_', '-')}" for key, dest in options.items()}
    extra = {key: getattr(args, dest) for key, dest in options.items()}
    overrides = _overrides(args, extra, flags)
    config = _config_of(args, overrides, extra, flags)
    paths = _settings(args).paths
    print(simulate(config.simulation, config.resolved_raw_dir(paths), paths.truth))
    _record_build(args, overrides, "simulation")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from rankflow.data.contract import validate_raw

    config = _config(args)
    print(validate_raw(config.resolved_raw_dir(_settings(args).paths)))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from rankflow.warehouse.build import build_warehouse

    overrides = _overrides(args)
    config = _config_of(args, overrides)
    paths = _settings(args).paths
    raw_dir = config.resolved_raw_dir(paths)
    # build_warehouse checks the contract first, on the files it loads
    result = build_warehouse(
        paths,
        full_refresh=args.full_refresh,
        vars=config.warehouse.model_dump(),
        raw_dir=raw_dir,
    )
    print(result)
    _record_build(args, overrides, "warehouse")
    return 0


def cmd_dbt_docs(args: argparse.Namespace) -> int:
    from rankflow.warehouse.docs import generate_docs

    print(generate_docs(_settings(args).paths))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from rankflow.features.store import refresh_online_store
    from rankflow.features.summaries import applied_line, materialized_line

    applied, materialized = refresh_online_store(_settings(args))
    print(applied_line(applied))
    print(materialized_line(materialized))
    return 0


def cmd_training_set(args: argparse.Namespace) -> int:
    from rankflow.features.training_set import build_training_set

    config = _config(args)
    training_set = build_training_set(
        _settings(args), config.training_set, feature_service=config.feature_service
    )
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


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    from rankflow.tracking.server import serve_ui

    return serve_ui(_settings(args), _config(args).tracking, port=args.port, host=args.host)


def cmd_settings(args: argparse.Namespace) -> int:
    print(json.dumps(_what_commands_run_with(args), indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rankflow.serving.app import serve

    serve(_settings(args), _config(args).scoring(), host=args.host, port=args.port)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from datetime import date

    from rankflow.sim.replay import run_replay

    settings, config = _settings(args), _config(args)
    result = run_replay(
        settings,
        config.scoring(),
        mode=args.mode,
        raw_dir=None if config.source == "simulate" else config.resolved_raw_dir(settings.paths),
        url=settings.service_url if args.http else None,
        day=date.fromisoformat(args.day) if args.day else None,
        impressions=args.impressions,
        max_requests=args.max_requests,
        top_k=args.top_k,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    print(result.summary())
    return 0


def cmd_gap_check(args: argparse.Namespace) -> int:
    """In process by default; ``--flow`` runs the ``gap-check`` Prefect flow (as the daily
    deployment does) and prints the verdict it returns."""
    if args.flow:
        from rankflow.settings import configure_process

        config = _flow_config(args, _overrides(args))  # one line if it asks for another state
        configure_process(_settings(args))  # before Prefect is imported
        from prefect.utilities.importtools import import_object

        flow = import_object(FLOW_ENTRYPOINTS["gap-check"])
        result = flow(config=config, log_to_mlflow=not args.no_mlflow)
        print(result["verdict"].upper(), json.dumps(result["checks"]))
        for note in result.get("notes", []):
            print(f"  served log  {note}")
        verdict = result["verdict"]
    else:
        from rankflow.monitoring.report import run_gap_check

        config = _config(args)
        outcome = run_gap_check(
            _settings(args),
            config.monitoring,
            config.scoring(),
            log_to_mlflow=not args.no_mlflow,
        )
        print(outcome.summary())
        verdict = outcome.verdict
    return {"pass": 0, "warn": 0, "fail": 3}[verdict]


def cmd_canary(args: argparse.Namespace) -> int:
    """The Prefect ``canary`` flow; ``--no-flow`` runs the canary itself in this process (on the
    current features, no Prefect), as ``gap-check`` does by default."""
    from rankflow.canary.live import check_phase_config

    config = _config(args)
    # before any stage
    check_phase_config(config.canary, config.source, config.serving.canary_share)
    if not args.no_flow:
        return _run_flow(
            args,
            "canary",
            refresh_features=not args.no_refresh,
            look_only=args.look_only,
            rebuild=args.rebuild,
        )
    from rankflow.canary.run import run_canary
    from rankflow.preflight import check_model_config
    from rankflow.sim.canary import canary_simulation

    check_model_config(config)
    outcome = run_canary(
        _settings(args),
        config.canary_run(),
        look_only=args.look_only,
        simulation=canary_simulation(),
    )
    print(outcome.summary())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from rankflow.canary.rollback import rollback

    config = _config(args)
    serving = config.registry.serving_model
    applied = rollback(_settings(args), config.tracking, serving, args.reason)
    print(applied.describe(serving))
    shown = ", ".join(f"@{a} -> v{v}" for a, v in sorted(applied.aliases.items()))
    print(f"aliases: {shown}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rankflow.sim.scenario import run_scenario

    # The demo shows what the warm start buys (one more training per canary); production
    # canaries leave it off. A --set still wins.
    report = run_scenario(
        _settings(args),
        _config(args, {"canary.measure_warm_start": True}),
        drift_days=args.drift_days,
        traffic_impressions=args.impressions,
    )
    print("\n" + report.summary())
    return 0


def _canary_commands(sub: argparse._SubParsersAction) -> None:
    canary = _add(
        sub,
        "canary",
        cmd_canary,
        "the Prefect `canary` flow: warm-started challenger "
        "-> offline gate -> canary phase -> promote / reject",
        rebuild=True,
    )
    canary.add_argument("--no-refresh", action="store_true", help="skip the build-features subflow")
    canary.add_argument(
        "--no-flow",
        action="store_true",
        help="run the canary in this process on the current features (no Prefect, no refresh)",
    )
    canary.add_argument(
        "--look-only",
        action="store_true",
        help="only look at an open live phase (canary.phase: live); never start a new canary",
    )
    back = _add(sub, "rollback", cmd_rollback, "make @previous the champion again")
    back.add_argument("--reason", required=True, help="why (recorded on both versions)")
    demo = _add(
        sub,
        "demo",
        cmd_demo,
        "the drift scenario: drift -> gap check -> canary "
        "promotion -> three failure cases -> rollback (after `rankflow run`)",
    )
    demo.add_argument(
        "--drift-days", type=int, help="days re-drawn with drift (default: canary.window_days)"
    )
    demo.add_argument("--impressions", type=int, help="impressions per closed-loop measurement")


def _online_commands(sub: argparse._SubParsersAction) -> None:
    serve = _add(
        sub, "serve", cmd_serve, "the scoring service (POST /score, /healthz, /readyz, /metrics)"
    )
    serve.add_argument("--host", help="bind address (default: from RANKFLOW_SERVICE_URL, loopback)")
    serve.add_argument("--port", type=int, help="port (default: from RANKFLOW_SERVICE_URL, 8080)")
    replay = _add(
        sub,
        "replay",
        cmd_replay,
        "send a day of traffic with a known truth through the scoring service",
    )
    replay.add_argument(
        "--mode",
        choices=("log", "closed"),
        default="log",
        help="log: requests as they happened, labels joined after; closed: the service ranks, "
        "clicks drawn from the truth for what was shown",
    )
    replay.add_argument("--day", help="YYYY-MM-DD (default: the day after the data ends)")
    replay.add_argument("--impressions", type=int, help="impressions to simulate for the day")
    replay.add_argument("--max-requests", type=int, help="stop after this many requests")
    replay.add_argument("--top-k", type=int, help="closed loop: items shown per request")
    replay.add_argument("--seed", type=int, default=0, help="closed loop: seed of the clicks")
    replay.add_argument(
        "--http",
        action="store_true",
        help="send to the running service at RANKFLOW_SERVICE_URL instead of in process",
    )
    gap = _add(
        sub,
        "gap-check",
        cmd_gap_check,
        "offline/online gap checks over the served log: "
        "verdict, report logged to MLflow (exit 3 on fail)",
    )
    gap.add_argument("--no-mlflow", action="store_true", help="print only, log no MLflow run")
    gap.add_argument("--flow", action="store_true", help="run it as the Prefect gap-check flow")


def _add(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_text: str,
    *,
    full_refresh: bool = False,
    rebuild: bool = False,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    if full_refresh:
        parser.add_argument(
            "--full-refresh", action="store_true", help="rebuild incremental models from scratch"
        )
    if rebuild:
        parser.add_argument("--rebuild", action="store_true", help=REBUILD_HELP)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(prog="rankflow", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML config (default configs/rankflow.yaml)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set simulation.n_impressions=200000",
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="state directory (default $RANKFLOW_HOME or .state)"
    )
    add_verbose_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _flow_commands(sub)
    _stage_commands(sub)
    ui = _add(sub, "mlflow-ui", cmd_mlflow_ui, "serve the MLflow UI over the state dir's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    _add(
        sub,
        "settings",
        cmd_settings,
        "print what commands run with: the environment (secrets masked) and the pipeline "
        "config resolved from the file, --set and the state's build record",
    )
    _online_commands(sub)
    _canary_commands(sub)
    from rankflow.sim.soak_main import add_soak_command

    add_soak_command(sub)
    return parser


def _flow_commands(sub: argparse._SubParsersAction) -> None:
    """The Prefect flows: the main job and its two halves."""
    _add(
        sub,
        "run",
        cmd_run,
        "the main job, the Prefect `pipeline` flow: simulate -> dbt -> "
        "Feast -> training set -> Wide & Deep + DCN -> MLflow registry",
        full_refresh=True,
        rebuild=True,
    )
    _add(
        sub,
        "build-features",
        cmd_build_features,
        "the Prefect `build-features` flow: simulate -> contract -> dbt -> Feast",
        full_refresh=True,
        rebuild=True,
    )
    _add(
        sub,
        "train",
        cmd_train,
        "the Prefect `train` flow: training set -> Wide & Deep + DCN -> MLflow registry",
    )


def _stage_commands(sub: argparse._SubParsersAction) -> None:
    """One stage of the pipeline each, outside Prefect."""
    sim = _add(
        sub,
        "simulate",
        cmd_simulate,
        "write simulated raw data and its ground truth (flags override simulation.*)",
        rebuild=True,
    )
    sim.add_argument("--seed", type=int)
    sim.add_argument("--impressions", type=int, help="total impressions over all days")
    sim.add_argument("--users", type=int)
    sim.add_argument("--items", type=int)
    sim.add_argument("--days", type=int)
    sim.add_argument("--end-date", help="exclusive UTC end day, YYYY-MM-DD (default: today)")
    sim.add_argument("--drift-day", type=int, help="0-based day from which the truth drifts")
    _add(sub, "validate", cmd_validate, "check the raw data against docs/data-contract.md")
    _add(
        sub,
        "build",
        cmd_build,
        "contract check, then dbt build of the warehouse and the Feast exports",
        full_refresh=True,
        rebuild=True,
    )
    _add(sub, "dbt-docs", cmd_dbt_docs, "dbt docs generate")
    _add(sub, "features", cmd_features, "feast apply + materialize-incremental")
    ts = _add(
        sub,
        "training-set",
        cmd_training_set,
        "point-in-time training set through the feature service",
    )
    ts.add_argument("--out", help="write train/valid/test parquet files into this folder")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    try:
        return args.func(args)
    except RankflowError as error:
        # Bad config, bad input or a failed check: the message names the file / key / check,
        # so a traceback would only bury it.
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except FileExistsError as error:  # the simulator refusing to replace data it did not write
        print(f"error: {error}", file=sys.stderr)
        return 1
