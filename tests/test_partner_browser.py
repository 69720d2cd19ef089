"""The partner's orders, statement and webhook pages in headless Chromium with JavaScript
turned off (they are plain forms and links) and at phone width: filter the orders, page the
statement, set a webhook, see the secret once, send a test event and see its delivery.
Screenshots go to test-artifacts/. Skipped when Chromium or Playwright is absent."""
import threading

import pytest
from standardwebhooks.webhooks import Webhook

from serva import db, fulfilment, services
from serva.webhooks import delivery

from test_browser import ARTIFACTS, browser  # noqa: F401 - the fixture
from test_dashboard import EMAIL, PASSWORD, make_account
from webhook_receiver import Receiver

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


def fits_a_phone(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1200, "height": 900})
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
    page.set_viewport_size({"width": 1200, "height": 900})


def test_orders_statement_and_webhook_without_javascript(app, client, live_server, browser):  # noqa: F811
    _, key = make_account(app, balance="50", key=True)
    with app.app_context(), db.write() as conn:
        services.add(conn, id=1234, name="Instagram Followers", category="Instagram",
                     rate=890_000, min_quantity=100, max_quantity=100_000)
    for i in range(3):
        body = client.post("/api/v1", data={"action": "add", "key": key, "service": "1234",
                                            "link": f"https://example.com/post/{i}-"
                                                    + "very-long-link-segment" * 3,
                                            "quantity": str(100 + i)}).get_json()
        assert "order" in body
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    receiver = Receiver().start()
    context = browser.new_context(viewport={"width": 1200, "height": 900},
                                  java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{live_server}/profile/login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{live_server}/profile/api/")

        page.click("#nav-orders")
        assert page.locator(".order-row").count() == 3
        page.fill("#f-link", "post/1-")
        page.click("button:has-text('Filter')")
        assert page.locator(".order-row").count() == 1
        assert page.text_content(".order-id") == "ORD-100002"
        fits_a_phone(page, "partner-orders")

        page.click("#nav-statement")
        assert page.text_content("#statement-balance").startswith("49.73")
        assert page.locator(".ledger-row").count() == 4
        fits_a_phone(page, "partner-statement")

        page.click("#nav-webhook")
        page.fill("#webhook-url", receiver.url)
        page.click("#save-url")
        secret = page.text_content("#webhook-secret")
        assert secret.startswith("whsec_")
        page.click("#send-test")
        with app.app_context():
            delivery.delivery_pass("browser-test", fulfilment.settings(), threading.Event())
        page.goto(f"{live_server}/profile/webhook/")
        assert page.locator("#webhook-secret").count() == 0
        assert page.locator(".delivery-row").count() == 1
        assert "webhook.test" in page.text_content(".delivery-row")
        headers, body, _ = receiver.requests[0]
        assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"
        fits_a_phone(page, "partner-webhook")
    finally:
        context.close()
        receiver.stop()
