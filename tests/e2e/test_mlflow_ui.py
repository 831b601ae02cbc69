"""The MLflow UI in a real browser: the registered model's page shows the champion.

``mlflow server`` serves the session's built state (a small ``rankflow run``:
tests/fixtures/online_state.py) on a free loopback port; headless Chromium (Debian's, ``make
browser-deps``) driven by Playwright opens the serving model's page and the champion version's
page. Screenshots are kept under
``$RANKFLOW_TEST_ARTIFACTS`` if set, else in a temporary folder; their paths are printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rankflow.settings import Settings
from rankflow.tracking.server import MlflowServer, start_mlflow_server

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
# Generous bounds for a page on a busy 2-core machine; they fail a hung UI, they time nothing.
UI_TIMEOUT_MS = 120_000


@dataclass
class Served:
    home: Path
    model: str
    champion: str
    champion_kind: str
    server: MlflowServer
    artifacts: Path


@pytest.fixture(scope="module")
def served(online_state: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``mlflow server`` over the session's built state (it only reads it)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    home = online_state["home"]
    default = tmp_path_factory.mktemp("mlflow-ui") / "test-artifacts"
    artifacts = Path(os.environ.get("RANKFLOW_TEST_ARTIFACTS") or default)
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts / "mlflow-server.log"
    with start_mlflow_server(Settings(home=home), log_file=log) as server:
        yield Served(
            home,
            online_state["model"],
            online_state["champion"],
            online_state["champion_kind"],
            server,
            artifacts,
        )


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

    version = served.champion
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{served.server.url}/#/models/{served.model}")
        expect(page.get_by_role("heading", name=served.model)).to_be_visible(timeout=UI_TIMEOUT_MS)
        # The alias chip, as a user sees it ("@ champion"), in the row of the champion version.
        chip = re.compile(r"^@\s*champion$")
        row = page.locator("[role=row], tr").filter(has=page.get_by_text(chip))
        expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(row.get_by_role("link", name=f"Version {version}", exact=True)).to_be_visible()
        shot = served.artifacts / f"mlflow-ui-{served.model}.png"
        page.screenshot(path=str(shot), full_page=True)
        _show(capsys, shot)
        assert shot.stat().st_size > 0
    finally:
        page.close()


def test_champion_version_page_says_why_the_alias_moved(
    served: Served, browser, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect

    version = served.champion
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        page.goto(f"{served.server.url}/#/models/{served.model}/versions/{version}")
        expect(page.get_by_role("heading", name=f"Version {version}")).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        expect(page.get_by_text(re.compile(r"^@\s*champion$")).first).to_be_visible()
        expect(page.get_by_text("became @champion", exact=False).first).to_be_visible()
        title = {"wide_deep": "Wide & Deep", "dcn": "DCN-V2"}[served.champion_kind]
        expect(page.get_by_text(title, exact=True).first).to_be_visible()
        shot = served.artifacts / f"mlflow-ui-{served.model}-v{version}.png"
        page.screenshot(path=str(shot), full_page=True)
        _show(capsys, shot)
    finally:
        page.close()
