"""The web console in a real browser: Debian's chromium, driven by Selenium through Debian's
chromium-driver, against a real relay (Redis, a Celery worker, the vendor sandbox).

The vendor refuses for good (401, then 400), so two letters of two reasons are dead-lettered;
then the vendor is fixed.  In chromium the test opens the status page, goes to the dead
letters, filters by reason, opens the one 401 letter, replays it (dry run, then confirmation),
and sees -- at the vendor sandbox -- the event delivered, and the letter gone from the page
while the 400 one stays.

Nothing is downloaded: the browser and the driver are the system's (``.ci/run`` and ``make
browser`` install them with apt-get), Selenium Manager is kept offline (``SE_OFFLINE``).
Without chromium the test is skipped, except in CI, where it fails.  With
``CONSOLE_SCREENSHOTS=1`` the screenshots are copied to docs/ (``docs/console-*.png``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conversion_relay.console import ConsoleApp, ConsoleServer, Guard
from tests.support import wait_for

DOCS = Path(__file__).resolve().parents[1] / "docs"

os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


def _system_browser() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    message = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run installs them, so CI must have them")
    pytest.skip(message)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[object]:
    binary, driver_path = _system_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(options=options, service=service)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def click_through(browser: object, by: str, value: str) -> None:
    """Click a link or button and wait until the next page replaced this one: a click returns
    before a form's navigation is done.  The old page is marked, the new one is not."""
    browser.execute_script("window.consoleTestOldPage = true")
    browser.find_element(by, value).click()
    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script(
            "return window.consoleTestOldPage === undefined && document.readyState === 'complete'"
        )
    )


def screenshot(browser: object, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    assert browser.save_screenshot(str(path)), name
    if os.environ.get("CONSOLE_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / path.name)


def purchase(event_id: str) -> dict[str, object]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_source_url": "https://shop.example/thank-you",
        "user_data": {"em": [f"{event_id}@example.com"], "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": 30.0, "currency": "EUR", "order_id": event_id},
    }


def dead_lettered(stack, reason: str, event_id: str) -> object:
    def found() -> object:
        return next((x for x in stack.dead_letters("gravity") if x.reason == reason), None)

    letter = wait_for(found, timeout=30, what=f"a {reason} dead letter")
    assert [json.loads(p)["event_id"] for p in letter.parts] == [event_id]
    return letter


def test_an_operator_filters_dead_letters_and_replays_one_in_chromium(make_stack, gravity, chromium, tmp_path):
    stack = make_stack()
    stack.start_worker()
    gravity.configure(fail_all_status=401)
    stack.relay.enqueue([purchase("refused-401")], destinations=["gravity"])
    unauthorized = dead_lettered(stack, "http_401", "refused-401")
    stack.wait_settled()
    gravity.configure(fail_all_status=400)
    stack.relay.enqueue([purchase("refused-400")], destinations=["gravity"])
    bad_request = dead_lettered(stack, "http_400", "refused-400")
    stack.wait_settled()
    gravity.configure(fail_all_status=None)
    assert gravity.events == []

    server = ConsoleServer(ConsoleApp(stack.admin, Guard()), "127.0.0.1", 0).start()
    try:
        browser = chromium
        browser.get(server.url + "/")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Status"
        headings = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#destinations thead th")]
        cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#destinations tbody tr td")]
        row = dict(zip(headings, cells))
        assert row["Destination"] == "gravity" and row["Dead letters"] == "2", row
        screenshot(browser, tmp_path, "status")

        click_through(browser, By.LINK_TEXT, "Dead letters")
        listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#letters a.letter")]
        assert sorted(listed) == sorted([unauthorized.id, bad_request.id])

        browser.find_element(By.NAME, "reason").send_keys("http_401")
        click_through(browser, By.ID, "apply-filters")
        assert "reason=http_401" in browser.current_url
        listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#letters a.letter")]
        assert listed == [unauthorized.id]
        screenshot(browser, tmp_path, "dead-letters")

        click_through(browser, By.LINK_TEXT, unauthorized.id)
        facts = dict(
            (row.find_elements(By.TAG_NAME, "td")[0].text, row.find_elements(By.TAG_NAME, "td")[1].text)
            for row in browser.find_elements(By.CSS_SELECTOR, "#letter tbody tr")
        )
        assert facts["Reason"] == "http_401" and facts["Status"] == "401" and facts["Destination"] == "gravity"
        assert json.loads(browser.find_element(By.ID, "payload").text)[0]["event_id"] == "refused-401"
        screenshot(browser, tmp_path, "letter")

        click_through(browser, By.ID, "replay")
        assert "Dry run: 1 dead letters (1 events) would be replayed" in browser.find_element(By.ID, "dry-run").text
        assert stack.admin.letters.get(unauthorized.id) is not None  # a dry run changes nothing
        click_through(browser, By.ID, "confirm")
        assert "Replayed 1 of 1 dead letters" in browser.find_element(By.ID, "done").text

        wait_for(
            lambda: [e for e in gravity.events if e.get("event_id") == "refused-401"],
            timeout=30,
            what="the replayed event at the vendor",
        )
        stack.wait_settled()
        browser.get(server.url + "/dead-letters?reason=http_401")
        assert browser.find_element(By.ID, "no-letters").text == "No dead letters match."
        click_through(browser, By.LINK_TEXT, "Dead letters")
        assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#letters a.letter")] == [bad_request.id]
        assert [e["event_id"] for e in gravity.events] == ["refused-401"]
    finally:
        server.stop()
