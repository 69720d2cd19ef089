"""Two real Serva instances over HTTP, each with its own database: a reseller whose service is
fulfilled by an upstream Serva. The partner orders on the reseller; the reseller's worker hands
the order over; the upstream operator settles it; the reseller's worker brings the outcome and
the exact refund back; money runs out upstream and the order waits until a top-up."""
from contextlib import contextmanager

import pytest
from sqlalchemy import select, update

from serva import create_app, db, providers, services as services_repo
from serva.demo import CATALOG
from serva.schema import accounts, orders, services

from conftest import make_partner, serving
from test_order_cli import show
from test_worker import cli, refunds, run

pytestmark = pytest.mark.slow
LINK = "https://example.com/post/1"


def make_app(path):
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": f"sqlite:///{path}",
                      "SYNC_INTERVAL_SECONDS": 0, "DISPATCH_RETRY_SECONDS": 3600,
                      "DISPATCH_MAX_ATTEMPTS": 5, "PROVIDER_READ_TIMEOUT": 10.0})
    db.init_schema(app.extensions["serva.engine"])
    return app


def call(app, key, **params):
    body = app.test_client().post("/api/v1", data={"key": key, **params}).get_json()
    return body


@contextmanager
def two_servas(tmp_path, upstream_balance, api_path):
    """An upstream Serva served over HTTP and a reseller Serva (each its own database, both with
    the demo catalog) whose service 1234 is fulfilled by the upstream one, where the reseller
    is a partner with `upstream_balance`. Yields the two apps, the reseller's key upstream and
    a partner's key on the reseller (50 USD)."""
    upstream, reseller = make_app(tmp_path / "upstream.sqlite"), make_app(tmp_path / "reseller.sqlite")
    try:
        for app in (upstream, reseller):
            with app.app_context(), db.write() as conn:
                for entry in CATALOG:
                    services_repo.add(conn, **entry)
        _, upstream_key = make_partner(upstream, "reseller@example.com", balance=upstream_balance)
        _, partner_key = make_partner(reseller, "partner@example.com", balance="50")
        with serving(upstream) as upstream_url:
            cli(reseller, "provider", "add", "upstream", "--url", f"{upstream_url}{api_path}",
                "--key", upstream_key)
            with reseller.app_context(), db.write() as conn:
                provider = providers.require(conn, "upstream")
                conn.execute(update(services).where(services.c.id == 1234).values(
                    provider_id=provider.id, provider_service="1234"))
            yield upstream, reseller, upstream_key, partner_key
    finally:
        for app in (upstream, reseller):
            app.extensions["serva.engine"].dispose()


def test_reseller_through_an_upstream_serva(tmp_path):
    with two_servas(tmp_path, upstream_balance="2", api_path="/api/v1") as (
            upstream, reseller, upstream_key, partner_key):
        # A partner orders on the reseller; the worker hands it over.
        placed = call(reseller, partner_key, action="add", service="1234", link=LINK,
                      quantity="1000")
        assert placed["charge"] == "0.89"
        assert run(reseller).handed == 1
        fields, _ = show(reseller.test_cli_runner(), placed["order"])
        assert fields["provider"] == "upstream"
        theirs = fields["provider order"]
        up_fields, _ = show(upstream.test_cli_runner(), theirs)
        assert (up_fields["account"], up_fields["target"], up_fields["quantity"]) == \
            ("reseller@example.com", LINK, "1000")
        assert "idempotent" not in fields  # the key never shows; Serva was recognised:
        with reseller.app_context(), db.read() as conn:
            assert providers.require(conn, "upstream").idempotent

        # The upstream operator delivers 750 of 1000.
        cli(upstream, "order", "set-status", theirs, "Partial", "--remains", "250")
        run(reseller)
        status = call(reseller, partner_key, action="status", order=placed["order"])
        assert status == {"charge": "0.6675", "start_count": None, "status": "Partial",
                          "remains": 250, "currency": "USD"}
        assert refunds(reseller, placed["order"]) == [222_500]  # 0.89 x 250 / 1000, exactly
        assert call(reseller, partner_key, action="balance")["balance"] == "49.3325"
        run(reseller)
        assert refunds(reseller, placed["order"]) == [222_500]

        # The reseller's money upstream runs out: the next order waits, Pending.
        cli(upstream, "account", "debit", "reseller@example.com",
            call(upstream, upstream_key, action="balance")["balance"], "--note", "spent")
        second = call(reseller, partner_key, action="add", service="1234",
                      link=LINK + "/2", quantity="1000")
        assert run(reseller).retrying == 1
        assert call(reseller, partner_key, action="status", order=second["order"])["status"] == "Pending"
        listed = cli(reseller, "provider", "list")
        assert "waiting 1" in listed and "Not enough funds on balance" in listed
        run(reseller)  # not due again before the backoff
        fields, _ = show(reseller.test_cli_runner(), second["order"])
        assert fields["hand-over"] == "due, 1 attempts"
        # Topped up, retried: it goes through.
        cli(upstream, "account", "credit", "reseller@example.com", "5", "--note", "top-up")
        cli(reseller, "provider", "retry", "upstream")
        assert run(reseller).handed == 1
        fields, _ = show(reseller.test_cli_runner(), second["order"])
        assert fields["provider order"].startswith("ORD-")
        with upstream.app_context(), db.read() as conn:
            upstream_orders = conn.execute(select(orders.c.id)).all()
            balance = conn.execute(select(accounts.c.balance).where(
                accounts.c.email == "reseller@example.com")).scalar()
        assert len(upstream_orders) == 2 and balance == 5_000_000 - 890_000
        cli(upstream, "order", "set-status", fields["provider order"], "Completed")
        run(reseller)
        assert call(reseller, partner_key, action="status", order=second["order"])["status"] == "Completed"
        assert cli(upstream, "audit").startswith("audit passed")
        assert cli(reseller, "audit").startswith("audit passed")
