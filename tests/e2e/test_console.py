"""The web console (issue #15) in a real browser: headless Chromium driven by chromedriver
(Selenium). A message that cannot be delivered yet is held from the console, released, and
seen delivered in the console's delivery log and in the mailbox; the terminal tab shows a SEND;
with a token, the page asks for it before it shows anything."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, wait_until
from test_admin import get
from test_watch import raw_transaction, terminal_user_config

USER = "user@test.example"
BROWSER_WAIT = 20.0

if not (shutil.which("chromium") and shutil.which("chromedriver")):
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the console tests: install chromium and chromium-driver")
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(IO_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver, probe, what: str):
    """Polls `probe(driver)` (elements are re-read each time: the console redraws its tables)
    until it returns something true; fails after BROWSER_WAIT seconds."""
    deadline = time.monotonic() + BROWSER_WAIT
    while True:
        try:
            found = probe(driver)
            if found:
                return found
        except StaleElementReferenceException:
            pass
        if time.monotonic() > deadline:
            errors = driver.find_element(By.ID, "status").text
            pytest.fail(f"timed out waiting for {what} (status: {errors!r})")
        time.sleep(0.2)


def tab(driver, name):
    driver.find_element(By.CSS_SELECTOR, f'nav button[data-tab="{name}"]').click()


def row_state(driver, queue_id):
    rows = driver.find_elements(By.CSS_SELECTOR, f'#queue-rows tr[data-id="{queue_id}"]')
    return rows[0].find_element(By.CSS_SELECTOR, "td.state").text if rows else None


def select_row(driver, queue_id):
    box = until(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#queue-rows tr[data-id="{queue_id}"] input[type="checkbox"]'),
        "the message's row")[0]
    box.click()


def block_mailbox(srv, address) -> Path:
    """Makes local delivery to `address` fail for now: a file where its domain's Maildir
    directory would go (deferred, never bounced: the server takes it for a passing fault)."""
    domain = address.split("@")[1]
    path = srv.data_dir / "mail" / domain
    if not path.parent.exists():
        # Made as the server makes it: owned by the account it runs as.
        path.parent.mkdir()
        owner = srv.data_dir.stat()
        os.chown(path.parent, owner.st_uid, owner.st_gid)
    path.write_text("not a directory\n")
    return path


def test_hold_release_and_see_it_delivered(server_factory, browser):
    srv = server_factory()
    blocked = block_mailbox(srv, USER)
    assert raw_transaction(srv, "MAIL", USER, "console")[1][0] == 250

    def deferred():
        page = json.loads(get(srv, "/api/queue?state=deferred")[1])
        return page["messages"][0]["id"] if page["total"] == 1 else None

    queue_id = wait_until(deferred, 30, "the message deferred")
    browser.get(f"http://127.0.0.1:{srv.admin_port}/")
    until(browser, lambda d: d.find_element(By.ID, "hostname").text == "mx.test.example",
          "the dashboard")
    until(browser, lambda d: d.find_element(By.ID, "q-deferred").text == "1", "1 deferred")
    assert not browser.find_element(By.ID, "login").is_displayed(), "no token, no prompt"

    tab(browser, "queue")
    until(browser, lambda d: row_state(d, queue_id) == "deferred", "the deferred row")
    select_row(browser, queue_id)
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="hold"]').click()
    until(browser, lambda d: "held 1 message" in d.find_element(By.ID, "status").text,
          "the hold acknowledged")
    until(browser, lambda d: row_state(d, queue_id) == "held", "the row held")
    assert json.loads(get(srv, "/api/queue?state=held")[1])["total"] == 1

    # The message view: envelope and header section.
    browser.find_element(By.CSS_SELECTOR, f'#queue-rows tr[data-id="{queue_id}"] code').click()
    until(browser, lambda d: "Subject: console" in d.find_element(By.ID, "message-headers").text,
          "the message's header section")
    assert "deferred" in browser.find_element(By.ID, "message-log").text, "its attempts"

    # The mailbox is fixed; released from the console, the message is delivered.
    blocked.unlink()
    select_row(browser, queue_id)
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="release"]').click()
    [path] = srv.wait_mail(USER)
    assert b"hello console" in path.read_bytes()
    until(browser, lambda d: row_state(d, queue_id) is None, "the row gone")
    tab(browser, "deliveries")

    def delivered_row(d):
        for row in d.find_elements(By.CSS_SELECTOR, "#delivery-rows tr"):
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            if cells[1:4] == ["delivered", queue_id, USER]:
                return cells
        return None

    until(browser, delivered_row, "the delivery in the console's log")
    tab(browser, "dashboard")
    until(browser, lambda d: d.find_element(By.ID, "t-delivered").text == "1", "1 delivered")
    tab(browser, "config")
    until(browser, lambda d: "hostname: mx.test.example"
          in d.find_element(By.ID, "config-summary").text, "the configuration")


def test_the_terminal_tab_shows_a_send(server_factory, browser):
    srv = server_factory()
    browser.get(f"http://127.0.0.1:{srv.admin_port}/")
    tab(browser, "terminal")
    browser.find_element(By.CSS_SELECTOR, '#terminal-form input[name="user"]').send_keys(USER)
    browser.find_element(By.CSS_SELECTOR, '#terminal-form button[type="submit"]').click()
    until(browser, lambda d: USER in d.find_element(By.ID, "terminal-state").text,
          "the terminal open")
    code, (final, _) = raw_transaction(srv, "SEND", USER, "to the browser")
    assert (code, final) == (250, 250)
    message = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".terminal-message"),
                    "the message on the terminal")[0].text
    assert "hello to the browser" in message and "(SEND)" in message, message
    browser.find_element(By.ID, "terminal-close").click()
    wait_until(lambda: raw_transaction(srv, "SEND", USER, "closed")[0] == 450 or None, 20,
               "SEND refused once the tab's terminal closed")


def test_a_token_is_asked_for_and_sent_in_a_header(server_factory, browser, tmp_path):
    token = "console-token-0123456789"
    (tmp_path / "admin.token").write_text(token + "\n")
    srv = server_factory(extra=f'[admin]\naddress = "127.0.0.1:0"\n'
                               f'token_file = "{tmp_path / "admin.token"}"\n')
    browser.get(f"http://127.0.0.1:{srv.admin_port}/")
    until(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the token prompt")
    assert browser.find_element(By.ID, "q-active").text == "-"
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, '#login button').click()
    until(browser, lambda d: d.find_element(By.ID, "hostname").text == "mx.test.example",
          "the dashboard with the token")
    assert browser.get_cookies() == [], "the token is never a cookie"


def test_a_mail_user_logs_in_to_their_own_terminal(server_factory, browser, yizhan_bin, tmp_path):
    srv = server_factory(extra=terminal_user_config(yizhan_bin, tmp_path, "s3cret"))
    browser.get(f"http://127.0.0.1:{srv.admin_port}/")
    tab(browser, "terminal")
    form = browser.find_element(By.ID, "terminal-form")
    form.find_element(By.NAME, "user").send_keys("term@test.example")
    form.find_element(By.NAME, "password").send_keys("wrong")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    until(browser, lambda d: "wrong address or password" in d.find_element(By.ID, "status").text,
          "the wrong password refused")
    form.find_element(By.NAME, "password").clear()
    form.find_element(By.NAME, "password").send_keys("s3cret")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    until(browser, lambda d: "term@test.example" in d.find_element(By.ID, "terminal-state").text,
          "the user's terminal open")
    code, (final, _) = raw_transaction(srv, "SEND", "term@test.example", "for the user")
    assert (code, final) == (250, 250)
    until(browser, lambda d: "hello for the user" in d.find_element(By.ID, "terminal-messages").text,
          "the message on the user's terminal")
