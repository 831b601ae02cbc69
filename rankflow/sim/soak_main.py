"""``rankflow soak`` (``make soak``): the soak of the daily schedule (rankflow/sim/soak.py) on a
state of its own.

``--home`` is the soak's folder (``make soak``: ``.state/soak``). Its ``base/`` is built once on
the soak's simulation (``SOAK_DEFAULTS``; ``--set`` wins): the features, then a Wide & Deep
champion, as the first ``rankflow run`` names one. It is kept, and each soak runs on a fresh
copy of it, ``soaks/<time>/``, because a soak moves the data's window, switches drift on and
changes the registry. Exit code 1 if any invariant fails.

Imports are local: the CLI builds this command's parser for every ``rankflow --help``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.errors import RankflowError

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig

# The soak's world: a month of data at a tenth of the default density, with a truth where
# who-likes-which-category matters (as the canary's end-to-end test has it), so that the drift
# hurts a stale model; a canary sized to decide within a day's budget.
SOAK_DEFAULTS: dict[str, Any] = {
    "simulation.n_users": 2000,
    "simulation.n_items": 300,
    "simulation.n_impressions": 300_000,
    "simulation.days": 30,
    "simulation.end_date": "2026-03-01",
    "simulation.seed": 7,
    "simulation.segment_category_strength": 2.0,
    "simulation.latent_strength": 1.5,
    "simulation.user_activity_sigma": 0.3,
    "simulation.user_bias_std": 0.1,
    "serving.log.flush_seconds": 0.5,
    "serving.alias_poll_seconds": 1.0,
    "canary.window_days": 8,
    "canary.traffic_impressions": 60_000,
    "canary.top_k": 2,
    "canary.measure_warm_start": False,
}


class SoakStateError(RankflowError):
    """The soak's starting state could not be built."""


def add_soak_command(sub: argparse._SubParsersAction) -> None:
    soak = sub.add_parser(
        "soak",
        help="N simulated days of the daily schedule through `rankflow serve`, with faults; "
        "one row per day, invariants PASS / FAIL (exit 1 on a FAIL)",
    )
    soak.add_argument("--days", type=int, default=14, help="soak days (default 14)")
    soak.add_argument(
        "--drift-from", type=int, default=10, help="first soak day of drifted traffic (0: none)"
    )
    soak.add_argument("--canary-every", type=int, default=7, help="weekly canary: every N days")
    soak.add_argument(
        "--fault",
        action="append",
        metavar="DAY=KIND",
        help="a scheduled fault (kill, remove_logs, registry); default 3=kill 5=remove_logs "
        "8=registry; --fault none: no fault",
    )
    soak.add_argument("--impressions", type=int, help="impressions per day (default: the day's)")
    soak.add_argument("--seed", type=int, default=0, help="seed of the traffic's extras")
    soak.set_defaults(func=cmd_soak)


def _faults(items: list[str] | None) -> dict[int, str] | None:
    if not items:
        return None
    if items == ["none"]:
        return {}
    faults = {}
    for item in items:
        day, _, kind = item.partition("=")
        faults[int(day)] = kind
    return faults


def cmd_soak(args: argparse.Namespace) -> int:
    from models.yaml_config import parse_overrides
    from rankflow.built_with import settled_overrides
    from rankflow.config import load_config
    from rankflow.errors import ConfigError
    from rankflow.settings import Settings
    from rankflow.sim.soak import SoakPlan, run_soak

    home = Settings.resolve(home=args.home).home
    overrides = {**SOAK_DEFAULTS, **parse_overrides(list(args.set or ()), ConfigError)}
    base = build_base(home / "base", load_config(args.config, overrides))
    run = copy_state(base, home / "soaks" / f"{datetime.now(UTC):%Y%m%dT%H%M%S}")
    settings = Settings.resolve(home=run)
    config = load_config(args.config, settled_overrides(settings.paths, args.config, overrides))
    faults = _faults(args.fault)
    plan = SoakPlan(
        days=args.days,
        drift_from=args.drift_from or None,
        canary_every=args.canary_every,
        impressions=args.impressions,
        seed=args.seed,
        **({"faults": faults} if faults is not None else {}),
    )
    print(f"soak of {plan.days} days on {run}", flush=True)
    return 0 if run_soak(settings, config, plan).passed else 1


def build_base(base: Path, config: RankflowConfig, families: tuple[str, ...] = ("wide_deep",)):
    """The soak's starting state in ``base``, unless it is there: simulate, build the features
    (rankflow/sim/daily.py), train ``families`` and name the first champion. Kept between
    soaks, which run on copies."""
    from rankflow.settings import Settings
    from rankflow.sim.daily import build_simulated
    from rankflow.training.step import train_and_register

    done = base / "soak-base.json"
    if done.is_file():
        return base
    print(f"building the soak's starting state in {base}", flush=True)
    settings = Settings.resolve(home=base)
    build_simulated(settings, config, by="soak")
    outcome = train_and_register(config.train_step(), settings, families=families)
    if outcome.champion_version is None:
        raise SoakStateError(f"{base}: no first champion ({outcome.decision})")
    done.write_text(json.dumps({"champion": str(outcome.champion_version)}))
    return base


def copy_state(source: Path, target: Path) -> Path:
    """A copy of the state ``source`` (no logs or reports) with the feature repo re-applied:
    Feast's registry keeps the absolute paths of the exports it was applied for."""
    from rankflow.features.store import apply_feature_repo
    from rankflow.settings import Settings

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("logs", "reports", "soak"))
    apply_feature_repo(Settings(home=target))
    return target
