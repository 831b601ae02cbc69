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
  ``get_online_features`` through ``ctr_ranker_v1`` -> ``to_df`` -> ``Scorer.predict_proba``
  (the pandas feature-spec transform + forward), the same concurrency in threads (one
  ``FeatureStore`` per thread).

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
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

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


def bodies_for(rng: np.random.Generator, n_users: int, n_items: int, size: int, count: int):
    out = []
    for _ in range(count):
        items = rng.choice(np.arange(1, n_items + 1), size=size, replace=False)
        out.append(
            {
                "user_id": int(rng.integers(1, n_users + 1)),
                "item_ids": [int(i) for i in items],
                "device": str(rng.choice(["mobile", "desktop", "tablet"])),
                "time": WHEN,
            }
        )
    return out


# ----------------------------------------------------------------------------- state
def build_state(home: Path, impressions: int) -> None:
    from rankflow.config import parse_config
    from rankflow.features.store import refresh_online_store
    from rankflow.paths import StatePaths
    from rankflow.sim.simulate import simulate
    from rankflow.training.step import train_and_register
    from rankflow.warehouse.build import build_warehouse

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = parse_config({"simulation": {"n_impressions": impressions}})
    paths = StatePaths(home)
    simulate(config.simulation, paths.raw, paths.truth)
    build_warehouse(paths, vars=config.warehouse.model_dump(), raw_dir=paths.raw)
    refresh_online_store(paths)
    outcome = train_and_register(config, paths)
    if outcome.champion_version is None:
        raise SystemExit(f"no champion: {outcome.decision}")


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
    apply_feature_repo(settings.paths, settings=settings)
    end = exports_as_of(settings.paths)
    with open_store(settings=settings) as store:
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


def raw_caller(settings: Any, clients: int) -> Callable[[int, dict[str, Any]], None]:
    """The naive raw path per client thread: Feast SDK read -> DataFrame -> Scorer."""
    from mlflow import MlflowClient

    from models.scoring import Scorer
    from rankflow.features.store import coerce_features, feature_service_schema, get_store
    from rankflow.tracking.pyfunc import checkpoint_of

    uri = settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("rankflow-ctr", "champion")
    source = client.get_model_version_download_uri("rankflow-ctr", champion.version)
    scorer = Scorer.from_checkpoint(checkpoint_of(source))
    stores = [get_store(settings=settings) for _ in range(clients)]
    service = stores[0].get_feature_service("ctr_ranker_v1")
    schema = feature_service_schema(stores[0])
    categories = {}
    with_cat = (
        stores[0]
        .get_online_features(
            ["item_attributes:item_category"], entity_rows=[{"item_id": i} for i in range(1, 5001)]
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


def breakdown(settings: Any, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """Mean ms per in-process request spent in each step of ``ScoringService.score``."""
    from rankflow.config import load_config
    from rankflow.serving.schemas import score_request_model
    from rankflow.serving.service import ScoringService

    service = ScoringService(settings, load_config())
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
    request_model = score_request_model(service.config.serving.max_candidates)
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


def measure(settings: Any, args: argparse.Namespace) -> dict:
    import httpx

    from rankflow.tracking.server import free_port

    profile = settings.feast_online_store
    rng = np.random.default_rng(0)
    users, items = args.users, args.items
    results: dict[str, Any] = {}
    process, url = start_service(settings, free_port(), args.service_set)
    try:
        clients = {k: httpx.Client(base_url=url, timeout=30) for k in range(8)}

        def http_call(k: int, body: dict[str, Any]) -> None:
            response = clients[k].post("/score", json=body)
            if response.status_code != 200:
                raise SystemExit(f"/score {response.status_code}: {response.text[:300]}")

        raw = raw_caller(settings, 8)
        for size in (1, 100):
            warm = bodies_for(rng, users, items, size, 20)
            run_clients(http_call, warm, 1)
            run_clients(raw, warm, 1)
            for concurrency in (1, 8):
                bodies = bodies_for(rng, users, items, size, args.requests)
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

    from rankflow.features.store import apply_feature_repo, exports_as_of
    from rankflow.paths import StatePaths
    from rankflow.sim.oracle import Oracle
    from rankflow.tracking.server import free_port

    paths = StatePaths(home)
    apply_feature_repo(paths)  # the registry keeps the copied-from state's export paths
    config = Oracle.from_truth_dir(paths.truth).config
    args.users, args.items = config.n_users, config.n_items
    WHEN = (exports_as_of(paths) + timedelta(hours=18)).isoformat()
    results: dict[str, Any] = {"when": WHEN, "users": args.users, "items": args.items}
    print(f"state {home}: {args.users} users, {args.items} items, requests at {WHEN}")
    rng = np.random.default_rng(1)
    sqlite = bench_settings(home, "sqlite")
    results["breakdown_1"] = breakdown(sqlite, bodies_for(rng, args.users, args.items, 1, 200))
    results["breakdown_100"] = breakdown(sqlite, bodies_for(rng, args.users, args.items, 100, 100))
    for size in (1, 100):
        b = results[f"breakdown_{size}"]
        print(f"  in process, {size} cand (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in b.items()))
    results["sqlite"] = measure(sqlite, args)
    if not args.skip_redis:
        port = free_port()
        on_redis = bench_settings(home, "redis", f"127.0.0.1:{port}")
        redis = load_redis(on_redis, port)
        try:
            results["redis"] = measure(on_redis, args)
        finally:
            os.killpg(redis.pid, signal.SIGTERM)
            redis.wait(timeout=30)
    print(json.dumps({k: results[k].get("log_rows") for k in ("sqlite", "redis") if k in results}))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
