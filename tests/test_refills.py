"""`refill`, `refill_status` and `cancel` (docs/CONTRACT.md): shapes, the rules of each, the
operator's answers (`serva refill …`, `order list --cancel-requested`, `order set-status`), and
the races the database decides."""
import json

import pytest
from freezegun import freeze_time
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from serva import audit, db, orders as orders_repo
from serva.ids import parse_order
from serva.schema import ledger, orders, refills

from conftest import make_partner, post, post_retrying_busy, together
from test_cli import fails as refused, ok as cli

FOLLOWERS, PACKAGE, COMMENTS, GAME = "1234", "1235", "1236", "7788"  # 1234: refill 30 days, cancel
LINK = "https://example.com/post/1"
NOT_AVAILABLE = "Refill is not available for this order: "


def set_status(app, order, status, **kw):
    with app.app_context(), db.write() as conn:
        return orders_repo.set_status(conn, parse_order(order), status, **kw)


def order_row(app, order):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(orders).where(orders.c.id == parse_order(order))).first()


def refill_rows(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(refills).order_by(refills.c.id)).all()


@pytest.fixture
def completed(app, api, catalog):
    """A completed order of the partner on 1234 (refill 30 days, cancel)."""
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
    set_status(app, order, "Completed")
    return order


def not_available(body, reason):
    assert body == {"error": NOT_AVAILABLE + reason, "code": "refill_not_available"}


# ---------------------------------------------------------------- refill

def test_refill_of_a_completed_order_moves_to_completed(app, api, runner, completed):
    assert api("refill", order=completed) == {"refill": "REF-5001"}
    assert api("refill_status", refill="REF-5001") == {"status": "Pending"}
    listed = cli(runner, "refill", "list", "--status", "Pending")
    assert listed.startswith(f"REF-5001\tPending\t{completed}\tpartner@example.com\tservice 1234\t")
    assert cli(runner, "refill", "set-status", "REF-5001", "In progress") == "REF-5001: In progress\n"
    assert api("refill_status", refill="5001") == {"status": "In progress"}
    cli(runner, "refill", "set-status", "5001", "Completed")
    assert api("refill_status", refill="REF-5001") == {"status": "Completed"}
    assert cli(runner, "refill", "list", "--status", "Pending") == "none\n"
    assert api("balance")["balance"] == "99.11"  # a refill costs nothing
    shown = cli(runner, "order", "show", completed).splitlines()
    assert [line.split()[:3] for line in shown if line.startswith("refill:")] == \
        [["refill:", "REF-5001", "Completed"]]


def test_a_second_refill_while_one_is_pending_is_refused(app, api, runner, completed):
    assert api("refill", order=completed) == {"refill": "REF-5001"}
    not_available(api("refill", order=completed), "a refill is already pending")
    cli(runner, "refill", "set-status", "REF-5001", "In progress")
    not_available(api("refill", order=completed), "a refill is already pending")
    cli(runner, "refill", "set-status", "REF-5001", "Rejected")
    assert api("refill", order=completed) == {"refill": "REF-5002"}  # the earlier one ended
    assert [r.status for r in refill_rows(app)] == ["Rejected", "Pending"]


def test_refill_window_counts_from_completion(app, api, catalog):
    with freeze_time("2026-01-01 12:00:00") as clock:
        order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
        clock.tick(5 * 86_400)  # completed five days after it was placed
        set_status(app, order, "Completed")
        clock.tick(30 * 86_400)  # the last second of the 30-day window
        assert api("refill", order=order) == {"refill": "REF-5001"}
        with app.app_context(), db.write() as conn:
            conn.execute(refills.update().values(status="Completed"))
        clock.tick(1)
        not_available(api("refill", order=order), "the refill window is over")


def test_refill_on_a_service_without_refill_is_refused(app, api, catalog):
    order = api("add", service=PACKAGE, link=LINK)["order"]
    set_status(app, order, "Completed")
    not_available(api("refill", order=order), "the service has no refill")


@pytest.mark.parametrize("status", ["Pending", "In progress", "Processing", "Canceled"])
def test_refill_needs_a_completed_or_partial_order(app, api, catalog, status):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
    if status != "Pending":
        set_status(app, order, status)
    not_available(api("refill", order=order), "the order is not completed")


def test_a_partial_order_can_be_refilled(app, api, catalog):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
    set_status(app, order, "Partial", remains=100)
    assert api("refill", order=order) == {"refill": "REF-5001"}


def test_refill_days_zero_switches_refill_off(app, api, runner, completed):
    cli(runner, "service", "update", FOLLOWERS, "--refill-days", "0")
    assert next(e for e in api("services") if e["service"] == FOLLOWERS)["refill"] is False
    not_available(api("refill", order=completed), "the service has no refill")


@pytest.mark.parametrize("order", ["ORD-999999", "banana", "0", "ORD-100002"])
def test_refill_of_an_unknown_or_foreign_order_is_not_found(app, api, completed, order):
    _, other = make_partner(app, "other@example.com")
    foreign = app.test_client().post("/api/v1", data={"action": "add", "key": other, "service": FOLLOWERS,
                                                      "link": LINK, "quantity": "100"}).get_json()
    assert foreign["order"] == "ORD-100002"
    set_status(app, foreign["order"], "Completed")
    assert api("refill", order=order) == {"error": "Incorrect order ID", "code": "order_not_found"}


def test_multi_refill_answers_each_order_in_the_order_sent(app, api, catalog, completed):
    active = api("add", service=FOLLOWERS, link=LINK + "/2", quantity="1000")["order"]
    body = api("refill", orders=f"{active}, {completed},nope,{completed}")
    assert body == [
        {"order": active, "refill": {"error": NOT_AVAILABLE + "the order is not completed"}},
        {"order": completed, "refill": "REF-5001"},
        {"order": "nope", "refill": {"error": "Incorrect order ID"}},
        {"order": completed, "refill": {"error": NOT_AVAILABLE + "a refill is already pending"}},
    ]


def test_refill_id_formats(app, client, partner, completed):
    app.config["INTEGER_IDS"] = True
    body = client.post("/api/v1", json={"action": "refill", "key": partner[1],
                                        "order": parse_order(completed) + 100_000}).get_json()
    assert body == {"refill": 5001}
    body = client.post("/api/v1", json={"action": "refill_status", "key": partner[1],
                                        "refill": 5001}).get_json()
    assert body == {"status": "Pending"}


def test_refill_status_list_and_foreign_refills(app, api, completed):
    _, other = make_partner(app, "other@example.com")
    order = app.test_client().post("/api/v1", data={"action": "add", "key": other, "service": FOLLOWERS,
                                                    "link": LINK, "quantity": "100"}).get_json()["order"]
    set_status(app, order, "Completed")
    theirs = app.test_client().post("/api/v1", data={"action": "refill", "key": other,
                                                     "order": order}).get_json()
    assert theirs == {"refill": "REF-5001"}
    mine = api("refill", order=completed)["refill"]
    assert mine == "REF-5002"
    assert api("refill_status", refills=f"{mine},REF-5001,REF-9,x") == [
        {"refill": "REF-5002", "status": "Pending"},
        {"refill": "REF-5001", "status": {"error": "Refill not found"}},
        {"refill": "REF-9", "status": {"error": "Refill not found"}},
        {"refill": "x", "status": {"error": "Refill not found"}},
    ]
    assert api("refill_status", refill="REF-5001") == {"error": "Refill not found",
                                                      "code": "refill_not_found"}


@pytest.mark.parametrize("action,params,name", [
    ("refill", {}, "order"), ("refill_status", {}, "refill"), ("cancel", {}, "order"),
    ("refill", {"order": ""}, "order"), ("refill_status", {"refills": ""}, "refills"),
])
def test_missing_ids(api, action, params, name):
    assert api(action, **params) == {"error": f"Missing required parameter: {name}",
                                     "code": "missing_parameter"}


@pytest.mark.parametrize("action,param", [("refill", "orders"), ("refill_status", "refills"),
                                          ("cancel", "orders")])
def test_at_most_100_ids(api, action, param):
    body = api(action, **{param: ",".join(str(100_001 + i) for i in range(101))})
    assert body == {"error": "Too many orders in one request (max 100)", "code": "too_many_orders"}
    assert len(api(action, **{param: ",".join(str(100_001 + i) for i in range(100))})) == 100


def test_refill_set_status_refusals(app, api, runner, completed):
    api("refill", order=completed)
    cli(runner, "refill", "set-status", "REF-5001", "Completed")
    assert "final" in refused(runner, "refill", "set-status", "REF-5001", "Pending")
    assert "no refill REF-5099" in refused(runner, "refill", "set-status", "REF-5099", "Completed")
    assert "not a refill id" in refused(runner, "refill", "set-status", "banana", "Completed")


def test_one_pending_refill_per_order_is_a_database_rule(app, completed):
    with app.app_context():
        with db.write() as conn:
            conn.execute(insert(refills).values(order_id=parse_order(completed), account_id=1,
                                                status="Pending", created_at=0, updated_at=0))
        with pytest.raises(IntegrityError), db.write() as conn:
            conn.execute(insert(refills).values(order_id=parse_order(completed), account_id=1,
                                                status="In progress", created_at=0, updated_at=0))


def test_concurrent_refills_of_one_order_give_one_refill(app, live_server, partner, completed):
    answers = together(16, lambda i: json.loads(post_retrying_busy(
        live_server, action="refill", key=partner[1], order=completed)[1]))
    accepted = [a for a in answers if "refill" in a]
    assert len(accepted) == 1, answers
    assert all(a["code"] == "refill_not_available" for a in answers if a not in accepted)
    assert [(r.status, r.order_id) for r in refill_rows(app)] == [("Pending", parse_order(completed))]


# ---------------------------------------------------------------- cancel

def test_an_accepted_cancel_ends_canceled_with_a_full_refund(app, api, runner, catalog):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
    assert api("cancel", order=order) == {"cancel": 1}
    assert api("status", order=order)["status"] == "Pending"  # accepted, not yet canceled
    assert api("balance")["balance"] == "99.11"  # no money before the outcome
    listed = cli(runner, "order", "list", "--cancel-requested")
    assert listed.startswith(f"{order}\tPending\t") and "cancel requested" in listed
    assert "refunded 0.89" in cli(runner, "order", "set-status", order, "Canceled")
    assert api("status", order=order) == {"charge": "0", "start_count": None, "status": "Canceled",
                                          "remains": 1000, "currency": "USD"}
    assert api("balance")["balance"] == "100"
    assert cli(runner, "order", "list", "--cancel-requested") == "none\n"  # answered
    refused(runner, "order", "set-status", order, "Canceled")  # refunded once, final
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(ledger.c.amount).where(ledger.c.kind == "refund")).scalars().all() \
            == [890_000]
        assert list(audit.violations(conn)) == []


def test_cancel_is_idempotent(app, api, catalog):
    with freeze_time("2026-01-01 12:00:00") as clock:
        order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
        assert api("cancel", order=order) == {"cancel": 1}
        first = order_row(app, order).cancel_requested_at
        clock.tick(60)
        assert api("cancel", order=order) == {"cancel": 1}
        assert order_row(app, order).cancel_requested_at == first


def test_a_cancel_answered_with_partial_refunds_the_undelivered_part(app, api, runner, catalog):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
    api("cancel", order=order)
    assert "refunded 0.4005" in cli(runner, "order", "set-status", order, "Partial", "--remains", "450")
    assert api("status", order=order)["charge"] == "0.4895"


def test_cancel_refusals(app, api, catalog, completed):
    package = api("add", service=PACKAGE, link=LINK)["order"]
    cancel_refused = {"error": "Cancel is not available for this order", "code": "cancel_not_available"}
    assert api("cancel", order=package) == cancel_refused  # the service has no cancel
    assert api("cancel", order=completed) == cancel_refused  # no longer active
    assert api("cancel", order="ORD-999999") == {"error": "Incorrect order ID", "code": "order_not_found"}
    _, other = make_partner(app, "other@example.com")
    body = app.test_client().post("/api/v1", data={"action": "cancel", "key": other,
                                                   "order": completed}).get_json()
    assert body == {"error": "Incorrect order ID", "code": "order_not_found"}
    assert order_row(app, package).cancel_requested_at is None


def test_multi_cancel_answers_each_order_in_the_order_sent(app, api, catalog, completed):
    active = api("add", service=FOLLOWERS, link=LINK + "/2", quantity="1000")["order"]
    assert api("cancel", orders=f"{active},{completed},ORD-1") == [
        {"order": active, "cancel": 1},
        {"order": completed, "cancel": {"error": "Cancel is not available for this order"}},
        {"order": "ORD-1", "cancel": {"error": "Incorrect order ID"}},
    ]


def test_cancel_racing_the_operator_never_refunds_by_itself(app, live_server, partner, catalog, api):
    """Partners ask to cancel while the operator completes the order: each request is accepted
    or refused depending on which came first; nothing is refunded; the books balance."""
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]

    def work(i):
        if i == 0:
            set_status(app, order, "Completed")
            return None
        return json.loads(post_retrying_busy(live_server, action="cancel", key=partner[1],
                                             order=order)[1])
    answers = [a for a in together(12, work) if a is not None]
    assert all(a in ({"cancel": 1}, {"error": "Cancel is not available for this order",
                                     "code": "cancel_not_available"}) for a in answers), answers
    assert order_row(app, order).status == "Completed"
    assert api("balance")["balance"] == "99.11"
    with app.app_context(), db.read() as conn:
        assert list(audit.violations(conn)) == []


def test_the_cancel_setting_from_the_cli(app, api, runner, catalog):
    cli(runner, "service", "update", PACKAGE, "--cancel")
    assert next(e for e in api("services") if e["service"] == PACKAGE)["cancel"] is True
    order = api("add", service=PACKAGE, link=LINK)["order"]
    assert api("cancel", order=order) == {"cancel": 1}
    cli(runner, "service", "update", PACKAGE, "--no-cancel")
    assert api("cancel", order=order)["code"] == "cancel_not_available"


# ---------------------------------------------------------------- the schema revision

def test_the_revision_keeps_refill_services_and_dates_final_orders(tmp_path):
    """refill yes/no -> refill_days (yes: 30 days); an order final before the upgrade counts its
    refill window from its last update; downgrade gives the yes/no back; no row is lost."""
    from alembic import command
    from sqlalchemy import text
    from serva import migrations
    from test_migrations import new_app, upgrade_by_revisions
    engine = new_app(tmp_path / "old.sqlite").extensions["serva.engine"]
    upgrade_by_revisions(engine, migrations.FIRST_RELEASE)
    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO accounts (id, email, created_at) VALUES (1, 'a@example.com', 1)"))
        conn.execute(text("INSERT INTO services (id, name, rate, refill, created_at) "
                          "VALUES (1, 'Refilled', 1, true, 1), (2, 'Plain', 1, false, 1)"))
        conn.execute(text(
            "INSERT INTO orders (id, account_id, service_id, target, target_key, quantity, charge, "
            "status, created_at, updated_at) VALUES "
            "(1, 1, 1, 't', 'k1', 10, 0, 'Completed', 100, 1000), "
            "(2, 1, 1, 't', 'k2', 10, 0, 'In progress', 100, 2000), "
            "(3, 1, 2, 't', 'k3', 10, 0, 'Canceled', 100, 3000)"))
    upgrade_by_revisions(engine)

    def rows(statement):
        with db.read(engine) as conn:
            return [tuple(row) for row in conn.execute(text(statement))]
    assert rows("SELECT id, refill_days, dripfeed, fixed_quantity FROM services ORDER BY id") == \
        [(1, 30, 0, None), (2, 0, 0, None)]
    assert rows("SELECT id, completed_at, runs, cancel_requested_at FROM orders ORDER BY id") == \
        [(1, 1000, None, None), (2, None, None, None), (3, 3000, None, None)]
    with db.migrating(engine) as conn:
        command.downgrade(migrations.config(conn), migrations.FIRST_RELEASE)
    assert rows("SELECT id, refill FROM services ORDER BY id") == [(1, 1), (2, 0)]
    assert rows("SELECT id, status FROM orders ORDER BY id") == \
        [(1, "Completed"), (2, "In progress"), (3, "Canceled")]
    upgrade_by_revisions(engine)
    assert rows("SELECT id, refill_days FROM services ORDER BY id") == [(1, 30), (2, 0)]
    engine.dispose()
