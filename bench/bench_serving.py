"""``/score`` latency and throughput against the raw path, with SQLite and with Redis.

    .state/venv/bin/python bench/bench_serving.py [--home STATE] [--requests 1000]

Needs a built state with a champion: ``--home`` (copied, never changed), else one is built
under ``.state/bench/serving`` (``--impressions`` simulated, default sizes otherwise, the
default model config). For each online store (SQLite; Redis, a ``redis-server`` this script
starts on a free loopback port and loads with ``materialize``) and each request size (1 and 100
candidates) and concurrency (1 and 8 clients):

- **service**: ``rankflow serve`` in its own process (uvicorn, logging on), ``POST /score`` over
  loopback HTTP with keep-alive, latency measured by the client;
- **raw**: in this process, the naive path for the same request: Feast SDK
  ``get_online_features`` through the configured ``feature_service`` (default ``ctr_ranker_v1``)
  -> ``to_df`` -> ``Scorer.predict_proba``
  (the pandas feature-spec transform + forward), the same concurrency in threads (one
  ``FeatureStore`` per thread).

The requests read real keys (bench/serving_keys.py): users and items with a fresh row of every
stored view in the state's exports, candidates among the items of the user's affinity
categories, seeded. Before timing a store, every request of the run goes once through an
in-process ``ScoringService`` (the service's own lookup): the found rate of every stored feature
is printed per feature view, and the bench stops if one is under 95% or the scores do not vary
across candidates.

Prints p50 / p99 (ms) and throughput (requests/s) of both and the service / raw ratios, the
service's dropped log rows, and where an in-process request spends its time (category lookup,
Feast read, transform, forward, log). Absolute times drift on a shared 2-core machine; the
ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

if TYPE_CHECKING:
    from rankflow.config import ScoringConfig

WHEN = None  # request time: the as-of day of the state, set in main()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def run_clients(
    call: Callable[[int, dict[str, Any]], None], bodies: list[dict[str, Any]], clients: int
) -> dict[str, float]:
    """Send ``bodies`` from ``clients`` threads (each its own share); latency per call, and
    throughput over the wall time of the whole batch."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        mine = bodies[k::clients]
        local = []
        for body in mine:
            start = time.perf_counter()
            call(k, body)
            local.append(time.perf_counter() - start)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {**_percentiles(latencies), "rps": len(bodies) / wall}


# ----------------------------------------------------------------------------- state
def build_state(home: Path, impressions: int) -> None:
    from rankflow.config import parse_config
    from rankflow.features.store import refresh_online_store
    from rankflow.settings import Settings
    from rankflow.sim.simulate import simulate
    from rankflow.training.step import train_and_register
    from rankflow.warehouse.build import build_warehouse

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = parse_config({"simulation": {"n_impressions": impressions}})
    from rankflow.paths import StatePaths
    from rankflow.tracking.setup import default_tracking_uri

    # The state's own MLflow store, as the measurement reads it (never $MLFLOW_TRACKING_URI).
    settings = Settings.resolve(
        home=home, mlflow_tracking_uri=default_tracking_uri(StatePaths(home))
    )
    paths = settings.paths
    simulate(config.simulation, paths.raw, paths.truth)
    build_warehouse(paths, vars=config.warehouse.model_dump(), raw_dir=paths.raw)
    refresh_online_store(settings)
    outcome = train_and_register(config.train_step(), settings)
    if outcome.champion_version is None:
        # main() takes a home with mlflow/ as built: a failed build must not be reused
        shutil.rmtree(home)
        raise SystemExit(f"no champion (try more --impressions): {outcome.decision}")


def bench_settings(home: Path, profile: str, redis_url: str | None = None) -> Any:
    """Where the bench's service and raw path run, as explicit settings (this process's
    environment is never changed): the copied state, its own embedded MLflow store (not a
    tracking server the caller's environment may name), and the online store measured."""
    from rankflow.paths import StatePaths
    from rankflow.settings import Settings
    from rankflow.tracking.setup import default_tracking_uri

    return Settings.resolve(
        home=home,
        feast_online_store=profile,
        redis_url=redis_url,
        mlflow_tracking_uri=default_tracking_uri(StatePaths(home)),
    )


def load_redis(settings: Any, port: int) -> subprocess.Popen:
    """A redis-server on ``port``, loaded with every view up to the state's as-of time."""
    from rankflow.features.store import apply_feature_repo, exports_as_of, open_store

    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(0.5)
    apply_feature_repo(settings)
    end = exports_as_of(settings.paths)
    with open_store(settings) as store:
        for view in store.list_feature_views():
            ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else timedelta(days=365 * 60)
            store.materialize(start_date=end - ttl, end_date=end, feature_views=[view.name])
    return server


# ------------------------------------------------------------------------------- paths
def start_service(settings: Any, port: int, overrides: Sequence[str] = ()):
    import httpx

    env = settings.child_env()  # the settings travel to the child as their variables
    sets = [a for o in ["serving.alias_poll_seconds=600", *overrides] for a in ("--set", o)]
    process = subprocess.Popen(
        [sys.executable, "-m", "rankflow", *sets, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("service did not become ready")


def raw_caller(
    settings: Any, scoring: ScoringConfig, clients: int, item_ids: Sequence[int]
) -> Callable[[int, dict[str, Any]], None]:
    """The naive raw path per client thread: Feast SDK read -> DataFrame -> Scorer, through the
    feature service and of the ``@champion`` the service serves (``scoring``). The categories
    of ``item_ids`` (the candidates drawn) are read from the store once, before timing."""
    from mlflow import MlflowClient

    from models.scoring import Scorer
    from rankflow.features.store import coerce_features, feature_service_schema, get_store
    from rankflow.tracking.pyfunc import checkpoint_of

    uri = settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(scoring.model_name, "champion")
    source = client.get_model_version_download_uri(scoring.model_name, champion.version)
    scorer = Scorer.from_checkpoint(checkpoint_of(source))
    stores = [get_store(settings) for _ in range(clients)]
    service = stores[0].get_feature_service(scoring.feature_service)
    schema = feature_service_schema(stores[0], scoring.feature_service)
    with_cat = (
        stores[0]
        .get_online_features(
            ["item_attributes:item_category"], entity_rows=[{"item_id": i} for i in item_ids]
        )
        .to_dict()
    )
    categories = dict(zip(with_cat["item_id"], with_cat["item_category"], strict=True))

    def call(k: int, body: dict[str, Any]) -> None:
        import pandas as pd

        hour = int(body["time"][11:13])
        rows = [
            {
                "user_id": body["user_id"],
                "item_id": i,
                "category": categories.get(i) or "",
                "position": 1,
                "device": body["device"],
                "hour_of_day": hour,
            }
            for i in body["item_ids"]
        ]
        frame = stores[k].get_online_features(features=service, entity_rows=rows).to_df()
        frame = coerce_features(frame, schema)
        frame["day_of_week"] = pd.Timestamp(body["time"]).isoweekday()
        frame["position"], frame["device"], frame["hour_of_day"] = 1, body["device"], hour
        scorer.predict_proba(frame)

    return call


def check_requests(
    settings: Any, scoring: ScoringConfig, bodies: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Every request once through an in-process ``ScoringService`` (the service's lookup and
    model): the found rate of each stored feature per view, printed; stop when one is under
    95% for these known entities or the scores do not vary across candidates."""
    from serving_keys import (
        BenchKeysError,
        check_found_rates,
        check_scores_differ,
        format_found_rates,
        found_rates,
    )

    from rankflow.serving.schemas import score_request_model
    from rankflow.serving.service import ScoringService

    service = ScoringService(settings, scoring)
    service.start(poll=False)
    statuses: list[dict[str, list[int]]] = []
    fetch = service.lookup.fetch

    def recorded(*args: Any, **kwargs: Any) -> Any:
        served = fetch(*args, **kwargs)
        statuses.append({name: list(s) for name, s in served.statuses.items()})
        return served

    service.lookup.fetch = recorded  # type: ignore[method-assign]
    request_model = score_request_model(service.serving.max_candidates)
    try:
        scores = [
            [item.p_click for item in service.score(request_model.model_validate(b)).items]
            for b in bodies
        ]
        slots = service.lookup.slots.items()
        stored = {name: slot.view for name, slot in slots if not slot.on_demand}
    finally:
        service.close()
    rates = found_rates(statuses, stored)
    profile = settings.feast_online_store
    print(f"  {profile}: found rate over {len(bodies)} requests (each feature of each view):")
    for line in format_found_rates(rates):
        print(f"    {line}")
    try:
        check_found_rates(rates)
        check_scores_differ(scores)
    except BenchKeysError as error:
        raise SystemExit(f"{profile}: {error}") from error
    return rates


def breakdown(
    settings: Any, scoring: ScoringConfig, bodies: list[dict[str, Any]]
) -> dict[str, float]:
    """Mean ms per in-process request spent in each step of ``ScoringService.score``."""
    from rankflow.serving.schemas import score_request_model
    from rankflow.serving.service import ScoringService

    service = ScoringService(settings, scoring)
    service.start(poll=False)
    spent = {"categories": 0.0, "feast_read": 0.0, "transform": 0.0, "forward": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    lookup = service.lookup
    lookup.categories = timed("categories", lookup.categories)  # type: ignore[method-assign]
    lookup.fetch = timed("feast_read", lookup.fetch)  # type: ignore[method-assign]
    for model in service.holder.arms.values():
        object.__setattr__(model, "transform", timed("transform", model.transform))
        model.scorer.model.forward = timed("forward", model.scorer.model.forward)
    request_model = score_request_model(service.serving.max_candidates)
    requests = [request_model.model_validate(b) for b in bodies]
    for r in requests[:5]:
        service.score(r)  # warm the caches
    for key in spent:
        spent[key] = 0.0
    start = time.perf_counter()
    for r in requests:
        service.score(r)
    total = time.perf_counter() - start
    service.close()
    out = {k: 1000 * v / len(requests) for k, v in spent.items()}
    out["total"] = 1000 * total / len(requests)
    out["other"] = out["total"] - sum(spent[k] * 1000 / len(requests) for k in spent)
    return out


def measure(settings: Any, scoring: ScoringConfig, args: argparse.Namespace) -> dict:
    import httpx
    from serving_keys import draw_bodies

    from rankflow.tracking.server import free_port

    rng = np.random.default_rng(0)
    keys = args.keys
    cells = {
        size: (
            draw_bodies(rng, keys, size, 20, WHEN),
            {c: draw_bodies(rng, keys, size, args.requests, WHEN) for c in (1, 8)},
        )
        for size in (1, 100)
    }
    every = [b for warm, timed in cells.values() for b in [*warm, *timed[1], *timed[8]]]
    results: dict[str, Any] = {"found_rates": check_requests(settings, scoring, every)}
    profile = settings.feast_online_store
    process, url = start_service(settings, free_port(), args.service_set)
    try:
        clients = {k: httpx.Client(base_url=url, timeout=30) for k in range(8)}

        def http_call(k: int, body: dict[str, Any]) -> None:
            response = clients[k].post("/score", json=body)
            if response.status_code != 200:
                raise SystemExit(f"/score {response.status_code}: {response.text[:300]}")

        raw = raw_caller(settings, scoring, 8, sorted(keys.item_category))
        for size, (warm, timed) in cells.items():
            run_clients(http_call, warm, 1)
            run_clients(raw, warm, 1)
            for concurrency, bodies in timed.items():
                service = run_clients(http_call, bodies, concurrency)
                naive = run_clients(raw, bodies, concurrency)
                key = f"{size}x{concurrency}"
                results[key] = {"service": service, "raw": naive}
                print(
                    f"  {profile:<6} {size:>3} cand, {concurrency} clients: service p50 "
                    f"{service['p50']:6.2f} p99 {service['p99']:6.2f} ms {service['rps']:6.1f} "
                    f"rps | raw p50 {naive['p50']:6.2f} p99 {naive['p99']:6.2f} ms "
                    f"{naive['rps']:6.1f} rps | p99 ratio {service['p99'] / naive['p99']:.2f}",
                    flush=True,
                )
        time.sleep(3)  # let the writer flush
        metrics = httpx.get(f"{url}/metrics").text
        for line in metrics.splitlines():
            if line.startswith("rankflow_log_rows_total"):
                results.setdefault("log_rows", {})[line.split('"')[1]] = float(line.split()[-1])
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)
    return results


def main() -> None:
    global WHEN
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a built state with a champion (copied)")
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument(
        "--requests", type=int, default=1000, help="per cell (p99 = the 10th worst at 1000)"
    )
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument(
        "--service-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the service (rankflow --set), e.g. serving.scoring_threads=4",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    work = REPO / ".state" / "bench" / "serving"
    source = work / "built"
    if args.home is None and not (source / "mlflow").is_dir():
        print(f"building a state with {args.impressions:,} impressions in {source} ...")
        build_state(source, args.impressions)
    home = work / "run"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(args.home or source, home, ignore=shutil.ignore_patterns("logs", "reports"))

    from serving_keys import draw_bodies, read_stored_keys

    from rankflow.config import load_config
    from rankflow.features.store import apply_feature_repo, exports_as_of
    from rankflow.sim.oracle import Oracle
    from rankflow.tracking.server import free_port

    # What the service (rankflow serve, the config file) serves: the raw path and the
    # in-process breakdown read the same feature service and registered model.
    scoring = load_config().scoring()
    sqlite = bench_settings(home, "sqlite")
    paths = sqlite.paths
    apply_feature_repo(sqlite)  # the registry keeps the copied-from state's export paths
    config = Oracle.from_truth_dir(paths.truth).config
    as_of = exports_as_of(paths)
    WHEN = (as_of + timedelta(hours=18)).isoformat()
    args.keys = keys = read_stored_keys(paths, as_of)
    results: dict[str, Any] = {
        "when": WHEN,
        "users": config.n_users,
        "items": config.n_items,
        "stored_users": len(keys.users),
        "stored_items": len(keys.item_category),
    }
    print(
        f"state {home}: {config.n_users} users, {config.n_items} items; drawing from the "
        f"{len(keys.users)} users and {len(keys.item_category)} items with a row of every "
        f"stored view at {as_of.isoformat()}; requests at {WHEN}"
    )
    rng = np.random.default_rng(1)
    results["breakdown_1"] = breakdown(sqlite, scoring, draw_bodies(rng, keys, 1, 200, WHEN))
    results["breakdown_100"] = breakdown(sqlite, scoring, draw_bodies(rng, keys, 100, 100, WHEN))
    for size in (1, 100):
        b = results[f"breakdown_{size}"]
        print(f"  in process, {size} cand (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in b.items()))
    results["sqlite"] = measure(sqlite, scoring, args)
    if not args.skip_redis:
        port = free_port()
        on_redis = bench_settings(home, "redis", f"127.0.0.1:{port}")
        redis = load_redis(on_redis, port)
        try:
            results["redis"] = measure(on_redis, scoring, args)
        finally:
            os.killpg(redis.pid, signal.SIGTERM)
            redis.wait(timeout=30)
    print(json.dumps({k: results[k].get("log_rows") for k in ("sqlite", "redis") if k in results}))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
