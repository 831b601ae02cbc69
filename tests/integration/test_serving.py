"""The scoring service as a real process: ``rankflow serve`` (uvicorn on loopback, a free port)
over a real Feast SQLite store and MLflow registry built by the session's small pipeline.

Bad bodies get a 4xx naming the field; the served log is Feast's own (read back through the
provider); an alias move and a canary share are picked up while serving, without a restart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from rankflow.paths import StatePaths
from rankflow.serving.holder import canary_bucket
from rankflow.settings import Settings
from rankflow.tracking.server import free_port
from tests.fixtures.service import scoring_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WHEN = "2026-03-11T18:30:00Z"  # the day the online store's features are for


@pytest.fixture(scope="module")
def served(online_state: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from tests.fixtures.state_copy import copy_state

    home = tmp_path_factory.mktemp("serving") / "home"
    copy_state(online_state["home"], home)
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "RANKFLOW_HOME": str(home), "RANKFLOW_SERVICE_URL": url}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [
        "--set",
        "serving.alias_poll_seconds=0.3",
        "--set",
        "serving.log.flush_seconds=0.2",
        "--set",
        "serving.canary_share=0.5",
        "--set",
        "serving.max_candidates=50",
    ]
    with scoring_service(env, home.parent / "service.log", *args) as process:
        uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        yield {
            **online_state,
            "home": home,
            "url": url,
            "process": process,
            "client": MlflowClient(tracking_uri=uri, registry_uri=uri),
        }


def _score(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/score", json=body, timeout=30)


@pytest.fixture(scope="module")
def known(served: dict) -> dict[str, Any]:
    """Ids the state knows: a user with a daily-feature row for the served day, and items."""
    exports = StatePaths(served["home"]).exports
    users = pq.read_table(exports / "user_daily_features").to_pandas()
    day = pd.Timestamp(WHEN).normalize()
    active = sorted(users.loc[users["feature_ts"] == day, "user_id"].unique())
    items = sorted(pq.read_table(exports / "item_attributes.parquet").to_pandas()["item_id"])
    return {"user": int(active[0]), "items": [int(i) for i in items[:10]]}


def test_scores_and_ranks_candidates_with_the_champion(served: dict, known: dict) -> None:
    body = {
        "user_id": known["user"],
        "item_ids": known["items"][:5],
        "device": "mobile",
        "time": WHEN,
    }
    response = _score(served["url"], body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["arm"] in ("champion", "challenger")
    assert data["model"]["name"] == served["model"]
    items = data["items"]
    assert sorted(i["item_id"] for i in items) == sorted(body["item_ids"])
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5]
    p = [i["p_click"] for i in items]
    assert p == sorted(p, reverse=True) and all(0 < v < 1 for v in p)
    assert not data["unknown_user"] and data["unknown_items"] == 0


def test_unknown_user_and_item_are_scored_and_counted(served: dict, known: dict) -> None:
    body = {
        "user_id": 10**15,
        "item_ids": [known["items"][0], 10**15],
        "device": "tablet",
        "time": WHEN,
    }
    response = _score(served["url"], body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["unknown_user"] and data["unknown_items"] == 1
    assert data["missing_features"] > 0
    metrics = httpx.get(f"{served['url']}/metrics").text
    assert 'rankflow_unknown_entities_total{entity="user"}' in metrics
    assert 'rankflow_unknown_entities_total{entity="item"}' in metrics


def test_a_time_before_the_online_rows_is_422_not_a_value_from_its_future(
    served: dict, known: dict
) -> None:
    """The online store holds each entity's latest row, stamped at the served day's midnight:
    the evening before, the valid values are older rows the store no longer has."""
    body = {"user_id": known["user"], "item_ids": known["items"][:3], "device": "mobile"}
    before = _score(served["url"], {**body, "time": "2026-03-10T18:30:00Z"})
    assert before.status_code == 422, before.text
    detail = before.json()["detail"]
    assert detail.startswith("time: 2026-03-10T18:30:00Z is before"), detail
    assert "'user_daily_stats' (stamped 2026-03-11T00:00:00Z)" in detail
    assert "cannot answer that time" in detail
    for at in ("2026-03-11T00:00:00Z", None):  # the rows' own time; none (now)
        response = _score(served["url"], {**body, "time": at} if at else body)
        assert response.status_code == 200, response.text
    metrics = httpx.get(f"{served['url']}/metrics").text
    assert 'rankflow_errors_total{kind="point_in_time"} 1.0' in metrics


GOOD = {"user_id": 7, "item_ids": [1, 2], "device": "mobile", "time": WHEN}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_id": "seven"}, "user_id"),
        ({"user_id": 7.5}, "user_id"),
        ({"user_id": -1}, "user_id"),
        ({"item_ids": [1, "2"]}, "item_ids.1"),
        ({"item_ids": [True]}, "item_ids.0"),
        ({"item_ids": []}, "item_ids"),
        ({"item_ids": list(range(1, 52))}, "item_ids"),  # max_candidates=50
        ({"item_ids": [1, 1]}, "item_ids"),
        ({"device": ""}, "device"),
        ({"device": "x" * 40}, "device"),
        ({"time": "yesterday"}, "time"),
        ({"time": "0001-01-01T00:00:00+05:00"}, "time"),  # overflowed converting to UTC
        ({"time": "9999-12-31T23:59:59-05:00"}, "time"),
        ({"positions": [1]}, "positions"),
        ({"positions": [1, 101]}, "positions.1"),
        ({"colour": "red"}, "colour"),
        ({"request_id": "has spaces"}, "request_id"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(served: dict, change: dict, field: str) -> None:
    response = _score(served["url"], {**GOOD, **change})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_missing_field_and_non_json_body_are_4xx(served: dict) -> None:
    response = _score(served["url"], {"user_id": 7, "item_ids": [1]})
    assert response.status_code == 422 and "device" in response.json()["detail"]
    response = httpx.post(
        f"{served['url']}/score", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    metrics = httpx.get(f"{served['url']}/metrics").text
    assert 'rankflow_errors_total{kind="validation"}' in metrics
    assert 'status="500"' not in metrics


def test_a_20_mb_body_is_413_declared_or_streamed_and_the_service_keeps_serving(
    served: dict,
) -> None:
    big = b'{"user_id": 7, "item_ids": [' + b"1," * (10 * 1024 * 1024) + b'1], "device": "m"}'
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=served["url"], timeout=60) as client:
        declared = client.post("/score", content=big, headers=headers)
        streamed = client.post("/score", content=iter(chunks), headers=headers)
        after = client.post("/score", json=GOOD)
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert "serving.max_body_bytes" in response.json()["detail"]
    assert after.status_code == 200, after.text


def test_metrics_are_prometheus_text(served: dict) -> None:
    _score(served["url"], GOOD)
    response = httpx.get(f"{served['url']}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        'rankflow_requests_total{endpoint="/score",status="200"}',
        "rankflow_request_latency_seconds_bucket",
        "rankflow_arm_requests_total",
        "rankflow_missing_features_total",
        f'rankflow_model_version{{arm="champion",model="{served["model"]}",'
        f'version="{served["champion"]}"}} 1.0',
        'rankflow_log_rows_total{outcome="dropped"} 0.0',
    ):
        assert name in text, name
    assert httpx.get(f"{served['url']}/healthz").json() == {"status": "ok"}


def test_the_serving_process_keeps_its_startup_objects_out_of_the_collector(served: dict) -> None:
    """``rankflow serve`` freezes what is alive once the service is open (app.create_app's
    ``freeze_gc``: a full collection over them stalled every request in flight ~300 ms)."""
    ready = httpx.get(f"{served['url']}/readyz").json()
    assert ready["gc_frozen_objects"] > 10_000, ready


def test_served_rows_are_feast_logs_joined_with_their_scores(served: dict, known: dict) -> None:
    from rankflow.features.store import open_store
    from rankflow.serving.served_log import bind_logging_destination, served_log_dir

    shown = known["items"][5:8]
    body = {**GOOD, "user_id": known["user"], "request_id": "log-check-1", "item_ids": shown}
    assert _score(served["url"], body).status_code == 200
    paths = StatePaths(served["home"])
    deadline = time.monotonic() + 60
    frame = None
    while time.monotonic() < deadline:
        from rankflow.serving.served_log import read_served_log

        frame = read_served_log(paths, "ctr_ranker_v1")
        if not frame.empty and (frame["__request_id"] == "log-check-1").sum() == 3:
            break
        time.sleep(0.3)
    rows = frame[frame["__request_id"] == "log-check-1"]
    assert sorted(rows["item_id"]) == sorted(shown)
    assert set(rows["model_version"]) <= {served["champion"], served["other"]}
    assert (rows["user_daily_stats__user_ctr_28d__status"] == 1).all()
    assert sorted(rows["rank"]) == [1, 2, 3]
    # Feast reads the same files back through its own logging source and schema.
    with open_store(Settings(home=paths.root)) as store:
        service = store.get_feature_service("ctr_ranker_v1")
        bind_logging_destination(service, served_log_dir(paths, "ctr_ranker_v1"))
        job = store._get_provider().retrieve_feature_service_logs(
            feature_service=service,
            start_date=datetime(2026, 3, 11, tzinfo=UTC),
            end_date=datetime(2026, 3, 12, tzinfo=UTC) + timedelta(hours=1),
            config=store.config,
            registry=store.registry,
        )
        logs = job.to_df()
    assert "log-check-1" in set(logs["__request_id"])
    assert "__log_date" not in logs.columns  # dropped on read, as STACK-NOTES says


def _versions_seen(url: str, users: range) -> dict[int, tuple[str, str]]:
    out = {}
    for user in users:
        data = _score(url, {**GOOD, "user_id": user}).json()
        out[user] = (data["arm"], data["model"]["version"])
    return out


def test_alias_moves_are_picked_up_while_serving(served: dict) -> None:
    client, model = served["client"], served["model"]
    champion, other = served["champion"], served["other"]
    users = range(1, 41)
    before = _versions_seen(served["url"], users)
    assert {v for _, v in before.values()} == {champion}  # no challenger yet: all champion

    client.set_registered_model_alias(model, "challenger", other)
    deadline = time.monotonic() + 60
    seen = before
    while time.monotonic() < deadline:
        seen = _versions_seen(served["url"], users)
        if any(arm == "challenger" for arm, _ in seen.values()):
            break
        time.sleep(0.3)
    seen = _versions_seen(served["url"], users)  # a full sweep after the swap
    for user, (arm, version) in seen.items():
        expected = "challenger" if canary_bucket(user) < 0.5 else "champion"
        assert arm == expected, user  # a stable hash of the user id picks the arm
        assert version == (other if arm == "challenger" else champion)

    # Promote the other version to champion and drop the challenger: every user follows.
    client.delete_registered_model_alias(model, "challenger")
    client.set_registered_model_alias(model, "champion", other)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = _versions_seen(served["url"], users)
        if {v for _, v in seen.values()} == {other}:
            break
        time.sleep(0.3)
    assert {(a, v) for a, v in seen.values()} == {("champion", other)}
    assert "rankflow_model_swaps_total" in httpx.get(f"{served['url']}/metrics").text
    assert served["process"].poll() is None  # no restart


def test_a_champion_that_cannot_be_loaded_is_named_as_such_not_as_missing(
    online_copy: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,
) -> None:
    """A checkpoint whose saved model config this code cannot read (here a key it does not
    know, as after a downgrade) is refused loudly, and the replay says the champion exists but
    cannot be loaded, with the reason, instead of advising a first `rankflow run`."""
    import hashlib
    import json

    from mlflow.artifacts import download_artifacts

    from rankflow.cli import main

    uri, model = online_copy["tracking_uri"], online_copy["model"]
    client = MlflowClient(uri, uri)
    champion = client.get_model_version_by_alias(model, "champion")
    # A new version from a changed copy of the champion's files (the copied state's versions
    # point at the shared state's artifacts, which must stay as they are).
    local = Path(
        download_artifacts(
            artifact_uri=client.get_model_version_download_uri(model, champion.version),
            dst_path=str(tmp_path / "broken"),
            tracking_uri=uri,
        )
    )
    saved = list(local.rglob("model_config.json"))
    assert saved, f"no saved model config under {local}"
    for path in saved:  # written as a newer rankflow would: the manifest agrees with the file
        data = json.loads(path.read_text())
        data["warm_start"]["retired_option"] = 1
        path.write_text(json.dumps(data))
        manifest = json.loads((path.parent / "manifest.json").read_text())
        manifest["files"]["model_config.json"] = {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        (path.parent / "manifest.json").write_text(json.dumps(manifest))
    broken = client.create_model_version(model, source=str(local), run_id=champion.run_id)
    client.set_registered_model_alias(model, "champion", broken.version)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    home = str(online_copy["home"])
    code = main(["--home", home, "replay", "--mode", "closed", "--impressions", "200"])
    err = capsys.readouterr().err
    assert code != 0
    assert "could not be loaded" in err and "retired_option" in err, err
    assert "run `rankflow run`" not in err


def test_a_model_trained_on_another_feature_service_is_refused_keeping_the_last_good(
    online_copy: dict, tmp_path: Path
) -> None:
    """The service serves ``feature_service``'s features: a version whose model records
    another service is not loaded. A running service keeps its last good model for that arm
    and says why; one that never had a good model is not ready and says why."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from rankflow.config import parse_config
    from rankflow.serving.holder import ModelRefused
    from rankflow.serving.schemas import score_request_model
    from rankflow.serving.service import NoModelError, ScoringService
    from rankflow.tracking.pyfunc import FEATURE_SERVICE_KEY, recorded_feature_service

    uri, model = online_copy["tracking_uri"], online_copy["model"]
    client = MlflowClient(uri, uri)
    good = online_copy["champion"]
    # A version whose files are the champion's but record another feature service (a copy:
    # the copied state's versions point at the shared state's artifacts).
    local = Path(
        download_artifacts(
            artifact_uri=client.get_model_version_download_uri(model, good),
            dst_path=str(tmp_path / "other-service"),
            tracking_uri=uri,
        )
    )
    assert recorded_feature_service(local) == "ctr_ranker_v1"
    (mlmodel,) = local.rglob("MLmodel")
    saved = Model.load(str(mlmodel))
    saved.metadata = {**(saved.metadata or {}), FEATURE_SERVICE_KEY: "ctr_ranker_v0"}
    saved.save(str(mlmodel))
    other = client.create_model_version(model, source=str(local), run_id=None).version

    settings = Settings(home=online_copy["home"], mlflow_tracking_uri=uri)
    scoring = parse_config({}).scoring()
    assert scoring.feature_service == "ctr_ranker_v1"
    exports = settings.paths.exports
    user = int(pq.read_table(exports / "user_daily_features").to_pandas()["user_id"].iloc[0])
    items = pq.read_table(exports / "item_attributes.parquet").to_pandas()["item_id"]
    request = score_request_model(50)(
        user_id=user, item_ids=[int(i) for i in items[:3]], device="mobile", time=WHEN
    )
    refused = f"{model} v{other} (@champion) was trained on feature service 'ctr_ranker_v0'"

    service = ScoringService(settings, scoring)
    service.start(poll=False)
    try:
        assert service.holder.arms["champion"].version == good
        client.set_registered_model_alias(model, "champion", other)
        with pytest.raises(ModelRefused, match=r"this service serves 'ctr_ranker_v1'"):
            service.holder.refresh()
        assert service.holder.arms["champion"].version == good  # the last good model
        assert service.score(request).model.version == good
    finally:
        service.close()

    fresh = ScoringService(settings, scoring)
    fresh.start(poll=False)
    try:
        assert not fresh.ready
        assert fresh.holder.last_error is not None and refused in fresh.holder.last_error
        with pytest.raises(NoModelError, match=r"no @champion of 'rankflow-ctr' loaded: "):
            fresh.score(request)
    finally:
        fresh.close()

    # A version logged before models recorded their feature service was trained through
    # ctr_ranker_v1 (the only service training could use then): it still loads.
    unrecorded = Model.load(str(mlmodel))
    unrecorded.metadata = {
        k: v for k, v in (unrecorded.metadata or {}).items() if k != FEATURE_SERVICE_KEY
    }
    unrecorded.save(str(mlmodel))
    assert recorded_feature_service(local) is None
    legacy = client.create_model_version(model, source=str(local), run_id=None).version
    client.set_registered_model_alias(model, "champion", legacy)
    upgraded = ScoringService(settings, scoring)
    upgraded.start(poll=False)
    try:
        assert upgraded.ready
        assert upgraded.score(request).model.version == str(legacy)
    finally:
        upgraded.close()


def _ids_of(home: Path) -> dict[str, Any]:
    """A user with a row for the served day and a few items of a state dir's exports."""
    exports = StatePaths(home).exports
    users = pq.read_table(exports / "user_daily_features").to_pandas()
    day = pd.Timestamp(WHEN).normalize()
    user = int(sorted(users.loc[users["feature_ts"] == day, "user_id"].unique())[0])
    items = sorted(pq.read_table(exports / "item_attributes.parquet").to_pandas()["item_id"])
    return {"user": user, "items": [int(i) for i in items[:5]]}


@dataclass
class InProcess:
    """The real app over a private state copy, with what a test needs to talk to it."""

    client: Any  # fastapi.testclient.TestClient
    settings: Settings
    ids: dict[str, Any]


@pytest.fixture
def in_process(online_copy: dict) -> Iterator[InProcess]:
    """The app over a private copy of the state, in process (FastAPI's TestClient: its lifespan
    opens the service as ``rankflow serve`` does), without the alias poller."""
    import warnings

    from rankflow.config import parse_config
    from rankflow.serving.app import create_app

    with warnings.catch_warnings():  # the lock's httpx is what TestClient runs on
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    settings = Settings(home=online_copy["home"], mlflow_tracking_uri=online_copy["tracking_uri"])
    scoring = parse_config({"serving": {"log": {"flush_seconds": 0.2}}}).scoring()
    with TestClient(create_app(settings, scoring, poll=False)) as client:
        yield InProcess(client, settings, _ids_of(online_copy["home"]))


def test_a_locked_online_store_is_a_prompt_503_with_retry_after(in_process: InProcess) -> None:
    """A writer's exclusive lock on the SQLite online store (a materialization committing):
    each request gives up after serving.online_timeout_seconds (1 s), not sqlite3's 5 s, and
    says when to retry; once the lock is gone the service answers again."""
    import sqlite3

    app, ids = in_process.client, in_process.ids
    body = {"user_id": ids["user"], "item_ids": ids["items"][:3], "device": "m", "time": WHEN}
    assert app.post("/score", json=body).status_code == 200  # first-use costs out of the timing
    writer = sqlite3.connect(in_process.settings.paths.feast / "online_store.db")
    writer.isolation_level = None
    writer.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        locked = app.post("/score", json=body)
        seconds = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert locked.status_code == 503, locked.text
    assert locked.headers["retry-after"] == "1"
    detail = locked.json()["detail"]
    assert "online store (sqlite) cannot be read now: database is locked" in detail, detail
    assert "Retry-After: 1 s" in detail
    assert seconds < 3, seconds  # sqlite3's own wait alone is 5 s
    assert app.post("/score", json=body).status_code == 200
    metrics = app.get("/metrics").text
    assert 'rankflow_requests_total{endpoint="/score",status="503"} 1.0' in metrics
    assert 'rankflow_errors_total{kind="unavailable"} 1.0' in metrics


def _log_counts(app: Any, written: int, seconds: float = 60) -> dict[str, int]:
    """The served log's counts from /readyz once ``written`` rows are written (or time is up)."""
    deadline = time.monotonic() + seconds
    while True:
        counts = app.get("/readyz").json()["log"]
        if counts["written"] >= written or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def test_log_folders_removed_while_serving_are_recreated(in_process: InProcess) -> None:
    """A clean-up that removes the log folders under a running service: the next flush makes
    them again and writes its rows; nothing is dropped."""
    import shutil

    app, ids, paths = in_process.client, in_process.ids, in_process.settings.paths
    body = {"user_id": ids["user"], "item_ids": ids["items"][:2], "device": "m", "time": WHEN}
    assert app.post("/score", json=body).status_code == 200
    assert _log_counts(app, 2) == {"written": 2, "dropped": 0}
    shutil.rmtree(paths.logs)
    assert app.post("/score", json=body).status_code == 200
    assert _log_counts(app, 4) == {"written": 4, "dropped": 0}
    for folder in ("features", "scores"):
        assert list((paths.logs / "ctr_ranker_v1" / folder).glob("*.parquet")), folder
    assert 'rankflow_log_rows_total{outcome="dropped"} 0.0' in app.get("/metrics").text


def _files_of(uri: str, model: str, version: str, folder: Path) -> Path:
    """A local copy of a version's files (the copied state's versions point at the shared
    state's artifacts, which must stay as they are)."""
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(uri, uri)
    source = client.get_model_version_download_uri(model, version)
    return Path(download_artifacts(artifact_uri=source, dst_path=str(folder), tracking_uri=uri))


def _version_from_files(uri: str, model: str, of: str, folder: Path) -> tuple[str, Path]:
    """A new version of ``model`` from a local copy of version ``of``'s files, and the copy."""
    client = MlflowClient(uri, uri)
    local = _files_of(uri, model, of, folder)
    run_id = client.get_model_version(model, of).run_id
    version = client.create_model_version(model, source=str(local), run_id=run_id).version
    return str(version), local


def test_deleting_the_champions_version_keeps_the_last_good_model_serving(
    in_process: InProcess, online_copy: dict, tmp_path: Path
) -> None:
    """Deleting a version removes the aliases on it: the service keeps scoring with the model
    it has, and /readyz says why, instead of answering 503 to every request."""
    app, ids, model = in_process.client, in_process.ids, online_copy["model"]
    uri = online_copy["tracking_uri"]
    client = MlflowClient(uri, uri)
    version, _ = _version_from_files(uri, model, online_copy["champion"], tmp_path / "copy")
    client.set_registered_model_alias(model, "champion", version)
    holder = app.app.state.service.holder
    holder.refresh()
    body = {"user_id": ids["user"], "item_ids": ids["items"][:2], "device": "m", "time": WHEN}
    assert app.post("/score", json=body).json()["model"]["version"] == version

    client.delete_model_version(model, version)
    holder.refresh()
    response = app.post("/score", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["version"] == version
    ready = app.get("/readyz")
    assert ready.status_code == 200
    kept = ready.json()["serving_last_good"]["champion"]
    assert "names no version" in kept and f"the last good v{version}" in kept, kept


def _loader(online_copy: dict, version: str) -> Any:
    """``load_version`` of ``version`` through the state's model cache, as the service (and the
    gap check) load a version."""
    from functools import partial

    from rankflow.serving.holder import load_version

    uri = online_copy["tracking_uri"]
    cache = StatePaths(online_copy["home"]).serving_models
    return partial(
        load_version,
        MlflowClient(uri, uri),
        online_copy["model"],
        version,
        "champion",
        cache,
        feature_service="ctr_ranker_v1",
    )


def test_a_model_cached_from_a_corrupt_artifact_is_fetched_again_once_it_is_repaired(
    online_copy: dict, tmp_path: Path
) -> None:
    from models.checkpoint import CheckpointError

    uri, model = online_copy["tracking_uri"], online_copy["model"]
    version, local = _version_from_files(uri, model, online_copy["champion"], tmp_path / "copy")
    (manifest,) = local.rglob("manifest.json")
    weights = manifest.parent / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))  # same size, bad bytes
    load = _loader(online_copy, version)
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load()
    weights.write_bytes(good)  # the registry's artifact repaired
    assert load().version == version


def test_the_model_cache_is_keyed_by_the_artifacts_content(
    online_copy: dict, tmp_path: Path
) -> None:
    """A version's artifact replaced under the same location (here by the other family's
    model) is what the next load serves, not the copy cached before."""
    import shutil

    uri, model = online_copy["tracking_uri"], online_copy["model"]
    version, local = _version_from_files(uri, model, online_copy["champion"], tmp_path / "copy")
    load = _loader(online_copy, version)
    assert load().kind == online_copy["champion_kind"]
    other = _files_of(uri, model, online_copy["other"], tmp_path / "other")
    shutil.rmtree(local)
    shutil.copytree(other, local)
    assert load().kind != online_copy["champion_kind"]
