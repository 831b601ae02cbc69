"""False alarms of the gap check's drift test on drift-free simulated days.

    .state/venv/bin/python bench/bench_drift_false_alarms.py --days 20
    RANKFLOW_HOME=.state/bench/drift-s11 .state/venv/bin/python \
        bench/bench_drift_false_alarms.py --days 30 --drift-from 20 --seed 11   # + the demo's drift

Figures and the other runs: docs/benchmarks.md ("Drift false alarms").

A drift-free simulation (``simulation.drift_day: null``) long enough that every compared day's
28-day counters are mature: 28 days, then the reference days, the champion's staleness and the
served days. It is built once (simulate -> dbt -> ``feast apply``) in ``$RANKFLOW_HOME``
(default ``.state/bench/drift``) and reused while the settings match. Then, for each of the last
``--days`` days, what the daily gap check does with that day's traffic:

- the served rows: ``--served-rows`` impressions of the day, looked up as the service served
  them (the store as materialized at the day's start: ``rankflow.monitoring.drift.as_served``).
  The simulator's traffic of a day is what its log replay sends (``Oracle.day_traffic``
  reproduces it), and the values are the online store's (the feature-skew check holds the
  service to them), so the service itself is not run;
- the reference: ``monitoring.drift_reference_days`` days, sampled and looked up as the gap
  check does (``reference_entities``), ending one to ``--retrain-every`` days before the served
  day. By default (``monitoring.drift_reference: days_before_served``) it ends the day before:
  ``--retrain-every 1``. With ``--set monitoring.drift_reference=training_window`` it is the
  end of a champion's window retrained every ``--retrain-every`` days (default 7, the weekly
  canary), so it ends one to seven days before the served day;
- ``rankflow.monitoring.drift.drift`` with the configured thresholds: the verdict.

``--first-served 30 --retrain-every 1`` (with ``--sim-days`` of a state already built, so it is
reused) measures days whose reference is not mature instead:
served day 30 compared with data days 23..29, as a champion trained on the default 30 days of
data has them (the ``maturity`` column: the share of 28 days of history before the reference).

Baselines in the same run: ``--reference whole``, the naive reference (the whole window from
the data's first day, looked up at each row's own time); ``--held-out row``, the classifier
held out by row, not by user and item. Everything else as the check does it.

``--drift-from K`` switches the simulator's concept drift on from the K-th served day (0-based),
at the demo's strength (every user, drifted parts fully redrawn): the days before it measure
false alarms, the days from it the delay to detect. Features are computed from the days before
theirs, so no feature can move on the drift's first day; the metric gap, on that day's labels,
is the check that can.

It prints one row per day, the FAIL and WARN rates with a 95% upper bound on the FAIL rate, and
the largest value of each statistic over the days (per feature for PSI and KS): the spread of
drift-free days that the configured thresholds are calibrated from. ``--served-rows`` below the
whole day (33k rows at the default density) makes the served sample noisier than the check's,
so the rate measured is, if anything, too high.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

# Pinned so that the state and the figures mean the same data on any day.
END_DATE = date(2026, 12, 1)
MATURITY_DAYS = 28  # the longest feature window (28-day counters)
PER_DAY = 33_334  # impressions a day at the default density (1M over 30 days)


@dataclass(frozen=True)
class DayPlan:
    served: date
    reference: tuple[date, date]
    maturity: float  # share of 28 days of history before the reference's first day (<= 1)


def plan_days(
    first: date, first_served: date, days: int, reference_days: int, retrain_every: int
) -> list[DayPlan]:
    """``days`` days from ``first_served``, each with the reference window of a champion
    retrained every ``retrain_every`` days (its window ends 1..retrain_every days before).
    ``first`` is the data's first day: a reference that starts less than 28 days after it has
    truncated 28-day counters (maturity below 1), as in a deployment with a short history."""
    plans = []
    for i in range(days):
        served = first_served + timedelta(days=i)
        end = served - timedelta(days=1 + i % retrain_every)
        start = end - timedelta(days=reference_days - 1)
        if start < first:
            raise SystemExit(f"{served}: reference {start}..{end} starts before the data")
        maturity = min(1.0, (start - first).days / MATURITY_DAYS)
        plans.append(DayPlan(served, (start, end), maturity))
    return plans


def build_state(settings: Any, config: Any, force: bool) -> None:
    """Simulate, build the warehouse and apply Feast, unless the state has these settings."""
    from rankflow.features.store import apply_feature_repo
    from rankflow.sim.simulate import simulate
    from rankflow.warehouse.build import build_warehouse

    paths = settings.paths
    marker = paths.root / "bench-drift.json"
    wanted = {"simulation": config.simulation.model_dump(mode="json")}
    if not force and marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    started = time.perf_counter()
    raw = config.resolved_raw_dir(paths)
    simulate(config.simulation, raw, paths.truth)
    build_warehouse(paths, full_refresh=True, vars=config.warehouse.model_dump(), raw_dir=raw)
    apply_feature_repo(settings)
    marker.write_text(json.dumps(wanted))
    print(f"built {paths.root} in {time.perf_counter() - started:.0f} s", flush=True)


def entity_rows(
    impressions: pd.DataFrame, plans: list[DayPlan], args: Any, cfg: Any, first: date
) -> pd.DataFrame:
    """Every served sample and every distinct reference sample, tagged, for one retrieval.
    ``--reference whole``: the whole window from the data's first day, at each row's own time
    (what the check compared before), for a baseline in the same run."""
    from rankflow.monitoring.drift import reference_entities

    parts, seen = [], set()
    for plan in plans:
        day = (plan.served, plan.served)
        served = reference_entities(impressions, day, args.served_rows, cfg.seed + 1)
        parts.append(served.assign(__set=f"served {plan.served}"))
        if plan.reference in seen:
            continue
        seen.add(plan.reference)
        if args.reference == "whole":
            reference = _at_event_time(impressions, (first, plan.reference[1]), cfg)
        else:
            reference = reference_entities(impressions, plan.reference, cfg.drift_rows, cfg.seed)
        parts.append(reference.assign(__set=f"reference {plan.reference}"))
    return pd.concat(parts, ignore_index=True)


def _at_event_time(impressions: pd.DataFrame, window: tuple[date, date], cfg: Any) -> pd.DataFrame:
    day = impressions["event_timestamp"].dt.date
    chosen = impressions[(day >= window[0]) & (day <= window[1])]
    sample = chosen.sample(min(cfg.drift_rows, len(chosen)), random_state=cfg.seed)
    return sample.drop(columns=["label", "event_id"]).reset_index(drop=True)


def retrieve(settings: Any, service: str, entity: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of ``entity`` through the feature service, typed as served."""
    from rankflow.features.store import coerce_features, feature_service_schema, open_store

    with open_store(settings, offline=True) as store:
        schema = feature_service_schema(store, service)
        frame = store.get_historical_features(
            entity_df=entity, features=store.get_feature_service(service), full_feature_names=False
        ).to_df()
    return coerce_features(frame, schema)


def judge_day(
    frames: dict[str, pd.DataFrame], plan: DayPlan, features: list[str], cfg: Any, by_row: bool
):
    """The drift check of one day; ``by_row`` hides the entity keys, so its classifier holds
    rows out at random (what it did before)."""
    from rankflow.monitoring.drift import ENTITY_KEYS, drift

    start, end = plan.reference
    reference, served = frames[f"reference {plan.reference}"], frames[f"served {plan.served}"]
    if by_row:
        reference, served = (f.drop(columns=list(ENTITY_KEYS)) for f in (reference, served))
    return drift(reference, served, features, cfg, f"{start}..{end} (as served)")


def day_row(plan: DayPlan, result: Any) -> dict[str, Any]:
    features = result.details["features"]
    top = max(features, key=lambda n: features[n]["psi"])
    adversarial = result.details["adversarial"]
    return {
        "served": str(plan.served),
        "weekday": plan.served.strftime("%a"),
        "reference": f"{plan.reference[0]}..{plan.reference[1]}",
        "maturity": plan.maturity,
        "verdict": result.verdict,
        "max_psi": features[top]["psi"],
        "max_psi_feature": top,
        "max_ks": max((f["ks"] for f in features.values() if f["ks"] == f["ks"]), default=0.0),
        "adversarial_auc": adversarial["auc"],
        "flagged": [n for n, f in features.items() if f["verdict"] != "pass"]
        + (["adversarial"] if adversarial["verdict"] != "pass" else []),
        "psi": {n: f["psi"] for n, f in features.items()},
        "ks": {n: f["ks"] for n, f in features.items()},
        "spread": {n: list(f["reference_spread"]) for n, f in features.items()},
    }


def upper_bound(failures: int, trials: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen ``failures`` times in ``trials``."""
    from scipy.stats import beta

    return 1.0 if failures >= trials else float(beta.ppf(level, failures + 1, trials - failures))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20, help="served days measured")
    parser.add_argument(
        "--retrain-every",
        type=int,
        help="champion refresh, days (default: 1 for the days-before-served reference, which "
        "ends the day before whatever the champion; 7 for the training window's)",
    )
    parser.add_argument("--served-rows", type=int, default=5000, help="served rows per day")
    parser.add_argument("--per-day", type=int, default=PER_DAY, help="simulated impressions/day")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed")
    parser.add_argument("--drift-from", type=int, help="served day (0-based) the drift starts")
    parser.add_argument(
        "--first-served", type=int, help="data day (0-based) of the first served day"
    )
    parser.add_argument("--sim-days", type=int, help="days simulated (default: just enough)")
    parser.add_argument(
        "--held-out",
        choices=["entity", "row"],
        default="entity",
        help="row: the classifier holds rows out at random (what it did before)",
    )
    parser.add_argument(
        "--reference",
        choices=["last-days", "whole"],
        default="last-days",
        help="whole: the previous reference (from the data's first day, at event time)",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the state")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--out", type=Path, help="write the rows and rates as JSON here")
    return parser.parse_args()


def load(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """The config (drift-free simulation pinned to END_DATE) and the state's settings."""
    from rankflow.config import load_config
    from rankflow.settings import Settings

    overrides = dict(item.split("=", 1) for item in args.set)
    monitoring = load_config(overrides=overrides).monitoring
    if args.retrain_every is None:
        args.retrain_every = 1 if monitoring.drift_reference == "days_before_served" else 7
    reference_days = monitoring.drift_reference_days
    total = args.sim_days or MATURITY_DAYS + reference_days + args.retrain_every - 1 + args.days
    overrides.update(
        {
            "simulation.days": total,
            "simulation.n_impressions": total * args.per_day,
            "simulation.end_date": END_DATE.isoformat(),
            "simulation.seed": args.seed,
            "simulation.drift_day": None,
        }
    )
    if args.drift_from is not None:  # the demo's drift (rankflow/sim/scenario.py)
        overrides["simulation.drift_day"] = total - args.days + args.drift_from
        overrides["simulation.drift_strength"] = 1.0
        overrides["simulation.drift_user_share"] = 1.0
    config = load_config(overrides=overrides)
    settings = Settings.resolve(file={"home": REPO / ".state" / "bench" / "drift"})
    settings.home.mkdir(parents=True, exist_ok=True)
    return config, settings, total


def main() -> None:
    from rankflow.features.training_set import load_entity_df

    args = parse_args()
    config, settings, total = load(args)
    cfg = config.monitoring
    build_state(settings, config, args.rebuild)
    first = END_DATE - timedelta(days=total)
    start = total - args.days if args.first_served is None else args.first_served
    plans = plan_days(
        first,
        first + timedelta(days=start),
        args.days,
        cfg.drift_reference_days,
        args.retrain_every,
    )
    started = time.perf_counter()
    impressions = load_entity_df(settings.paths)
    entity = entity_rows(impressions, plans, args, cfg, first)
    # Extra entity columns pass through the join; its output order is not the input's.
    features_frame = retrieve(settings, config.feature_service, entity)
    frames = {name: rows for name, rows in features_frame.groupby("__set")}
    retrieval = time.perf_counter() - started
    features = [f for f in _feature_names(settings, config) if f not in cfg.drift_exclude]
    by_row = args.held_out == "row"
    rows = [day_row(plan, judge_day(frames, plan, features, cfg, by_row)) for plan in plans]
    for i, row in enumerate(rows):
        row["drifted"] = args.drift_from is not None and i >= args.drift_from
    report(rows, retrieval, time.perf_counter() - started, args)


def _feature_names(settings: Any, config: Any) -> list[str]:
    from rankflow.features.store import feature_service_schema, open_store

    with open_store(settings, offline=True) as store:
        return list(feature_service_schema(store, config.feature_service))


def report(rows: list[dict[str, Any]], retrieval: float, seconds: float, args: Any) -> None:
    """The table, the rates, the spread of each statistic, and the JSON if asked."""
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    shown = table.drop(columns=["reference", "psi", "ks", "spread"])
    print(shown.to_string(index=False, float_format="{:.3f}".format))
    free = table[~table["drifted"]]
    fails = int((free["verdict"] == "fail").sum())
    warns = int((free["verdict"] == "warn").sum())
    n = len(free)
    print(
        f"FAIL {fails} of {n} drift-free days ({fails / n:.0%}; 95% upper bound "
        f"{upper_bound(fails, n):.0%}), WARN {warns}; retrieval {retrieval:.0f} s, "
        f"total {seconds:.0f} s"
    )
    drifted = table[table["drifted"]].reset_index(drop=True)
    if len(drifted):
        caught = drifted.index[drifted["verdict"] == "fail"]
        delay = f"on drifted day {caught[0] + 1}" if len(caught) else "never"
        print(f"drift: first FAIL {delay} of {len(drifted)}; FAIL on {len(caught)} of them")
    spread = pd.DataFrame(
        {
            "max_psi": pd.DataFrame(list(table["psi"])).max(),
            "max_ks": pd.DataFrame(list(table["ks"])).max(),
        }
    ).sort_values("max_psi", ascending=False)
    print("largest over the days (the spread the configured thresholds are calibrated from):")
    print(spread.head(10).to_string(float_format="{:.3f}".format))
    print(f"adversarial AUC on drift-free days: max {free['adversarial_auc'].max():.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"days": rows, "fails": fails, "warns": warns, "n": n}
        args.out.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
