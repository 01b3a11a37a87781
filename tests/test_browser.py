"""The status page in a real headless browser (Debian's chromium, driven by Playwright).

Skipped with a reason on a machine without chromium; under CI (CI=true) or with
MB_REQUIRE_BROWSER=1 a missing browser fails instead. The screenshot is saved as
tests/artifacts/status.png.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from test_drain import event

from app import config
from app.buffer import Buffer
from conftest import STORE, message
from jobs import deadletters

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
USER, PASSWORD = "ops", "browser-pw-123"


def chromium_path():
    """Return the chromium to drive, or skip (fail under CI) when there is none."""
    found = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if found:
        return found
    reason = "no chromium on PATH: apt-get install chromium (.ci/run does)"
    if os.environ.get("CI") == "true" or os.environ.get("MB_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser():
    """A headless chromium, closed after the test."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


def test_status_page_shows_the_state_and_replays_a_dead_letter(
    start_bridge, standin, redis, settings, browser
):
    """The worker dead-letters an event the API refuses; a person sees it and the
    buffered events, presses Replay, and the worker delivers it at once."""
    bridge = start_bridge(
        linger_ms=600_000, dashboard_username=USER, dashboard_password=PASSWORD
    )
    member = f"{STORE}/phone:+15005550000"
    standin.refuse("errorCode", "30003", "recipient +15005550000 is not accepted.")
    refused = json.dumps({**event(0), "errorCode": "30003"})
    Buffer(redis).admit(
        member, [("SM" + "f" * 32, "failed", 8, refused)], linger_ms=0, comm_ttl_s=60
    )
    s = config.load(settings).check()
    deadline = time.monotonic() + 30
    while not deadletters.count(redis, s) and time.monotonic() < deadline:
        time.sleep(0.1)
    [letter] = deadletters.listing(redis, s)
    assert letter["reason"] == "refused" and letter["member"] == member
    standin.reset()
    for n in range(3):
        form = message(f"SM{n:032d}", "sent", to=f"+1500555000{n}")
        assert bridge.post("/twilio/messaging", form).status_code == 204

    page = browser.new_page(
        http_credentials={"username": USER, "password": PASSWORD},
        viewport={"width": 1200, "height": 900},
    )
    page.goto(bridge.url + "/status")
    assert page.title() == "memory-bridge status"
    assert page.inner_text("#buffered b") == "3"
    assert page.inner_text("#due b") == "3"
    assert page.inner_text("#dead b") == "1"
    assert page.inner_text("#upstream span").strip() == "ok"
    row = page.locator(f'tr[data-letter="{letter["id"]}"]')
    shown = row.inner_text()
    for part in ("refused", "phone:********0000", "recipient ********0000", STORE):
        assert part in shown, part
    assert "+15005550000" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "status.png"), full_page=True)

    row.get_by_role("button", name="Replay").click()
    page.wait_for_selector("#replayed")
    assert page.inner_text("#dead b") == "0"
    assert deadletters.count(redis, s) == 0
    # The replay made its lingering profile due now: the worker sends that buffer,
    # the replayed event first.
    standin.wait_for_events(2, timeout=30)
    [batch] = standin.batches()
    assert batch.events[0] == letter["events"][0]
    assert len(batch.events) == 2
    assert batch.events[1]["recipient"]["address"] == "+15005550000"
    # The stand-in records the batch before the drain settles and counts it, so
    # the page is read again until the count lands (a busy machine is slow).
    deadline = time.monotonic() + 30
    while True:
        page.reload()
        rows = page.locator("#minutes tr").all()[1:]
        delivered = [int(row.locator("td").nth(4).inner_text()) for row in rows]
        if sum(delivered) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert page.inner_text("#buffered b") == "2"
    assert sum(delivered) == 2  # in this minute's row, or the last one's


def test_rq_dashboard_renders_in_the_browser(start_bridge, redis, browser):
    """/rq shows rq-dashboard's worker list with the bridge's worker, signed in."""
    bridge = start_bridge(dashboard_username=USER, dashboard_password=PASSWORD)
    page = browser.new_page(http_credentials={"username": USER, "password": PASSWORD})
    page.goto(bridge.url + "/rq/0/view/workers")
    page.wait_for_selector("td:has-text('memory-bridge')", timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "rq.png"), full_page=True)
    anonymous = browser.new_context().request.get(bridge.url + "/rq/")
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
