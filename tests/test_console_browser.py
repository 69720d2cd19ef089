"""The console end to end in headless Chromium (Debian's, driven by Playwright, as the
dashboard's browser test): an owner's first sign-in with TOTP enrolment, approving an API
access request, a credit with its ledger row and activity entry, an order found by its
request id, an unknown hand-over resolved, a provider catalog imported through preview and
confirm, a support operator refused a credit, and a manual payment approved. Screenshots at
desktop and phone width go to test-artifacts/."""
import pyotp
import pytest
import requests
from sqlalchemy import select, update

from serva import db, payments, providers, services
from serva.ids import parse_order
from serva.schema import accounts, activity, dispatches, ledger

from conftest import make_partner
from console_support import OWNER, PASSWORD, SUPPORT, make_operator
from faulty_provider import KEY
from test_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture

pytestmark = pytest.mark.browser
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


def shots(page, name):
    """Desktop and phone screenshots; at phone width nothing but tables' scroll boxes may
    overflow the page."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)


def new_page(browser, base):  # noqa: F811
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.errors = errors
    return page


def sign_in(page, base, email, role="owner"):
    page.goto(f"{base}/admin/")
    assert page.url.startswith(f"{base}/admin/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    if role == "owner":
        page.wait_for_url(f"{base}/admin/enrol")
        secret = page.text_content("#totp-secret")
        assert page.locator("img.qr").evaluate("img => img.naturalWidth") > 0
        page.fill("#code", pyotp.TOTP(secret).now())
        page.click("button:has-text('Confirm')")
        assert page.locator("#recovery-codes li").count() == 10
        page.click("#continue")
    page.wait_for_url(f"{base}/admin/")


def test_an_owners_first_sign_in_enrols_totp(app, live_server, browser):  # noqa: F811
    make_operator(app)
    page = new_page(browser, live_server)
    page.goto(f"{live_server}/admin/login")
    shots(page, "sign-in")
    page.fill("#email", OWNER)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server}/admin/enrol")
    shots(page, "enrol")
    secret = page.text_content("#totp-secret")
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("button:has-text('Confirm')")
    assert page.locator("#recovery-codes li").count() == 10
    shots(page, "recovery-codes")
    page.click("#continue")
    page.wait_for_url(f"{live_server}/admin/")
    assert page.locator("svg.chart").count() == 1
    shots(page, "overview")
    assert page.errors == []  # the CSP refused nothing the pages need


def test_approving_an_api_access_request(app, live_server, browser):  # noqa: F811
    make_operator(app)
    make_partner(app, "waiting@example.com", approved=False)
    with app.app_context(), db.write() as conn:
        conn.execute(update(accounts).values(api_access="requested", access_requested_at=1))
    page = new_page(browser, live_server)
    sign_in(page, live_server, OWNER)
    page.click("#access-requests a:has-text('waiting@example.com')")
    page.click("#accounts a:has-text('waiting@example.com')")
    page.click("form.approve button")
    assert page.text_content("#api-access") == "approved"
    assert "API access approved" in page.text_content(".flash")
    shots(page, "account")


def test_a_credit_shows_its_ledger_row_and_activity_entry(app, live_server, browser):  # noqa: F811
    make_operator(app)
    account_id, key = make_partner(app, "shop@example.com", balance="0")
    page = new_page(browser, live_server)
    sign_in(page, live_server, OWNER)
    page.goto(f"{live_server}/admin/accounts?q=shop")
    page.click("#accounts a:has-text('shop@example.com')")
    page.fill("#credit input[name=amount]", "30")
    page.fill("#credit input[name=note]", "paid by card")
    page.click("#credit button")
    assert page.text_content("#balance") == "30"
    row = page.locator("#statement tbody tr").first
    assert "topup" in row.text_content() and "paid by card" in row.text_content()
    request_id = row.locator("code").text_content()
    page.click("nav a:has-text('Activity')")
    entry = page.locator("#activity tbody tr").first
    assert "account.credit" in entry.text_content() and request_id in entry.text_content()
    assert "operator:owner@example.com" in entry.text_content()
    shots(page, "activity")
    assert requests.post(f"{live_server}/api/v1", data={"action": "balance", "key": key},
                         timeout=10).json()["balance"] == "30"


def test_finding_an_order_by_its_request_id(app, live_server, browser, catalog):  # noqa: F811
    make_operator(app)
    _, key = make_partner(app)
    placed = requests.post(f"{live_server}/api/v1", timeout=10, data={
        "action": "add", "key": key, "service": "1234", "link": "https://example.com/a",
        "quantity": "100"})
    requests.post(f"{live_server}/api/v1", timeout=10, data={
        "action": "add", "key": key, "service": "1234", "link": "https://example.com/b",
        "quantity": "100"})
    order, request_id = placed.json()["order"], placed.headers["x-serva-request-id"]
    page = new_page(browser, live_server)
    sign_in(page, live_server, OWNER)
    page.click("nav a:has-text('Orders')")
    page.fill("#request_id", request_id)
    page.click("button:has-text('Filter')")
    assert page.locator("#orders tbody tr").count() == 1
    shots(page, "orders")
    page.click(f"#orders a:has-text('{order}')")
    assert request_id in page.text_content("#ledger")
    shots(page, "order")


def test_resolving_an_unknown_handover(app, live_server, browser, catalog, fake_provider):  # noqa: F811
    make_operator(app)
    _, key = make_partner(app)
    with app.app_context(), db.write() as conn:
        provider_id = providers.add(conn, "up", fake_provider.url, KEY)
        services.update_service(conn, 1234, provider_id=provider_id, provider_service="1")
    order = requests.post(f"{live_server}/api/v1", timeout=10, data={
        "action": "add", "key": key, "service": "1234", "link": "https://example.com/a",
        "quantity": "100"}).json()["order"]
    with app.app_context(), db.write() as conn:
        conn.execute(update(dispatches).where(dispatches.c.order_id == parse_order(order))
                     .values(state="unknown", last_message="read timed out"))
    page = new_page(browser, live_server)
    sign_in(page, live_server, OWNER)
    page.goto(f"{live_server}/admin/orders/{order}")
    assert page.text_content("#handover-state") == "unknown"
    page.check("#resolve input[value=cancel]")
    page.click("#resolve button")
    assert "Canceled, refunded 0.089" in page.text_content(".flash")
    assert page.text_content("#status") == "Canceled"
    assert page.text_content("#handover-state") == "canceled"


def test_importing_a_catalog_through_preview_and_confirm(app, live_server, browser, fake_provider):  # noqa: F811
    make_operator(app)
    with app.app_context(), db.write() as conn:
        providers.add(conn, "up", fake_provider.url, KEY)
    page = new_page(browser, live_server)
    sign_in(page, live_server, OWNER)
    page.click("nav a:has-text('Providers')")
    assert KEY not in page.content()
    page.fill("#provider-up input[name=markup]", "50")
    page.click("#provider-up button:has-text('Preview the import')")
    assert "1 to add" in page.text_content("#import-summary")
    assert "0.6" in page.text_content("#import-steps")
    shots(page, "import-preview")
    with app.app_context(), db.read() as conn:
        assert services.list_all(conn) == []
    page.click("#confirm-import")
    assert "1 added" in page.text_content("#import-summary")
    page.click("nav a:has-text('Services')")
    assert "Fake followers" in page.text_content("#services")


def test_support_is_refused_a_credit(app, live_server, browser):  # noqa: F811
    make_operator(app, SUPPORT, "support")
    account_id, _ = make_partner(app, "shop@example.com", balance="0")
    page = new_page(browser, live_server)
    sign_in(page, live_server, SUPPORT, role="support")
    page.goto(f"{live_server}/admin/accounts/{account_id}")
    page.fill("#credit input[name=amount]", "30")
    page.fill("#credit input[name=note]", "a favour")
    with page.expect_response(lambda r: r.url.endswith("/credit")) as answer:
        page.click("#credit button")
    assert answer.value.status == 403
    assert "Not allowed" in page.text_content("h1")
    shots(page, "refused")
    with app.app_context(), db.read() as conn:
        refused = conn.execute(select(activity).where(activity.c.action == "refused")).one()
        assert conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar() == 0
    assert refused.actor == "operator:support@example.com"


def test_approving_a_manual_payment(app, live_server, browser):  # noqa: F811
    make_operator(app)
    account_id, _ = make_partner(app, "shop@example.com", balance="0")
    with app.app_context(), db.write() as conn:
        payments.create(conn, account_id, "manual", 40_000_000, "USD", gateway_id="wire-7",
                        reference="wire 7", status="pending")
    page = new_page(browser, live_server)
    sign_in(page, live_server, OWNER)
    page.click("#pending-manual")
    assert page.locator("#payments tbody tr").count() == 1
    shots(page, "payments")
    page.click("#payments a:has-text('PAY-1')")
    page.fill("#approve input[name=note]", "bank statement line 12")
    page.click("#approve button")
    assert "PAY-1: approved, credited (40 USD)" in page.text_content(".flash")
    assert page.text_content("#status") == "paid"
    shots(page, "payment")
    with app.app_context(), db.read() as conn:
        [row] = conn.execute(select(ledger).where(ledger.c.account_id == account_id)).all()
        [entry] = conn.execute(select(activity).where(activity.c.action == "payment.approve")).all()
    assert (row.kind, row.amount) == ("payment", 40_000_000)
    assert entry.request_id == row.request_id and entry.actor == "operator:owner@example.com"
    assert page.errors == []
