"""How close to the oracle can any model get on the simulated data? An information bound.

    .state/venv/bin/python bench/oracle_bound.py --rows 1000000

The oracle scores each test impression with its true ``p_click``, which holds every user's
hidden bias and 8-dimensional taste. A model only learns a user from that user's past clicks
(~72 impressions and ~3 clicks per user before the test days at the defaults, none for the
quarter of test rows from users who signed up since), so part of the oracle's AUC is out
of reach of any model. This script measures that part on the pipeline's own training set (built
by ``bench/feast_source.py``), by scoring the test split with models that are *given* more than
any real model has:

- ``no_user_info``: every term of the simulator's logit exactly, except the user's own bias and
  taste (set to their prior mean, 0);
- ``user_map_rolling``: the same, plus each user's bias and taste estimated from *all* that
  user's labelled impressions before the test day (train, valid and earlier test days), by the
  exact posterior mode under the simulator's true priors (bias ~ N(0, user_bias_std^2),
  taste ~ N(0, I)) with every item's true vector known. Features are day-lagged aggregates of
  the same click log, so a real model sees no more about a user than this, and it must also
  learn the items and the formula.

- ``user_item_map_rolling``: as ``user_map_rolling``, but each item's quality (its logit
  offset) is learned from the same clicks too, alternating user | items and items | users fits;
  item vectors and every low-cardinality effect stay exact. Still generous, but closer to what
  a model faces.

``user_map_rolling`` is therefore an upper bound (up to MAP vs full posterior mean) on the test
AUC any model can reach from these logs; ``oracle - user_map_rolling`` is irreducible.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench/ itself is on the path as the script's folder

from models.metrics import auc, logloss  # noqa: E402


def user_parts(
    users: pd.DataFrame, items: pd.DataFrame, latent_strength: float, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True user bias [U], taste [U, d] and the scaled item vectors c * v [I, d]."""
    taste = users[[f"taste_{k}" for k in range(d)]].to_numpy(np.float64)
    vectors = items[[f"vector_{k}" for k in range(d)]].to_numpy(np.float64)
    return users["user_bias"].to_numpy(np.float64), taste, vectors * latent_strength / math.sqrt(d)


def fit_map(
    group: np.ndarray,
    design: np.ndarray,
    offset: np.ndarray,
    label: np.ndarray,
    n_groups: int,
    prior_precision: np.ndarray,
    iterations: int = 12,
) -> np.ndarray:
    """Per-group (user or item) posterior mode of theta_g in ``logit = offset + design . theta_g``.

    group [N] (0-based ids), design [N, K], offset [N], label [N] -> theta [G, K]; Gaussian
    prior N(0, diag(1 / prior_precision)). Newton's method, all groups at once (each group's
    problem is K-dimensional and strictly concave, so a dozen steps converge).
    """
    n, k = design.shape
    members = sparse.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(n_groups, n))
    outer = (design[:, :, None] * design[:, None, :]).reshape(n, k * k)
    precision = np.diag(prior_precision)
    theta = np.zeros((n_groups, k))
    for _ in range(iterations):
        z = offset + np.einsum("nk,nk->n", design, theta[group])
        p = expit(z)
        gradient = members @ (design * (label - p)[:, None]) - theta * prior_precision
        hessian = (members @ (outer * (p * (1 - p))[:, None])).reshape(n_groups, k, k)
        hessian += precision
        theta += np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
    return theta


def bound(rows: int, seed: int) -> dict[str, dict[str, float]]:
    import feast_source

    data = feast_source.load(rows, seed)
    truth_dir = feast_source.state_settings().paths.truth
    simulation = json.loads((truth_dir / "simulation.json").read_text())
    cfg = simulation.get("config", simulation)
    if cfg.get("drift_day") is not None:
        raise SystemExit("oracle_bound: the simulated data has concept drift; run it without")
    users = pd.read_parquet(truth_dir / "users.parquet")
    items = pd.read_parquet(truth_dir / "items.parquet")
    bias, taste, scaled_vectors = user_parts(
        users, items, float(cfg["latent_strength"]), int(cfg["latent_dim"])
    )
    user_index = pd.Index(users["user_id"])
    item_index = pd.Index(items["item_id"])

    frame = pd.concat([data.train, data.valid, data.test], ignore_index=True)
    frame = frame[["event_id", "user_id", "item_id", "event_timestamp", "label"]]
    u = user_index.get_indexer(frame["user_id"].to_numpy())
    i = item_index.get_indexer(frame["item_id"].to_numpy())
    if (u < 0).any() or (i < 0).any():
        raise SystemExit("oracle_bound: training-set ids missing from truth/users|items.parquet")
    p_true = data.truth.reindex(frame["event_id"].to_numpy()).to_numpy()
    z_true = np.log(p_true) - np.log1p(-p_true)
    design = np.concatenate([np.ones((len(frame), 1)), scaled_vectors[i]], axis=1)  # [N, 1 + d]
    theta_true = np.concatenate([bias[:, None], taste], axis=1)  # [U, 1 + d]
    rest = z_true - np.einsum("nk,nk->n", design, theta_true[u])  # every non-user term
    label = frame["label"].to_numpy(np.float64)
    day = pd.to_datetime(frame["event_timestamp"], utc=True).dt.floor("D").to_numpy()

    is_test = np.arange(len(frame)) >= len(data.train) + len(data.valid)
    prior_precision = np.r_[1.0 / float(cfg["user_bias_std"]) ** 2, np.ones(taste.shape[1])]
    quality = items["quality"].to_numpy(np.float64)
    item_precision = np.array([1.0 / float(cfg["item_quality_std"]) ** 2])
    rest_without_item = rest - quality[i]
    rolling = np.empty(len(frame))
    rolling_ids = np.empty(len(frame))
    for test_day in np.unique(day[is_test]):
        seen, today = day < test_day, day == test_day
        theta = fit_map(u[seen], design[seen], rest[seen], label[seen], len(users), prior_precision)
        rolling[today] = rest[today] + np.einsum("nk,nk->n", design[today], theta[u[today]])
        # Item quality learned too: alternate item | users and users | items (each exact MAP).
        q = np.zeros((len(items), 1))
        for _ in range(4):
            theta = fit_map(
                u[seen],
                design[seen],
                rest_without_item[seen] + q[i[seen], 0],
                label[seen],
                len(users),
                prior_precision,
            )
            user_term = np.einsum("nk,nk->n", design[seen], theta[u[seen]])
            q = fit_map(
                i[seen],
                np.ones((int(seen.sum()), 1)),
                rest_without_item[seen] + user_term,
                label[seen],
                len(items),
                item_precision,
            )
        rolling_ids[today] = (
            rest_without_item[today]
            + q[i[today], 0]
            + np.einsum("nk,nk->n", design[today], theta[u[today]])
        )

    y = label[is_test]
    scores = {
        "oracle": p_true[is_test],
        "user_map_rolling": expit(rolling[is_test]),
        "user_item_map_rolling": expit(rolling_ids[is_test]),
        "no_user_info": expit(rest[is_test]),
    }
    clicks_per_user = np.bincount(u[~is_test], weights=label[~is_test], minlength=len(users))
    print(
        f"test rows {int(is_test.sum())}; before the test split: "
        f"{np.bincount(u[~is_test], minlength=len(users)).mean():.0f} impressions and "
        f"{clicks_per_user.mean():.1f} clicks per user (median {np.median(clicks_per_user):.0f})"
    )
    return {name: {"auc": auc(y, s), "logloss": logloss(y, s)} for name, s in scores.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0, help="as in bench_models.py --seed")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = bound(args.rows, args.seed)
    oracle = results["oracle"]["auc"]
    print(f"\n== information bound on the test split ({time.perf_counter() - t0:.0f}s) ==")
    print(f"{'scorer':<18} {'auc':>7} {'logloss':>8} {'oracle_minus_auc':>17}")
    for name, m in results.items():
        print(f"{name:<18} {m['auc']:7.4f} {m['logloss']:8.4f} {oracle - m['auc']:17.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
