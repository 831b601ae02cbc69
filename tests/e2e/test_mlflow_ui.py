"""The MLflow UI in a real browser: the registered model's page shows the champion.

A small pipeline run and train step fill a state dir; ``mlflow server`` serves it on a free
loopback port; headless Chromium (Debian's, ``make browser-deps``) driven by Playwright opens
the serving model's page and the champion version's page. Screenshots are kept under
``$RANKFLOW_TEST_ARTIFACTS`` if set, else ``<state dir>/test-artifacts/``; their paths are
printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.build_features import build_features
from flows.params import ConfigParams
from rankflow.config import load_config
from rankflow.settings import Settings
from rankflow.tracking.server import MlflowServer, start_mlflow_server
from rankflow.training.step import TrainOutcome, train_and_register
from tests.fixtures.synthetic import small_model_config

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SMALL = {
    "simulation.n_users": 300,
    "simulation.n_items": 120,
    "simulation.n_impressions": 15000,
    "simulation.days": 8,
    "simulation.end_date": "2026-03-11",
    "training_set.valid_days": 2,
    "training_set.test_days": 2,
    "registry.gates.max_ece": 0.1,
    "registry.gates.calibration_ratio": [0.5, 2.0],
    "registry.gates.min_auc_lift_over_baseline": None,
}
# Generous bounds for a page on a busy 2-core machine; they fail a hung UI, they time nothing.
UI_TIMEOUT_MS = 120_000


@dataclass
class Served:
    home: Path
    outcome: TrainOutcome
    server: MlflowServer
    artifacts: Path


@pytest.fixture(scope="module")
def served(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    home = tmp_path_factory.mktemp("mlflow-ui-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKFLOW_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = load_config(overrides=SMALL)
        settings = Settings(home=home)
        build_features(config=ConfigParams(overrides=SMALL))
        outcome = train_and_register(
            config.train_step(),
            settings,
            model_config=small_model_config({"training.max_epochs": 1}),
        )
        assert outcome.champion_version is not None, outcome.decision
        artifacts = Path(os.environ.get("RANKFLOW_TEST_ARTIFACTS") or home / "test-artifacts")
        artifacts.mkdir(parents=True, exist_ok=True)
        with start_mlflow_server(settings, log_file=artifacts / "mlflow-server.log") as server:
            yield Served(home, outcome, server, artifacts)


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


def _show(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    with capsys.disabled():
        print(f"\n[mlflow-ui] screenshot kept at {path}")


def test_registered_model_page_shows_the_champion_alias_and_version(
    served: Served, browser, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect

    outcome = served.outcome
    version = outcome.champion_version
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{served.server.url}/#/models/{outcome.serving_model}")
        expect(page.get_by_role("heading", name=outcome.serving_model)).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        # The alias chip, as a user sees it ("@ champion"), in the row of the champion version.
        chip = re.compile(r"^@\s*champion$")
        row = page.locator("[role=row], tr").filter(has=page.get_by_text(chip))
        expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(row.get_by_role("link", name=f"Version {version}", exact=True)).to_be_visible()
        shot = served.artifacts / f"mlflow-ui-{outcome.serving_model}.png"
        page.screenshot(path=str(shot), full_page=True)
        _show(capsys, shot)
        assert shot.stat().st_size > 0
    finally:
        page.close()


def test_champion_version_page_says_why_the_alias_moved(
    served: Served, browser, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect

    outcome = served.outcome
    version = outcome.champion_version
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        page.goto(f"{served.server.url}/#/models/{outcome.serving_model}/versions/{version}")
        expect(page.get_by_role("heading", name=f"Version {version}")).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        expect(page.get_by_text(re.compile(r"^@\s*champion$")).first).to_be_visible()
        expect(page.get_by_text("became @champion", exact=False).first).to_be_visible()
        kind = outcome.champion["kind"] if outcome.champion else ""
        title = {"wide_deep": "Wide & Deep", "dcn": "DCN-V2"}[kind]
        expect(page.get_by_text(title, exact=True).first).to_be_visible()
        shot = served.artifacts / f"mlflow-ui-{outcome.serving_model}-v{version}.png"
        page.screenshot(path=str(shot), full_page=True)
        _show(capsys, shot)
    finally:
        page.close()
