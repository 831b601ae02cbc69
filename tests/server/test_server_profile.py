"""The main job in the server profile: ``rankflow run`` against real servers on loopback.

The same command as ``make run``; only the environment differs (what docker/compose.yaml sets):
``RANKFLOW_PROFILE=server``, Redis as Feast's online store, ``mlflow server`` on Postgres for
tracking, registry and artifacts, a Prefect server on Postgres for the flow runs, and Postgres
for the promotion lock. The run also takes the Dask option (``scale_out.task_runner: dask``),
which needs the real Prefect server: the two model families train in two Dask worker processes.
The assertions read each server back to show the run really used it and left nothing in the
embedded stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rankflow.paths import REPO_ROOT
from rankflow.registry.versions import TAG_KIND

pytestmark = [pytest.mark.server, pytest.mark.e2e]

SMALL = [
    "--set",
    "simulation.n_users=300",
    "--set",
    "simulation.n_items=120",
    "--set",
    "simulation.n_impressions=20000",
    "--set",
    "simulation.days=8",
    "--set",
    "simulation.end_date=2026-03-11",
    "--set",
    "training_set.valid_days=2",
    "--set",
    "training_set.test_days=2",
]


def server_env(home: Path, postgres, redis_server: str, mlflow_server, prefect_server: str) -> dict:
    """The server profile's environment, as the compose file gives it to rankflow services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANKFLOW_", "MLFLOW_"))}
    return {
        **env,
        "RANKFLOW_PROFILE": "server",
        "RANKFLOW_HOME": str(home),
        "RANKFLOW_REDIS": redis_server,
        "RANKFLOW_POSTGRES_URL": postgres.url("rankflow"),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(home / "prefect"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server_run(tmp_path_factory, postgres, redis_server, mlflow_server, prefect_server):
    home = tmp_path_factory.mktemp("server-profile")
    env = server_env(home, postgres, redis_server, mlflow_server, prefect_server)
    result = subprocess.run(
        [sys.executable, "-m", "rankflow", *SMALL, "--set", "scale_out.task_runner=dask", "run"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return home, env, result


def test_settings_resolve_to_the_server_profile(server_run) -> None:
    home, env, _ = server_run
    shown = subprocess.run(
        [sys.executable, "-m", "rankflow", "settings"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    settings = json.loads(shown)["environment"]
    assert settings["profile"] == "server"
    assert settings["feast_online_store"] == "redis"
    assert settings["home"] == str(home)


def test_the_models_went_to_the_mlflow_server_on_postgres(server_run, postgres, mlflow_server):
    import psycopg
    from mlflow import MlflowClient

    home, _, _ = server_run
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    champion = client.get_model_version_by_alias("rankflow-ctr", "champion")
    assert champion.version
    experiment = client.get_experiment_by_name("rankflow-ctr")
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([experiment.experiment_id])
    kinds = {r.data.tags.get(TAG_KIND) for r in runs}
    assert {"wide_deep", "dcn"} <= kinds, kinds
    assert all(r.info.status == "FINISHED" for r in runs)
    # The server stored the uploaded artifacts in its own folder, the rows in Postgres.
    assert any(mlflow_server.artifacts.rglob("MLmodel"))
    with psycopg.connect(postgres.url("mlflow")) as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM registered_models")}
    assert {"rankflow-ctr", "rankflow-wide-deep", "rankflow-dcn"} <= names
    # Nothing went to the embedded store.
    assert not (home / "mlflow" / "mlflow.db").exists()
    assert not (home / "mlflow" / "artifacts").exists() or not any(
        (home / "mlflow" / "artifacts").iterdir()
    )


def test_the_online_store_is_redis(server_run, redis_server) -> None:
    import redis

    home, _, _ = server_run
    host, port = redis_server.split(":")
    keys = redis.Redis(host=host, port=int(port)).keys("*")
    assert len(keys) >= 300  # one hash per entity key (users and items), at least
    assert not (home / "feast" / "online_store.db").exists()


def test_the_flow_runs_are_on_the_prefect_server(server_run, prefect_server) -> None:
    runs = _post(f"{prefect_server}/flow_runs/filter", {"limit": 50})
    flows = {f["id"]: f["name"] for f in _post(f"{prefect_server}/flows/filter", {"limit": 50})}
    by_flow = {flows[r["flow_id"]]: r["state_type"] for r in runs}
    assert by_flow.get("pipeline") == "COMPLETED", by_flow
    assert by_flow.get("build-features") == "COMPLETED", by_flow
    assert by_flow.get("train") == "COMPLETED", by_flow
    assert not (server_run[0] / "prefect" / "prefect.db").exists()  # no temporary server's DB


def test_the_families_trained_in_parallel_dask_processes(server_run, prefect_server) -> None:
    home, _, _ = server_run
    summary = json.loads(next((home / "runs").glob("*-pipeline-*/summary.json")).read_text())
    families = summary["details"]["train_families"]
    assert set(families) == {"wide_deep", "dcn"}
    assert not any(f["reused"] for f in families.values())  # each was trained in its task
    pids = {f["pid"] for f in families.values()}
    assert len(pids) == 2  # two worker processes, neither of them the flow's
    # The train-and-register step after them reused both versions and made the decision.
    candidates = summary["details"]["train"]["candidates"]
    assert all(c["reused"] for c in candidates.values())
    assert {k: c["version"] for k, c in candidates.items()} == {
        k: f["version"] for k, f in families.items()
    }
    assert summary["details"]["train"]["aliases"].get("champion")
    # Task runs reach the server as events, recorded by its services shortly after.
    family_runs: list[dict[str, Any]] = []
    for _ in range(120):
        task_runs = _post(f"{prefect_server}/task_runs/filter", {"limit": 200})
        family_runs = [r for r in task_runs if r["name"].startswith("train-family")]
        if len(family_runs) == 2 and all(r["state_type"] == "COMPLETED" for r in family_runs):
            break
        time.sleep(0.5)
    assert sorted(r["state_type"] for r in family_runs) == ["COMPLETED", "COMPLETED"]


def test_online_reads_from_redis_match_the_offline_store(
    server_run, redis_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's read path (Feast SDK over Redis) gives what point-in-time retrieval gives
    at the materialization end: the Redis online store holds the right values, not just keys."""
    import pandas as pd

    from rankflow.features.store import (
        coerce_features,
        exports_as_of,
        feature_service_schema,
        online_features,
        open_store,
    )
    from rankflow.settings import Settings

    home, _, _ = server_run
    monkeypatch.setenv("RANKFLOW_REDIS", redis_server)
    settings = Settings.resolve(home=home)  # with the Redis address set above
    paths = settings.paths
    users = pd.read_parquet(home / "raw" / "users").sort_values("user_id").head(8)
    items = pd.read_parquet(home / "raw" / "items").sort_values("item_id").head(8)
    rows = [
        {
            "user_id": int(u),
            "item_id": int(i),
            "category": str(c),
            "position": 1 + n % 3,
            "device": "mobile",
            "hour_of_day": 12,
        }
        for n, (u, i, c) in enumerate(
            zip(users.user_id, items.item_id, items.category, strict=True)
        )
    ]
    online = online_features(settings, rows, feature_service="ctr_ranker_v1", profile="redis")
    end = exports_as_of(paths)
    entity_df = pd.DataFrame(rows).assign(event_timestamp=pd.Timestamp(end))
    entity_df[["position", "hour_of_day"]] = entity_df[["position", "hour_of_day"]].astype("int32")
    with open_store(settings, profile="redis") as store:
        schema = feature_service_schema(store, "ctr_ranker_v1")
        offline = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service("ctr_ranker_v1")
        ).to_df()
    offline = coerce_features(offline, schema).set_index("user_id").sort_index()
    online = online.set_index("user_id").sort_index()
    assert online["user_segment"].notna().all()  # attributes came back from Redis
    pd.testing.assert_frame_equal(online[list(schema)], offline[list(schema)], check_exact=False)


# ---------------------------------------------------------------------------------------------
# A scoring request in the server profile
# ---------------------------------------------------------------------------------------------

STORED_VIEWS = (
    "user_attributes",
    "item_attributes",
    "user_daily_stats",
    "item_daily_stats",
    "user_category_affinity",
)
USER_VIEWS = ("user_attributes", "user_daily_stats")


@pytest.fixture(scope="module")
def scored(server_run, redis_server: str, mlflow_server) -> dict[str, Any]:
    """``rankflow serve`` with the run's server-profile environment on a free loopback port,
    one ``POST /score`` for a user and items the state knows at its as-of day, the served log
    rows of that request, and the service's metrics; the service is stopped afterwards."""
    import httpx
    import pandas as pd

    from rankflow.features.store import exports_as_of
    from rankflow.paths import StatePaths
    from rankflow.serving.served_log import read_served_log
    from rankflow.tracking.server import free_port
    from tests.fixtures.service import scoring_service

    home, env, _ = server_run
    paths = StatePaths(home)
    as_of = exports_as_of(paths)
    users = pd.read_parquet(paths.exports / "user_daily_features")  # one file per day
    items = pd.read_parquet(paths.exports / "item_daily_features")
    user = int(sorted(users.loc[users["feature_ts"] == pd.Timestamp(as_of), "user_id"])[0])
    item_ids = [
        int(i) for i in sorted(items.loc[items["feature_ts"] == pd.Timestamp(as_of), "item_id"])[:5]
    ]
    when = as_of + timedelta(hours=12)
    body = {
        "user_id": user,
        "item_ids": item_ids,
        "device": "mobile",
        "time": when.isoformat(),
        "request_id": "server-profile-score-1",
    }
    url = f"http://127.0.0.1:{free_port()}"
    service_env = {**env, "RANKFLOW_SERVICE_URL": url}
    with scoring_service(
        service_env, home.parent / "service.log", "--set", "serving.log.flush_seconds=0.2"
    ):
        response = httpx.post(f"{url}/score", json=body, timeout=60)
        logged = pd.DataFrame()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            frame = read_served_log(paths, "ctr_ranker_v1")
            if not frame.empty:
                logged = frame[frame["__request_id"] == body["request_id"]]
                if len(logged) == len(item_ids):
                    break
            time.sleep(0.3)
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        "home": home,
        "body": body,
        "hour": when.hour,
        "response": response,
        "logged": logged,
        "metrics": metrics,
    }


def test_a_scoring_request_is_ranked_by_the_champion_on_the_mlflow_server(
    scored, mlflow_server
) -> None:
    from mlflow import MlflowClient

    response = scored["response"]
    assert response.status_code == 200, response.text
    data = response.json()
    body = scored["body"]
    assert sorted(i["item_id"] for i in data["items"]) == sorted(body["item_ids"])
    assert [i["rank"] for i in data["items"]] == list(range(1, len(body["item_ids"]) + 1))
    p = [i["p_click"] for i in data["items"]]
    assert p == sorted(p, reverse=True) and all(0 < v < 1 for v in p)
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    champion = client.get_model_version_by_alias("rankflow-ctr", "champion")
    assert data["arm"] == "champion"
    assert data["model"]["name"] == "rankflow-ctr"
    assert data["model"]["version"] == str(champion.version)
    assert not data["unknown_user"] and data["unknown_items"] == 0


def test_the_served_features_came_from_redis(
    scored, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The logged feature values of the request are what the Redis online store holds for those
    entities (read back through Feast), the user's views were all present (no missing-feature
    count for them), and no SQLite online store was created beside it."""
    import numpy as np

    from rankflow.features.store import online_features
    from rankflow.settings import Settings

    logged, body = scored["logged"], scored["body"]
    assert len(logged) == len(body["item_ids"]), "the request's rows never reached the log"
    logged = logged.set_index("item_id").loc[body["item_ids"]]
    monkeypatch.setenv("RANKFLOW_REDIS", redis_server)
    rows = [
        {
            "user_id": body["user_id"],
            "item_id": i,
            "category": logged.at[i, "category"],
            "position": 1,
            "device": body["device"],
            "hour_of_day": scored["hour"],
        }
        for i in body["item_ids"]
    ]
    stored = online_features(
        Settings.resolve(home=scored["home"]),
        rows,
        feature_service="ctr_ranker_v1",
        profile="redis",
    )
    stored = stored.set_index("item_id").loc[body["item_ids"]]
    compared: set[str] = set()
    for column in logged.columns:
        view, _, feature = column.partition("__")
        if view not in STORED_VIEWS or feature.endswith(("__status", "__timestamp")):
            continue
        present = (logged[f"{column}__status"] == 1).to_numpy()
        if view in USER_VIEWS:
            assert present.all(), column  # the known user's rows were all in Redis
        served, held = logged[column].to_numpy()[present], stored[feature].to_numpy()[present]
        if served.dtype.kind in "fiub":
            np.testing.assert_allclose(served.astype(float), held.astype(float), err_msg=column)
        else:
            assert list(served) == list(held), column
        if present.any():
            compared.add(view)
    assert {"user_attributes", "user_daily_stats", "item_daily_stats"} <= compared, compared
    for view in USER_VIEWS:
        assert f'rankflow_missing_features_total{{feature_view="{view}"' not in scored["metrics"]
    assert not (scored["home"] / "feast" / "online_store.db").exists()


# Two canaries at once in the server profile: the promotion lock is Postgres' advisory lock,
# the registry the MLflow server's. Both are told by their phase to promote
# (tests/fixtures/given_canary.py), so the race is decided by the lock, not by traffic.

# Permissive offline margins and gates: what is under test is what follows the phase.
CANARY_OVERRIDES = {
    "canary.measure_warm_start": False,
    "canary.offline.auc_margin": 0.2,
    "canary.offline.logloss_margin": 0.2,
    "canary.offline.max_ece_increase": 0.2,
    "registry.gates.min_auc": 0.5,
    "registry.gates.max_ece": 0.2,
    "registry.gates.min_auc_lift_over_baseline": None,
}


@pytest.fixture(scope="module")
def concurrent(server_run, mlflow_server) -> dict[str, Any]:
    """Two canaries with a promoting phase started together, each in its own process, against
    the servers (after the scoring tests, which read the run's champion), and the registry
    before and after."""
    import yaml
    from mlflow import MlflowClient

    from rankflow.registry.aliases import aliases_of
    from rankflow.sim.scenario import start_together

    home, env, _ = server_run
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    before = aliases_of(client, "rankflow-ctr")
    pairs = (item.split("=", 1) for item in SMALL[1::2])
    overrides = {key: yaml.safe_load(value) for key, value in pairs} | CANARY_OVERRIDES
    command = [
        *(sys.executable, "-m", "tests.fixtures.given_canary"),
        *(str(home), json.dumps(overrides, default=str), "promote"),  # dates as ISO text
    ]
    results = start_together(command, {**env, "PYTHONPATH": str(REPO_ROOT)}, n=2)
    return {
        "home": home,
        "client": client,
        "before": before,
        "results": results,
        "after": aliases_of(client, "rankflow-ctr"),
    }


def test_two_canaries_at_once_promote_exactly_once_on_the_servers(concurrent) -> None:
    """Both finish with a decision (no refusal, no traceback): one promotes, the other finds
    @champion moved under the Postgres lock and aborts; every decision is on its version in the
    MLflow server; the embedded stores stayed empty."""
    from rankflow.registry.promotion import CHAMPION

    results, client = concurrent["results"], concurrent["client"]
    assert [r["code"] for r in results] == [0, 0], results
    decisions = sorted(r["decision"] for r in results)
    assert decisions == ["aborted", "promoted"], results
    (aborted,) = [r["line"] for r in results if r["decision"] == "aborted"]
    before, after = concurrent["before"][CHAMPION], concurrent["after"][CHAMPION]
    assert after != before
    # It found the other's promotion under the lock, before setting @challenger or before
    # promoting, whichever it reached first.
    assert (
        f"@champion moved from v{before} to v{after}" in aborted
        or f"@champion is v{after}, the plan expected v{before}" in aborted
    ), aborted
    tagged = {
        v.tags["rankflow.canary.decision"]
        for v in client.search_model_versions("name = 'rankflow-ctr'")
        if "rankflow.canary.decision" in v.tags
    }
    assert tagged and tagged <= {"promoted", "aborted"}, (tagged, results)
    assert not (concurrent["home"] / "mlflow" / "mlflow.db").exists()


def test_a_champions_history_stays_within_what_postgres_holds(concurrent) -> None:
    """Postgres holds a version's description in VARCHAR(5000) (SQLite does not check): the
    champion, noted by every canary run against it, takes a year of weekly notes and keeps the
    newest."""
    from rankflow.registry.promotion import CHAMPION
    from rankflow.registry.versions import DESCRIPTION_LIMIT, record_note

    client, version = concurrent["client"], concurrent["after"][CHAMPION]
    for week in range(60):  # 60 lines of about 160 characters: twice the column
        record_note(client, "rankflow-ctr", version, f"canary week {week}: " + "r" * 120)
    text = client.get_model_version("rankflow-ctr", version).description
    assert len(text) <= DESCRIPTION_LIMIT
    assert text.splitlines()[-1].endswith(f"canary week 59: {'r' * 120}")
    assert "earlier entries not shown" in text
