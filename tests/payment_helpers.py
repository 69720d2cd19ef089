"""What the payment tests share: an app with Stripe (pointed at tests/fake_stripe.py) and
manual payments on, a signed-in partner, and reading money back from the database."""
import re
from contextlib import contextmanager

import pytest
import stripe
from sqlalchemy import func, select

from serva import create_app, db, services
from serva.schema import accounts, ledger, payments

from fake_stripe import SECRET_KEY, WEBHOOK_SECRET, FakeStripe
from test_dashboard import csrf_token, make_account, sign_in

MANUAL_TEXT = "Transfer to IBAN DE00 1234 5678 and put your email in the reference."
WEBHOOK = "/payments/stripe/webhook"


def payment_config(database_url, **extra):
    return {"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "MANUAL_PAYMENTS": MANUAL_TEXT, **extra}


@contextmanager
def payment_app(database_url, **extra):
    app = create_app(payment_config(database_url, **extra))
    db.init_schema(app.extensions["serva.engine"])
    try:
        yield app
    finally:
        app.extensions["serva.engine"].dispose()


@pytest.fixture
def fake_stripe(monkeypatch):
    fake = FakeStripe().start()
    monkeypatch.setattr(stripe, "api_base", fake.url)
    yield fake
    fake.stop()


@pytest.fixture
def papp(tmp_path):
    with payment_app(f"sqlite:///{tmp_path / 'serva.sqlite'}") as app:
        yield app


def partner_client(app, balance="0", key=True):
    """(test client signed in as the partner, account id, raw API key)."""
    account_id, raw = make_account(app, balance=balance, key=key)
    client = app.test_client()
    assert sign_in(client).status_code == 302
    return client, account_id, raw


def add_funds(client, amount, gateway="stripe", **extra):
    return client.post("/profile/funds/", data={
        "csrf_token": csrf_token(client, "/profile/funds/"), "gateway": gateway,
        "amount": amount, **extra})


def start_checkout(client, fake, amount="25"):
    """Add funds by card: (payment id, session id) from the redirect to the fake checkout."""
    response = add_funds(client, amount)
    assert response.status_code == 200, response.text
    url = re.search(r'id="checkout-link" href="([^"]+)"', response.text).group(1)
    assert response.headers["Refresh"] == f"0; url={url}"
    session_id = url.rsplit("/", 1)[1]
    session = fake.sessions[session_id]
    return int(session["metadata"]["serva_payment"]), session_id


def balance_of(app, account_id) -> int:
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()


def ledger_rows(app, account_id, kind=None):
    with app.app_context(), db.read() as conn:
        query = select(ledger).where(ledger.c.account_id == account_id)
        if kind:
            query = query.where(ledger.c.kind == kind)
        return conn.execute(query.order_by(ledger.c.id)).all()


def payment_row(app, payment_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(payments).where(payments.c.id == payment_id)).first()


def ledger_total(app, account_id) -> int:
    with app.app_context(), db.read() as conn:
        return conn.execute(select(func.coalesce(func.sum(ledger.c.amount), 0))
                            .where(ledger.c.account_id == account_id)).scalar()


def add_service(app, rate=1_000_000):
    """A service at `rate` per 1000 (1 unit of money per 1000 by default)."""
    with app.app_context(), db.write() as conn:
        return services.add(conn, name="Followers", category="Test", rate=rate,
                            min_quantity=10, max_quantity=1_000_000)


def api(client, key, action, **params):
    return client.post("/api/v1", data={"action": action, "key": key, **params}).get_json()


def text_of(html, element_id) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)<', html, re.S)
    return " ".join(match.group(1).split()) if match else ""
