"""Adding funds by card in headless Chromium: sign in, open Add funds, pay on the local
stand-in for Stripe's checkout page, come back, and see the credit once Stripe's (signed,
delayed) webhook has arrived: the return page waits for it and refreshes by itself."""
import pytest

from conftest import serving
from payment_helpers import WEBHOOK, balance_of, fake_stripe, ledger_rows, papp  # noqa: F401
from test_browser import browser  # noqa: F401 - the Chromium fixture
from test_dashboard import EMAIL, PASSWORD, make_account

pytestmark = pytest.mark.browser


def test_add_funds_by_card_and_see_the_credit_once_the_webhook_arrives(papp, fake_stripe, browser):
    account_id, _ = make_account(papp, balance="0")
    with serving(papp) as url:
        fake_stripe.webhook_url = url + WEBHOOK
        fake_stripe.webhook_delay = 1.5
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        problems = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda message: message.type == "error"
                and problems.append(f"console: {message.text}"))

        page.goto(f"{url}/profile/login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{url}/profile/api/")
        page.click("#nav-funds")
        page.wait_for_url(f"{url}/profile/funds/")
        assert page.text_content("#balance") == "0 USD"
        page.fill("#amount-stripe", "25")
        page.click("#gateway-stripe button[type=submit]")
        page.wait_for_url(f"{fake_stripe.url}/pay/*")  # Stripe's checkout page (the stand-in)
        assert page.text_content("#amount") == "Pay 25.00 USD"
        page.click("#pay")
        page.wait_for_url(f"{url}/profile/funds/PAY-1")
        assert page.text_content("#payment-state") == "Waiting for confirmation"
        assert balance_of(papp, account_id) == 0  # the return itself credits nothing
        # The page refreshes itself (no script: the dashboard's CSP allows none inline).
        page.wait_for_selector("#payment-state:text-is('Credited')")
        page.click("text=Back to Add funds")
        assert page.text_content("#balance") == "25 USD"
        assert page.text_content("#payment-1 .state") == "Credited"
        assert problems == [], problems
        context.close()
    assert [row.amount for row in ledger_rows(papp, account_id)] == [25_000_000]
