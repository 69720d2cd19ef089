"""The operator's `order` commands (list, show, set-status with refunds exactly once) and
`audit`, including a database corrupted by hand."""
import re
import sqlite3
import threading

import pytest
import requests
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from serva import db, ledger as ledger_repo, orders as orders_repo, services
from serva.cli import cli as serva_cli
from serva.ids import parse_order
from serva.schema import accounts, ledger, orders as orders_table

from conftest import make_partner, retrying_busy, together

LINK = "https://example.com/post/1"


def cli(runner, *args):
    """`serva ARGS…` on the test app (the console script's command group)."""
    return runner.invoke(serva_cli, args=[str(a) for a in args])


def ok(runner, *args):
    result = cli(runner, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def fails(runner, *args):
    """The CLI's refusal: exit 2, nothing on stdout, one `error: …` line on stderr."""
    result = cli(runner, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result.stderr


def balance(app, email="partner@example.com"):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts.c.balance).where(accounts.c.email == email)).scalar()


def refunds(app, order_id):
    with app.app_context(), db.read() as conn:
        return [r.amount for r in conn.execute(
            select(ledger.c.amount).where(ledger.c.order_id == order_id, ledger.c.kind == "refund"))]


def sql(app, statement, **params):
    with app.app_context(), db.write() as conn:
        return conn.execute(text(statement), params)


def listed_ids(runner, *args):
    """The ids `order list ARGS…` prints, newest first ([] when it says `none`)."""
    out = ok(runner, "order", "list", *args)
    return [] if out == "none\n" else [line.split("\t")[0] for line in out.splitlines()]


def show(runner, order):
    """`order show` as a dict of its labelled lines (ledger lines as a list; the status
    history's lines left out: tests/test_order_history.py reads them)."""
    fields, entries = {}, []
    for line in ok(runner, "order", "show", order).splitlines():
        label, _, value = line.partition(":")
        if label == "ledger":
            entries.append(value.strip())
        elif label == "history":
            continue
        else:
            fields[label] = value.strip()
    return fields, entries


@pytest.fixture
def placed(app, api, catalog):
    """Partner orders: ORD-100001 (followers 1000, 0.89), ORD-100002 (package, 15),
    ORD-100003 (game, 0.2); another account's ORD-100004 (followers 100)."""
    ids = [api("add", service="1234", link=LINK, quantity="1000")["order"],
           api("add", service="1235", link="https://youtube.com/watch?v=1")["order"],
           api("add", service="7788", quantity="10", **{"fields[player_id]": "42",
                                                        "fields[server_id]": "7"})["order"]]
    _, other = make_partner(app, "other@example.com")
    body = app.test_client().post("/api/v1", data={"action": "add", "key": other, "service": "1234",
                                                   "link": LINK, "quantity": "100"}).get_json()
    return ids + [body["order"]]


# ---------------------------------------------------------------- list and show

def test_order_list_newest_first_with_filters(runner, placed):
    lines = ok(runner, "order", "list").splitlines()
    assert [line.split("\t")[0] for line in lines] == ["ORD-100004", "ORD-100003", "ORD-100002", "ORD-100001"]
    assert lines[-1] == (f"ORD-100001\tPending\tpartner@example.com\tservice 1234\tqty 1000\tcharge 0.89\t"
                        f"refunded 0\tnet 0.89\t{LINK}")
    assert lines[1].endswith("\tplayer_id=42; server_id=7")

    assert listed_ids(runner, "--account", "other@example.com") == ["ORD-100004"]
    assert listed_ids(runner, "--account", "PARTNER@example.com") == ["ORD-100003", "ORD-100002", "ORD-100001"]
    assert listed_ids(runner, "--service", "1234") == ["ORD-100004", "ORD-100001"]
    assert listed_ids(runner, "--service", "1234", "--account", "partner@example.com") == ["ORD-100001"]
    ok(runner, "order", "set-status", "ORD-100002", "Completed")
    assert listed_ids(runner, "--status", "Completed") == ["ORD-100002"]
    assert listed_ids(runner, "--status", "Pending", "--service", "1235") == []
    assert listed_ids(runner, "--limit", "2") == ["ORD-100004", "ORD-100003"]


def test_order_list_and_show_name_the_money_alike(runner, placed):
    """`charge` is the original charge in both, `refunded` what went back, `net` the charge
    after refunds (what the API's status calls `charge`)."""
    ok(runner, "order", "set-status", "ORD-100001", "Partial", "--remains", "250")
    (line,) = [line for line in ok(runner, "order", "list").splitlines()
               if line.startswith("ORD-100001\t")]
    listed = dict(column.split(" ", 1) for column in line.split("\t")
                  if column.split(" ", 1)[0] in ("charge", "refunded", "net"))
    assert listed == {"charge": "0.89", "refunded": "0.2225", "net": "0.6675"}
    fields, _ = show(runner, "ORD-100001")
    assert {name: fields[name] for name in listed} == listed


def test_order_list_errors(runner, placed):
    fails(runner, "order", "list", "--account", "nobody@example.com")
    assert cli(runner, "order", "list", "--status", "Lost").exit_code == 2
    assert cli(runner, "order", "list", "--service", "abc").exit_code == 2


def test_order_show(runner, placed):
    ok(runner, "order", "set-status", "100001", "Partial", "--start-count", "77", "--remains", "250")
    fields, entries = show(runner, "ORD-100001")
    assert fields == {"order": "ORD-100001", "account": "partner@example.com", "service": "1234",
                      "target": LINK, "inputs": "-", "quantity": "1000", "status": "Partial",
                      "start_count": "77", "remains": "250", "charge": "0.89", "refunded": "0.2225",
                      "net": "0.6675",
                      "created": fields["created"], "updated": fields["updated"],
                      "completed": fields["updated"], "request_id": fields["request_id"]}
    assert re.fullmatch(r"[0-9a-f]{32}", fields["request_id"])
    assert [e.split(" ", 2)[2].rsplit(" ", 1)[0] for e in entries] == ["charge -0.89", "refund 0.2225"]
    fields, _ = show(runner, "100003")
    assert fields["inputs"] == '{"player_id": "42", "server_id": "7"}'


def test_order_show_prints_a_dash_for_every_empty_field(runner, placed):
    fields, _ = show(runner, "ORD-100001")  # Pending: no start count yet
    assert fields["start_count"] == "-"
    assert "None" not in ok(runner, "order", "show", "ORD-100001")
    ok(runner, "order", "set-status", "ORD-100001", "In progress", "--start-count", "0")
    assert show(runner, "ORD-100001")[0]["start_count"] == "0"


@pytest.mark.parametrize("order", ["ORD-999999", "banana", "0"])
def test_order_show_unknown(runner, placed, order):
    fails(runner, "order", "show", order)


# ---------------------------------------------------------------- traceability

def rows_of(app, table, **where):
    with app.app_context(), db.read() as conn:
        query = select(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        return conn.execute(query.order_by(table.c.id)).all()


def test_order_and_ledger_rows_keep_the_request_id_that_placed_them(app, client, runner, partner,
                                                                   catalog):
    response = client.post("/api/v1", data={"action": "add", "key": partner[1], "service": "1234",
                                            "link": LINK, "quantity": "1000"})
    rid = response.headers["x-serva-request-id"]
    order = response.get_json()["order"]
    (row,) = rows_of(app, orders_table)
    assert row.request_id == rid
    (charge,) = rows_of(app, ledger, kind="charge")
    assert charge.request_id == rid and charge.order_id == row.id

    fields, entries = show(runner, order)
    assert fields["request_id"] == rid
    assert entries[0].endswith(f"charge -0.89 request_id={rid}")
    assert listed_ids(runner, "--request-id", rid) == [order]
    assert listed_ids(runner, "--request-id", "0" * 32) == []


def test_an_idempotent_replay_keeps_the_first_request_id(app, client, partner, catalog):
    data = {"action": "add", "key": partner[1], "service": "1234", "link": LINK,
            "quantity": "1000", "idempotency_key": "retry-1"}
    first = client.post("/api/v1", data=data).headers["x-serva-request-id"]
    second = client.post("/api/v1", data=data).headers["x-serva-request-id"]
    assert first != second
    assert [row.request_id for row in rows_of(app, orders_table)] == [first]
    assert [row.request_id for row in rows_of(app, ledger, kind="charge")] == [first]


def test_cli_rows_carry_one_cli_id_per_command(app, runner, placed):
    ok(runner, "order", "set-status", "ORD-100001", "Partial", "--remains", "250")
    ok(runner, "account", "credit", "partner@example.com", "5", "--note", "bonus")
    (refund,) = rows_of(app, ledger, kind="refund")
    (topup,) = rows_of(app, ledger, kind="topup", note="bonus")
    for row in (refund, topup):
        assert re.fullmatch(r"cli:[0-9a-f]{32}", row.request_id)
    assert refund.request_id != topup.request_id
    # the refund's id finds its order (the order row keeps the id of the add that placed it)
    assert listed_ids(runner, "--request-id", refund.request_id) == ["ORD-100001"]
    assert show(runner, "ORD-100001")[0]["request_id"] != refund.request_id
    assert show(runner, "ORD-100001")[1][1].endswith(f"request_id={refund.request_id}")
    assert listed_ids(runner, "--request-id", topup.request_id) == []


@pytest.mark.slow
def test_grouped_orders_each_keep_their_own_request_id(app, live_server, catalog):
    """Orders placed together share one transaction (group commit, run by one of the request
    threads): each still keeps the id of the request that placed it."""
    keys_ = [make_partner(app, f"p{i}@example.com")[1] for i in range(12)]

    def place(i):
        response = retrying_busy(lambda: requests.post(f"{live_server}/api/v1", timeout=30, data={
            "action": "add", "key": keys_[i], "service": "1234", "link": LINK, "quantity": "100"}))
        return response.json()["order"], response.headers["x-serva-request-id"]

    placed_ = dict(together(len(keys_), place))
    assert len(set(placed_.values())) == len(keys_)
    with app.app_context():
        placed_ = {parse_order(order): rid for order, rid in placed_.items()}
    for row in rows_of(app, orders_table):
        assert row.request_id == placed_[row.id]
    for row in rows_of(app, ledger, kind="charge"):
        assert row.request_id == placed_[row.order_id]


# ---------------------------------------------------------------- set-status

@pytest.mark.parametrize("status", ["Pending", "In progress", "Processing", "Completed"])
def test_set_status_without_refund(app, runner, api, placed, status):
    before = balance(app)
    output = ok(runner, "order", "set-status", "ORD-100001", status, "--start-count", "1200")
    assert output == f"ORD-100001: {status}\n"
    expected_remains = 0 if status == "Completed" else 1000
    assert api("status", order="ORD-100001") == {"charge": "0.89", "start_count": 1200, "status": status,
                                                 "remains": expected_remains, "currency": "USD"}
    assert balance(app) == before and refunds(app, 1) == []


def test_set_status_with_explicit_remains(app, runner, api, placed):
    ok(runner, "order", "set-status", "ORD-100001", "In progress", "--remains", "450")
    assert api("status", order="ORD-100001")["remains"] == 450
    ok(runner, "order", "set-status", "ORD-100001", "Completed", "--remains", "0")
    assert api("status", order="ORD-100001")["remains"] == 0


def test_partial_refunds_the_undelivered_part(app, runner, api, placed):
    before = balance(app)
    output = ok(runner, "order", "set-status", "ORD-100001", "Partial", "--remains", "333")
    assert output == "ORD-100001: Partial, refunded 0.29637\n"  # 0.89 x 333 / 1000
    assert balance(app) == before + 296_370
    assert refunds(app, 1) == [296_370]
    assert api("status", order="ORD-100001") == {"charge": "0.59363", "start_count": None,
                                                 "status": "Partial", "remains": 333, "currency": "USD"}
    ok(runner, "audit")


@pytest.mark.parametrize("quantity,rate,remains,refund", [
    (2, 3_500, 1, 4),        # charge 7 micro; 7 x 1 / 2 = 3.5 -> 4 (half-up)
    (3, 3_333, 1, 3),        # charge 10 micro; 10 / 3 = 3.33 -> 3
    (3, 3_333, 2, 7),        # 20 / 3 = 6.67 -> 7
])
def test_partial_refund_is_rounded_half_up(app, runner, api, quantity, rate, remains, refund):
    with app.app_context(), db.write() as conn:
        service = services.add(conn, name="Cheap", rate=rate, min_quantity=1, max_quantity=10)
    body = api("add", service=str(service), link=LINK, quantity=str(quantity))
    charge = (rate * quantity * 2 + 1000) // 2000
    ok(runner, "order", "set-status", body["order"], "Partial", "--remains", str(remains))
    assert refunds(app, 1) == [refund]
    assert api("status", order=body["order"])["charge"] == f"0.{charge - refund:06d}".rstrip("0")
    ok(runner, "audit")


def test_canceled_refunds_everything(app, runner, api, placed):
    before = balance(app)
    assert ok(runner, "order", "set-status", "ORD-100002", "Canceled") == "ORD-100002: Canceled, refunded 15\n"
    assert balance(app) == before + 15_000_000
    assert api("status", order="ORD-100002") == {"charge": "0", "start_count": None, "status": "Canceled",
                                                 "remains": 1, "currency": "USD"}
    ok(runner, "audit")


def test_cancel_after_completed_refunds_once(app, runner, api, placed):
    ok(runner, "order", "set-status", "ORD-100001", "Completed")
    ok(runner, "order", "set-status", "ORD-100001", "Canceled")
    assert refunds(app, 1) == [890_000]
    assert api("status", order="ORD-100001")["remains"] == 1000


@pytest.mark.parametrize("first,second", [
    (("Canceled",), ("Canceled",)),
    (("Canceled",), ("Partial", "--remains", "10")),
    (("Partial", "--remains", "10"), ("Partial", "--remains", "10")),
    (("Partial", "--remains", "10"), ("Canceled",)),
    (("Partial", "--remains", "10"), ("Completed",)),
    (("Canceled",), ("Pending",)),
])
def test_second_set_status_never_refunds_again(app, runner, placed, first, second):
    ok(runner, "order", "set-status", "ORD-100001", *first)
    after_first = (balance(app), refunds(app, 1))
    assert len(after_first[1]) == 1
    fails(runner, "order", "set-status", "ORD-100001", *second)
    assert (balance(app), refunds(app, 1)) == after_first
    ok(runner, "audit")


def test_concurrent_set_status_refunds_once(app, runner, placed):
    """Two operators cancel (or partially refund) the same order at the same moment."""
    for order_id, statuses in ((1, ("Canceled", "Canceled")), (3, ("Partial", "Canceled"))):
        barrier = threading.Barrier(2, timeout=10)
        outcomes = []

        def move(status):
            barrier.wait()
            try:
                with app.app_context(), db.write() as conn:
                    outcomes.append(orders_repo.set_status(conn, order_id, status,
                                                           remains=5 if status == "Partial" else None))
            except orders_repo.OrderError as error:
                outcomes.append(error)

        threads = [threading.Thread(target=move, args=(s,)) for s in statuses]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert sum(isinstance(o, int) and o > 0 for o in outcomes) == 1, outcomes
        assert sum(isinstance(o, orders_repo.OrderError) for o in outcomes) == 1, outcomes
        assert len(refunds(app, order_id)) == 1
    ok(runner, "audit")


@pytest.mark.parametrize("args", [
    ("Partial",),                            # no --remains
    ("Partial", "--remains", "0"),           # nothing undelivered: not a partial
    ("Partial", "--remains", "1000"),        # nothing delivered: cancel it instead
    ("Partial", "--remains", "5000"),
    ("Completed", "--remains", "1001"),
    ("In progress", "--remains", "2000"),
])
def test_set_status_refuses_impossible_remains(app, runner, placed, args):
    before = balance(app)
    fails(runner, "order", "set-status", "ORD-100001", *args)
    assert balance(app) == before and refunds(app, 1) == []


def test_set_status_usage_errors(runner, placed):
    fails(runner, "order", "set-status", "ORD-999999", "Completed")
    fails(runner, "order", "set-status", "nonsense", "Completed")
    assert cli(runner, "order", "set-status", "ORD-100001", "Lost").exit_code == 2
    assert cli(runner, "order", "set-status", "ORD-100001", "Completed", "--remains", "-1").exit_code == 2


def test_reactivating_an_order_cannot_make_two_active_orders_for_one_target(app, runner, api, placed):
    ok(runner, "order", "set-status", "ORD-100001", "Completed")
    newer = api("add", service="1234", link=LINK, quantity="2000")["order"]
    stderr = fails(runner, "order", "set-status", "ORD-100001", "In progress")
    assert "active" in stderr
    fields, _ = show(runner, "ORD-100001")
    assert fields["status"] == "Completed"
    ok(runner, "order", "set-status", newer, "Completed")
    ok(runner, "order", "set-status", "ORD-100001", "In progress")


# ---------------------------------------------------------------- audit

def test_audit_passes_on_a_clean_database(runner):
    assert ok(runner, "audit").startswith("audit passed")


def test_audit_passes_after_real_activity(app, runner, api, placed):
    ok(runner, "coupon", "create", "TEN", "--percent", "10")
    api("add", service="1234", link=LINK + "/c", quantity="1000", coupon="TEN")
    ok(runner, "order", "set-status", "ORD-100001", "Partial", "--remains", "1")
    ok(runner, "order", "set-status", "ORD-100002", "Canceled")
    ok(runner, "account", "credit", "partner@example.com", "5", "--note", "bonus")
    ok(runner, "account", "debit", "other@example.com", "1", "--note", "fee")
    assert ok(runner, "audit").startswith("audit passed")


def test_audit_names_a_balance_that_differs_from_its_ledger(app, runner, placed):
    sql(app, "UPDATE accounts SET balance = balance + 1 WHERE email = 'partner@example.com'")
    result = cli(runner, "audit")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "VIOLATION account partner@example.com (id 1): balance 83.910001 != ledger sum 83.91"]


def test_audit_names_an_order_whose_charge_differs_from_its_ledger(app, runner, placed):
    sql(app, "UPDATE orders SET charge = charge + 10 WHERE id = 3")
    result = cli(runner, "audit")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "VIOLATION order ORD-100003: charge 0.20001 / refunded 0 but ledger charged 0.2 / refunded 0"]


def test_audit_names_an_order_whose_refund_differs_from_its_ledger(app, runner, placed):
    ok(runner, "order", "set-status", "ORD-100002", "Canceled")
    sql(app, "DELETE FROM ledger WHERE kind = 'refund'")
    result = cli(runner, "audit")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "VIOLATION account partner@example.com (id 1): balance 98.91 != ledger sum 83.91",
        "VIOLATION order ORD-100002: charge 15 / refunded 15 but ledger charged 15 / refunded 0"]


def test_audit_names_every_violation(app, runner, placed):
    sql(app, "UPDATE accounts SET balance = 0 WHERE email = 'other@example.com'")
    sql(app, "UPDATE accounts SET balance = balance - 1 WHERE email = 'partner@example.com'")
    sql(app, "DELETE FROM ledger WHERE order_id = 1")
    sql(app, "UPDATE coupons SET uses = 3")  # no coupons: no violation from this
    result = cli(runner, "audit")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith("VIOLATION ") for line in lines)
    assert any("partner@example.com" in line for line in lines)
    assert any("other@example.com" in line for line in lines)
    assert any("ORD-100001" in line and "ledger charged 0 " in line for line in lines)


def test_audit_names_a_coupon_whose_uses_differ_from_its_redemptions(app, runner, api, placed):
    ok(runner, "coupon", "create", "TEN", "--percent", "10")
    api("add", service="1234", link=LINK + "/c", quantity="1000", coupon="TEN")
    ok(runner, "audit")
    sql(app, "UPDATE coupons SET uses = 2")
    result = cli(runner, "audit")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["VIOLATION coupon TEN: uses 2 != 1 redemptions"]


def test_the_database_refuses_a_negative_balance(app, runner, placed):
    with pytest.raises(IntegrityError):
        sql(app, "UPDATE accounts SET balance = -1 WHERE email = 'partner@example.com'")
    with app.app_context(), pytest.raises(ledger_repo.InsufficientFunds), db.write() as conn:
        ledger_repo.post(conn, 1, -10**12, "adjustment", "too much")
    fails(runner, "account", "debit", "partner@example.com", "1000000", "--note", "too much")
    assert balance(app) == 83_910_000
    ok(runner, "audit")


def test_audit_names_a_negative_balance_written_around_the_check(app, runner, placed, tmp_path):
    """If the CHECK were ever bypassed, audit still names the negative balance."""
    path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    app.extensions["serva.engine"].dispose()
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA ignore_check_constraints = ON")
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT INTO ledger (account_id, amount, kind, note, created_at) "
                    "SELECT id, -(balance + 1), 'adjustment', 'bypass', 0 FROM accounts WHERE id = 2")
        raw.execute("UPDATE accounts SET balance = -1 WHERE id = 2")
        raw.execute("COMMIT")
    finally:
        raw.close()
    result = cli(runner, "audit")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["VIOLATION account other@example.com: negative balance -0.000001"]


def write_around_the_foreign_keys(app, *statements):
    """Statements through a plain sqlite3 connection, as the sqlite3 shell runs them: foreign
    keys not enforced (Serva's own connections enforce them)."""
    path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    app.extensions["serva.engine"].dispose()
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        assert raw.execute("PRAGMA foreign_keys").fetchone() == (0,)
        for statement in statements:
            raw.execute(statement)
    finally:
        raw.close()


def ledger_row(account_id, amount, kind, order_id="NULL"):
    return (f"INSERT INTO ledger (id, account_id, amount, kind, order_id, note, created_at) "
            f"VALUES (900, {account_id}, {amount}, '{kind}', {order_id}, 'by hand', 0)")


@pytest.mark.parametrize("row, message", [
    (ledger_row(999, 5_000_000, "topup"), "ledger row 900 (topup 5): account id 999 does not exist"),
    (ledger_row(1, 0, "refund", 999), "ledger row 900 (refund 0): order ORD-100999 does not exist"),
    (ledger_row(1, 0, "charge"), "ledger row 900 (charge 0): a charge must name its order"),
    (ledger_row(1, 0, "refund"), "ledger row 900 (refund 0): a refund must name its order"),
    (ledger_row(1, 0, "refund", 4),
     "ledger row 900 (refund 0): order ORD-100004 belongs to account id 2, the row to account id 1"),
])
def test_audit_names_orphan_ledger_rows(app, runner, placed, row, message):
    ok(runner, "audit")
    write_around_the_foreign_keys(app, row)
    result = cli(runner, "audit")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"VIOLATION {message}"]


def test_a_topup_or_adjustment_needs_no_order(app, runner, placed):
    ok(runner, "account", "credit", "partner@example.com", "5", "--note", "bonus")
    ok(runner, "account", "debit", "partner@example.com", "1", "--note", "fee")
    assert ok(runner, "audit").startswith("audit passed")


@pytest.mark.parametrize("table, columns, what", [
    ("purchase_guards", "account_id, service_id, target_key, quantity", "purchase-guard rows"),
    ("idempotency_keys", "account_id, key, request_hash, response_json", "idempotency records"),
])
def test_audit_warns_about_expired_rows_that_prune_left(app, runner, placed, table, columns, what):
    now = db.now()
    values = {"purchase_guards": "1, 1234, 'k{n}', 1000", "idempotency_keys": "1, 'k{n}', 'h', '{{}}'"}[table]
    rows = [(n, now - age) for n, age in enumerate([3 * 86400, 2 * 86400, 3600])]
    write_around_the_foreign_keys(app, *(
        f"INSERT INTO {table} ({columns}, expires_at) VALUES ({values.format(n=n)}, {expires})"
        for n, expires in rows))
    result = cli(runner, "audit")
    assert result.exit_code == 0, result.stdout  # money is fine: a warning, not a violation
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"WARNING 2 {what} expired more than 86400 s ago and are still "
                               f"there (the oldest at ")
    assert "run `serva prune`" in lines[0]
    assert lines[1] == ("audit passed: balances equal their ledgers, orders match their ledger "
                        "rows (1 warning(s) above)")
    assert cli(runner, "audit", "--stale-after", "60").stdout.startswith(f"WARNING 3 {what}")
    ok(runner, "prune")
    assert ok(runner, "audit", "--stale-after", "0").startswith("audit passed")
