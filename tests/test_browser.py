"""End to end in headless Chromium (Debian's `chromium`, driven by Playwright): sign in, create
a key, copy it with the button and read the clipboard, call the API with it, reload and see it
gone, revoke, and see the API answer key_revoked. Skipped when Chromium or Playwright is absent."""
import os
from pathlib import Path

import pytest
import requests

from serva import api as api_module, db, services
from serva.cli import cli as serva_cli

from test_dashboard import EMAIL, PASSWORD, make_account

CHROMIUM = os.environ.get("SERVA_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def api(base, key):
    return requests.post(f"{base}/api/v1", data={"action": "balance", "key": key}, timeout=10).json()


def test_sign_in_create_copy_reload_revoke(app, live_server, browser):
    make_account(app, balance="25.5")
    with app.app_context(), db.write() as conn:
        services.add(conn, id=1234, name="Instagram Followers", category="Instagram",
                     rate=890_000, min_quantity=100, max_quantity=100_000)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    page = context.new_page()
    page.set_default_timeout(15_000)

    page.goto(f"{live_server}/profile/api/")
    assert page.url.startswith(f"{live_server}/profile/login")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server}/profile/api/")
    assert page.text_content("#access-state") == "Approved"
    assert page.text_content("#balance") == "25.5 USD"

    page.click("button:has-text('Create key')")
    raw = page.text_content("#raw-key")
    assert raw.startswith("sk_")
    # replaceState runs once the page's script has loaded: a reload is then a GET.
    page.wait_for_url(f"{live_server}/profile/api/")
    page.click("button[data-copy='raw-key']")
    page.wait_for_function("document.querySelector(\"button[data-copy='raw-key']\")"
                           ".textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    assert api(live_server, raw) == {"balance": "25.5", "currency": "USD"}

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    # Readable on a phone: nothing but the scrollable catalog and code blocks may overflow.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1200, "height": 900})

    page.reload()
    assert page.locator("#raw-key").count() == 0
    assert raw not in page.content()
    assert page.text_content("#key-prefix") == raw[:10] + "…"

    revoke = page.locator("form[action='/profile/api/key/revoke']")
    revoke.locator("input[name=confirm]").check()
    revoke.locator("button[type=submit]").click()
    page.wait_for_selector("#no-key")
    assert "The key is revoked" in page.content()
    assert api(live_server, raw) == {"error": "API key has been revoked", "code": "key_revoked"}
    context.close()


def test_the_public_api_page_renders_without_console_errors(app, runner, live_server, browser):
    """GET /api in headless Chromium: no console error, no script error, no blocked resource
    (the CSP allows no inline script); a snippet's copy button copies the snippet."""
    assert runner.invoke(serva_cli, args=["demo"]).exit_code == 0
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems = []
    page.on("console", lambda message: message.type in ("error", "warning")
            and problems.append(f"console {message.type}: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.on("response", lambda response: response.status >= 400
            and problems.append(f"HTTP {response.status}: {response.url}"))

    page.goto(f"{live_server}/profile/login")
    page.click("#api-reference")
    page.wait_for_url(f"{live_server}/api")
    page.wait_for_load_state("networkidle")
    assert page.title() == "API · Serva"
    assert page.locator(".example").count() == sum(len(a.examples) for a in api_module.ACTIONS.values())
    assert page.is_visible("#action-add") and page.is_visible("#error-invalid_key")
    page.click("summary:has-text('PHP')")
    page.click("button[data-copy='snippet-php']")
    page.wait_for_function("document.querySelector(\"button[data-copy='snippet-php']\")"
                           ".textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()").startswith("<?php\n")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-page.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert problems == [], problems
    context.close()
