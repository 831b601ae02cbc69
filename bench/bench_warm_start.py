"""Warm start against cold start after a concept drift, repeated over seeds.

    make bench-warm-start
    .state/venv/bin/python bench/bench_warm_start.py --seeds 5 --rows 100000 --drift 0.5 \
        --distill 0,0.3 --out .state/bench/warm_start.json

Per seed: a world of users and items (``tests/fixtures/synthetic.py``, seeded by the seed); a
champion trained (cold) on a window before the drift; then, on the next window, after a concept
drift of ``--drift`` (segment x category and device x hour effects and every user's taste
partly redrawn), ``rankflow.sim.warm_measure.measure_warm_start``: a warm start from the
champion and a cold start, same config, seed and budget. The cold start is the baseline
measured in the same run. Printed per seed and as mean +- standard error over the seeds: test
AUC and logloss of both, and steps for the warm start to reach the cold start's best
validation logloss as a ratio of the cold start's steps to its best.

Goal: ratio <= 1/3 with no loss in test AUC (warm - cold >= 0).

Data: the synthetic generator, not the simulator -> dbt -> Feast pipeline: the pipeline needs a
dbt build and a Feast materialisation per window and seed (minutes each), the generator a
second, and ``measure_warm_start`` takes any TrainingSet; the canary logs the same figures on
the real post-drift window on every retrain.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from models.config import ModelConfig, load_model_config  # noqa: E402
from models.train import RunOptions, configure_threads, train_model  # noqa: E402
from models.yaml_config import parse_overrides  # noqa: E402
from rankflow.sim.warm_measure import (  # noqa: E402
    GOAL_STEPS_RATIO,
    WarmStartComparison,
    measure_warm_start,
)
from tests.fixtures.synthetic import as_training_set, drift_windows  # noqa: E402


def run_seed(
    seed: int, args: argparse.Namespace, config: ModelConfig, work: Path
) -> dict[float, WarmStartComparison]:
    """One world: the champion before the drift, then warm vs cold per distillation weight."""
    before, after = drift_windows(args.rows, args.rows, seed=seed, drift=args.drift)
    champion = train_model(
        args.kind,
        before.train,
        before.valid,
        before.schema,
        config,
        RunOptions(checkpoint_dir=work / f"champion-{seed}", resume=False, seed=seed),
    )
    training_set = as_training_set(after)
    results = {}
    for weight in args.distill:
        measured = config.with_overrides({"warm_start.distill_weight": weight})
        results[weight] = measure_warm_start(
            args.kind,
            training_set,
            measured,
            champion.run_dir,
            work / f"seed-{seed}-distill-{weight}",
            seed=seed,
        )
    return results


def mean_se(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
    return statistics.fmean(finite), se


def seed_line(c: WarmStartComparison) -> str:
    reached = f"{c.steps_ratio:.2f}" if math.isfinite(c.steps_ratio) else "never"
    return (
        f"  seed {c.seed}: AUC warm {c.warm.test_auc:.4f} cold {c.cold.test_auc:.4f} "
        f"({c.test_auc_diff:+.4f}); logloss warm {c.warm.test_logloss:.5f} cold "
        f"{c.cold.test_logloss:.5f}; first valid logloss warm {c.warm.first_valid_logloss:.5f} "
        f"cold {c.cold.first_valid_logloss:.5f}; steps to cold best {c.warm_steps_to_cold_best} "
        f"/ {c.cold_steps_to_best} = {reached} (trained warm {c.warm.steps}, cold {c.cold.steps})"
    )


def summarise(weight: float, runs: list[WarmStartComparison]) -> dict[str, Any]:
    """Mean +- SE over seeds; the ratio over the seeds that reached the cold best."""
    rows = {
        "warm_test_auc": [c.warm.test_auc for c in runs],
        "cold_test_auc": [c.cold.test_auc for c in runs],
        "test_auc_diff": [c.test_auc_diff for c in runs],
        "warm_test_logloss": [c.warm.test_logloss for c in runs],
        "cold_test_logloss": [c.cold.test_logloss for c in runs],
        "steps_ratio": [c.steps_ratio for c in runs],
    }
    stats = {name: mean_se(values) for name, values in rows.items()}
    reached = sum(math.isfinite(c.steps_ratio) for c in runs)
    ratio = stats["steps_ratio"][0]
    goal = reached == len(runs) and ratio <= GOAL_STEPS_RATIO and stats["test_auc_diff"][0] >= 0
    print(f"\n== distill_weight {weight}: mean +- SE over {len(runs)} seeds ==")
    for name, (mean, se) in stats.items():
        over = " (seeds that reached the cold best)" if name == "steps_ratio" else ""
        print(f"  {name:18s} {mean:.5f} +- {se:.5f}{over}")
    print(
        f"  reached the cold best in {reached}/{len(runs)} seeds; goal (ratio <= "
        f"{GOAL_STEPS_RATIO:.2f}, AUC diff >= 0): {'met' if goal else 'missed'}"
    )
    return {
        "distill_weight": weight,
        "mean_se": {k: list(v) for k, v in stats.items()},
        "reached": reached,
        "goal_met": goal,
        "seeds": [c.to_dict() for c in runs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="worlds / training seeds 0..N-1")
    parser.add_argument("--rows", type=int, default=100_000, help="impressions per window")
    parser.add_argument("--drift", type=float, default=0.5, help="concept drift in [0, 1]")
    parser.add_argument("--kind", default="dcn", choices=["dcn", "wide_deep"])
    parser.add_argument(
        "--distill",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0],
        help="comma list of warm_start.distill_weight values (the warm arm; e.g. 0,0.3)",
    )
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "model.yaml"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a loaded 2-core machine two threads spin-wait; "
        "a DCN run took 90 s with 2 and 12 s with 1 at load 9; 0 = the config's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model-config key, e.g. --set warm_start.shrink=0.5",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {"training.progress": False, **parse_overrides(args.set)}
    if args.threads:
        overrides["training.num_threads"] = args.threads
    config = load_model_config(args.config, overrides)
    threads = configure_threads(config.training.num_threads)
    load = os.getloadavg()
    print(
        f"warm vs cold start: {args.kind}, {args.seeds} seeds, {args.rows} rows per window, "
        f"drift {args.drift}, distill {args.distill}, {threads} thread(s), "
        f"overrides {args.set or 'none'}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    start = time.perf_counter()
    by_weight: dict[float, list[WarmStartComparison]] = {w: [] for w in args.distill}
    with tempfile.TemporaryDirectory(prefix="rankflow-bench-warm-") as tmp:
        for seed in range(args.seeds):
            for weight, comparison in run_seed(seed, args, config, Path(tmp)).items():
                by_weight[weight].append(comparison)
                print(f"distill {weight}" + seed_line(comparison), flush=True)
    results = [summarise(w, runs) for w, runs in by_weight.items()]
    load = os.getloadavg()
    print(
        f"\n{time.perf_counter() - start:.0f}s; load average at the end "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
