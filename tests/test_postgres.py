"""The money and duplicate tests against PostgreSQL (a throwaway schema per test in database
`test` on 127.0.0.1:5432); skipped when PostgreSQL or psycopg is not available.

Set SERVA_TEST_POSTGRES_URL to point elsewhere (a SQLAlchemy URL without query string)."""
import json
import time

import pytest
import requests
from sqlalchemy import create_engine, event, func, select, text

from serva import create_app, db, orders as orders_repo, services
from serva.ids import parse_order
from serva.money import format_amount, parse_amount
from serva.schema import accounts, orders
from serva.cli import cli as serva_cli

from conftest import make_partner, pg_schema, post, serving, together

pytestmark = pytest.mark.slow

RATE = "0.37"
@pytest.fixture
def pg_config():
    """Extra app settings for `pg_app` (a test overrides it with parametrize)."""
    return {}


@pytest.fixture
def pg_app(tmp_path, pg_config):
    with pg_schema() as url:
        app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": url,
                          **pg_config})
        try:
            db.init_schema(app.extensions["serva.engine"])
            yield app
        finally:
            app.extensions["serva.engine"].dispose()


@pytest.fixture
def pg_server(pg_app):
    with serving(pg_app) as url:
        yield url


def add_service(app, rate=RATE, **values):
    with app.app_context(), db.write() as conn:
        return str(services.add(conn, name="Followers", category="Test", rate=parse_amount(rate),
                                min_quantity=10, max_quantity=100_000, **values))


def balance(app, account_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()


def order_count(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(func.count()).select_from(orders)).scalar()


def audit(app):
    result = app.test_cli_runner().invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output
    return result.output


def test_schema_is_isolated(pg_app):
    with db.read(pg_app.extensions["serva.engine"]) as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar().startswith("serva_test_")


def test_fifty_threads_never_overspend(pg_app, pg_server):
    covered = 17
    charge = parse_amount(RATE)
    start = covered * charge + parse_amount("0.3")
    account_id, key = make_partner(pg_app, balance=format_amount(start))
    svc = add_service(pg_app)
    results = together(50, lambda i: post(pg_server, action="add", key=key, service=svc,
                                          link=f"https://example.com/p/{i}", quantity="1000"))
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    bodies = [json.loads(t) for _, t in results]
    won = [b for b in bodies if "order" in b]
    assert len(won) == covered
    assert {b["code"] for b in bodies if "order" not in b} == {"insufficient_balance"}
    assert sorted(parse_amount(b["balance"]) for b in won) == \
        [start - k * charge for k in range(covered, 0, -1)]
    assert balance(pg_app, account_id) == parse_amount("0.3")
    assert order_count(pg_app) == covered
    assert audit(pg_app).startswith("audit passed")


def test_twenty_identical_orders_place_one(pg_app, pg_server):
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    results = together(20, lambda i: post(pg_server, action="add", key=key, service=svc,
                                          link="https://example.com/same", quantity="1000"))
    bodies = [json.loads(t) for _, t in results]
    assert sum("order" in b for b in bodies) == 1, bodies
    assert sorted(b["code"] for b in bodies if "order" not in b) == ["duplicate_target"] * 19
    assert balance(pg_app, account_id) == 100_000_000 - 370_000
    audit(pg_app)


def test_one_active_order_per_target(pg_app, pg_server):
    _, key = make_partner(pg_app)
    svc = add_service(pg_app)
    results = together(20, lambda i: post(pg_server, action="add", key=key, service=svc,
                                          link="https://example.com/same", quantity=str(1000 + i)))
    bodies = [json.loads(t) for _, t in results]
    assert sum("order" in b for b in bodies) == 1, bodies
    assert sorted(b["code"] for b in bodies if "order" not in b) == ["active_order_exists"] * 19
    audit(pg_app)


def test_twenty_retries_with_one_idempotency_key(pg_app, pg_server):
    _, key = make_partner(pg_app)
    svc = add_service(pg_app)
    results = together(20, lambda i: post(pg_server, action="add", key=key, service=svc,
                                          link="https://example.com/once", quantity="1000",
                                          headers={"Idempotency-Key": "k1"}))
    assert len({t for _, t in results}) == 1
    assert "order" in json.loads(results[0][1])
    assert order_count(pg_app) == 1


def test_pipeline_and_operator_commands(pg_app):
    """The rest of the pipeline on PostgreSQL: coupons, the guard's expiry upsert, status,
    refunds, the CLI listing and the audit."""
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    runner = pg_app.test_cli_runner()
    assert runner.invoke(serva_cli, args=["coupon", "create", "TEN", "--percent", "10", "--max-uses", "1"]).exit_code == 0
    client = pg_app.test_client()

    def add(**params):
        return client.post("/api/v1", data={"action": "add", "key": key, "service": svc,
                                            "quantity": "1000", **params}).get_json()

    first = add(link="https://example.com/a", coupon="ten")
    assert first["charge"] == "0.333"
    assert add(link="https://example.com/b", coupon="TEN")["code"] == "invalid_coupon"
    assert add(link="https://example.com/a")["code"] == "duplicate_target"
    assert add(link="https://example.com/a", quantity="2000")["code"] == "active_order_exists"
    second = add(link="https://example.com/b")
    with pg_app.app_context(), db.write() as conn:
        assert orders_repo.set_status(conn, parse_order(first["order"]), "Partial", remains=500) == 166_500
        assert orders_repo.set_status(conn, parse_order(second["order"]), "Canceled") == 370_000
    batch = client.post("/api/v1", data={"action": "status", "key": key,
                                         "orders": f"{first['order']},{second['order']},x"}).get_json()
    assert batch[first["order"]]["charge"] == "0.1665"
    assert batch[second["order"]] == {"charge": "0", "start_count": None, "status": "Canceled",
                                      "remains": 1000, "currency": "USD"}
    assert batch["x"] == {"error": "Incorrect order ID"}
    assert balance(pg_app, account_id) == 100_000_000 - 166_500
    listing = runner.invoke(serva_cli, args=["order", "list", "--account", "partner@example.com"])
    assert listing.exit_code == 0 and listing.output.count("ORD-") == 2
    assert runner.invoke(serva_cli, args=["coupon", "list"]).output.startswith("TEN\tactive\t10% off\tuses 1/1")
    audit(pg_app)
    # The audit reads PostgreSQL's numeric sums correctly too.
    with pg_app.app_context(), db.write() as conn:
        conn.execute(text("UPDATE accounts SET balance = balance + 1"))
        conn.execute(text("UPDATE coupons SET uses = 0"))
    result = runner.invoke(serva_cli, args=["audit"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"VIOLATION account partner@example.com (id {account_id}): balance 99.833501 != ledger sum 99.8335",
        "VIOLATION coupon TEN: uses 0 != 1 redemptions"]


def test_guard_window_expiry_on_postgres(pg_app):
    from freezegun import freeze_time
    _, key = make_partner(pg_app)
    svc = add_service(pg_app)
    client = pg_app.test_client()
    params = {"action": "add", "key": key, "service": svc, "link": "https://example.com/a",
              "quantity": "1000"}
    with freeze_time("2031-03-01 12:00:00") as clock:
        first = client.post("/api/v1", data=params).get_json()["order"]
        with pg_app.app_context(), db.write() as conn:
            orders_repo.set_status(conn, parse_order(first), "Completed")
        clock.tick(299)
        assert client.post("/api/v1", data=params).get_json()["code"] == "duplicate_target"
        clock.tick(1)
        assert "order" in client.post("/api/v1", data=params).get_json()


def test_negative_balance_is_refused_by_postgres(pg_app):
    from sqlalchemy.exc import IntegrityError
    account_id, _ = make_partner(pg_app, balance="1")
    with pytest.raises(IntegrityError):
        with pg_app.app_context(), db.write() as conn:
            conn.execute(text("UPDATE accounts SET balance = -1 WHERE id = :id"), {"id": account_id})
    assert balance(pg_app, account_id) == 1_000_000


def test_services_with_and_without_explicit_ids(pg_app):
    """An explicit id (service add --id, service import) must not make the next service added
    without an id collide on PostgreSQL's sequence."""
    runner = pg_app.test_cli_runner()
    for args in (["--id", "1"], ["--id", "2"], [], ["--id", "1234"], []):
        result = runner.invoke(serva_cli, args=["service", "add", "--name", "S", "--rate", "1", "--max", "10", *args])
        assert result.exit_code == 0, (result.output, result.exception)
    listed = runner.invoke(serva_cli, args=["service", "list"]).output.splitlines()
    assert [int(line.split("\t")[0]) for line in listed] == [1, 2, 3, 1234, 1235]


def test_huge_ids_and_counts_are_clean_errors(pg_app):
    _, key = make_partner(pg_app)
    svc = add_service(pg_app)
    client = pg_app.test_client()

    def call(**params):
        response = client.post("/api/v1", data={"key": key, **params})
        assert response.status_code == 200
        return response.get_json()

    assert call(action="status", order="ORD-999999999999999999")["code"] == "order_not_found"
    assert call(action="status", orders="999999999999999999,1")["999999999999999999"] == \
        {"error": "Incorrect order ID"}
    assert call(action="add", service="999999999999999999", link="https://example.com",
                quantity="100")["code"] == "service_unavailable"
    order = call(action="add", service=svc, link="https://example.com", quantity="100")["order"]
    result = pg_app.test_cli_runner().invoke(serva_cli, args=["order", "set-status", order, "In progress",
                                                   "--start-count", str(2**31)])
    assert result.exit_code == 2
    result = pg_app.test_cli_runner().invoke(serva_cli, args=["order", "set-status", order, "In progress",
                                                   "--start-count", str(2**31 - 1)])
    assert result.exit_code == 0, result.output
    assert call(action="status", order=order)["start_count"] == 2**31 - 1


def test_nul_characters_are_clean_errors_on_postgres(pg_app):
    """PostgreSQL refuses NUL in text (SQLite stores it): a NUL in any parameter is the
    request's error before the database sees it, never a 500."""
    _, key = make_partner(pg_app)
    svc = add_service(pg_app)
    client = pg_app.test_client()
    for params in ({"coupon": "X\x00"}, {"idempotency_key": "k\x00"}, {"link": "https://e.com/\x00"}):
        for send in ({"data": {"key": key, "action": "add", "service": svc, "quantity": "100",
                               "link": "https://example.com", **params}},
                     {"json": {"key": key, "action": "add", "service": svc, "quantity": 100,
                               "link": "https://example.com", **params}}):
            response = client.post("/api/v1", **send)
            assert response.status_code == 200, (params, response.get_data())
            assert response.get_json()["code"] == "invalid_request"
    assert order_count(pg_app) == 0


def test_backup_points_to_pg_dump_on_postgres(pg_app, tmp_path):
    result = pg_app.test_cli_runner().invoke(serva_cli, args=["backup", str(tmp_path / "copy.sqlite")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: serva backup copies SQLite databases; for postgresql use pg_dump (README, Backups)"]
    assert not (tmp_path / "copy.sqlite").exists()


def test_concurrent_refills_and_cancels(pg_app, pg_server):
    """On PostgreSQL writers really overlap: of many simultaneous refills of one order exactly
    one is accepted (the order row lock and the partial unique index), and cancels racing the
    operator refund nothing."""
    account_id, key = make_partner(pg_app, balance="10")
    svc = add_service(pg_app, refill_days=30, cancel=True)
    runner = pg_app.test_cli_runner()
    placed = [json.loads(post(pg_server, action="add", key=key, service=svc,
                              link=f"https://example.com/{i}", quantity="100")[1])["order"]
              for i in range(2)]
    done, active = placed
    assert runner.invoke(serva_cli, args=["order", "set-status", done, "Completed"]).exit_code == 0

    answers = together(12, lambda i: json.loads(post(pg_server, action="refill", key=key,
                                                     order=done)[1]))
    assert sorted(a.get("refill", a.get("code")) for a in answers) == \
        ["REF-5001"] + ["refill_not_available"] * 11

    def race(i):
        if i == 0:
            with pg_app.app_context(), db.write() as conn:
                orders_repo.set_status(conn, parse_order(active), "Completed")
            return None
        return json.loads(post(pg_server, action="cancel", key=key, order=active)[1])
    answers = [a for a in together(8, race) if a is not None]
    assert all(a == {"cancel": 1} or a["code"] == "cancel_not_available" for a in answers), answers
    assert balance(pg_app, account_id) == parse_amount("10") - 2 * parse_amount("0.037")


@pytest.mark.parametrize("pg_config", [{"WRITE_WAIT_SECONDS": 1}])
def test_an_order_behind_a_held_row_lock_gets_503_busy(pg_app, pg_server):
    """Another connection holds the account's row lock (as a long transaction would): the
    order waits the bound (lock_timeout) and gets 503 `busy` with Retry-After, not a 500 and
    not an endless wait; `balance` is answered meanwhile; after the release orders work."""
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    holder = create_engine(pg_app.config["DATABASE_URL"])
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())
            started = time.monotonic()
            response = requests.post(f"{pg_server}/api/v1", timeout=30, data={
                "key": key, "action": "add", "service": svc, "quantity": "100",
                "link": "https://example.com/locked"})
            waited = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "Service temporarily unavailable, retry after 1 s",
                                       "code": "busy"}
            assert response.headers["Retry-After"] == "1"
            assert 0.9 <= waited < 5
            status, text = post(pg_server, action="balance", key=key)
            assert status == 200 and json.loads(text)["balance"] == "100"
    finally:
        holder.dispose()
    assert order_count(pg_app) == 0 and balance(pg_app, account_id) == parse_amount("100")
    status, text = post(pg_server, action="add", key=key, service=svc, quantity="100",
                        link="https://example.com/locked")
    assert status == 200 and "order" in json.loads(text), text


# ---------------------------------------------------------------- the pool's connections

def terminate(app, pid):
    """Kill a backend as an operator or a PostgreSQL restart would, and wait until it is gone."""
    admin = create_engine(app.config["DATABASE_URL"])
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
            deadline = time.monotonic() + 10
            while conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                               {"pid": pid}).scalar():
                assert time.monotonic() < deadline
                time.sleep(0.02)
                conn.rollback()  # a new snapshot of pg_stat_activity
    finally:
        admin.dispose()


@pytest.fixture
def backends(pg_app):
    """The backend pid of every connection the app's engine opens from now on (the pool is
    emptied first, so that is every connection it uses)."""
    pids = []

    def record(dbapi_connection, _record):
        pids.append(dbapi_connection.info.backend_pid)
    engine = pg_app.extensions["serva.engine"]
    engine.dispose()
    event.listen(engine, "connect", record)
    yield pids
    event.remove(engine, "connect", record)


def backend_states(app, pids):
    with db.read(app.extensions["serva.engine"]) as conn:
        return conn.execute(text("SELECT state FROM pg_stat_activity WHERE pid = ANY(:pids) "
                                 "AND pid <> pg_backend_pid()"), {"pids": pids}).scalars().all()


def test_requests_leave_no_transaction_open(pg_app, backends):
    """Between requests the pool's connections are idle, not idle in transaction (which would
    hold a snapshot and block vacuum), reads and writes alike."""
    _, key = make_partner(pg_app)
    svc = add_service(pg_app)
    client = pg_app.test_client()
    for data in ({"action": "balance"}, {"action": "services"},
                 {"action": "status", "order": "ORD-100001"}):
        assert client.post("/api/v1", data={"key": key, **data}).status_code == 200
    order = client.post("/api/v1", data={"action": "add", "key": key, "service": svc,
                                         "link": "https://example.com/a", "quantity": "1000"})
    assert order.get_json()["order"] == "ORD-100001"
    assert backends and set(backend_states(pg_app, backends)) <= {"idle"}


def test_requests_after_terminated_backends_are_answered_and_an_order_placed_once(pg_app, backends):
    """PostgreSQL restarted or the backends were killed: the pool's pre-ping replaces the
    broken connections, the partner sees normal answers, and an order is charged once."""
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    client = pg_app.test_client()
    assert client.post("/api/v1", data={"action": "balance", "key": key}).status_code == 200
    for pid in list(backends):
        terminate(pg_app, pid)
    response = client.post("/api/v1", data={"action": "balance", "key": key})
    assert response.status_code == 200 and response.get_json()["balance"] == "100"
    for pid in list(backends):
        if backend_states(pg_app, [pid]):
            terminate(pg_app, pid)
    response = client.post("/api/v1", data={"action": "add", "key": key, "service": svc,
                                            "link": "https://example.com/a", "quantity": "1000"})
    assert response.get_json()["balance"] == "99.63"
    assert order_count(pg_app) == 1 and balance(pg_app, account_id) == 99_630_000
    audit(pg_app)


@pytest.mark.parametrize("pg_config", [{"WRITE_WAIT_SECONDS": 5}])
def test_an_order_whose_backend_dies_during_the_call_is_not_retried(pg_app, pg_server):
    """A disconnect during the call leaves its outcome unknown to Serva: the answer is an error
    (500 with the request id), the call is not sent again; here the backend died waiting for the
    row lock, so nothing was charged, and the next order works."""
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    holder = create_engine(pg_app.config["DATABASE_URL"])
    answers = []
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())
            import threading
            sender = threading.Thread(target=lambda: answers.append(post(
                pg_server, action="add", key=key, service=svc, quantity="100",
                link="https://example.com/a")))
            sender.start()
            deadline = time.monotonic() + 4
            with holder.connect() as watch:
                while True:
                    waiting = watch.execute(text(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND pid <> pg_backend_pid()")).all()
                    if waiting:
                        break
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                    watch.rollback()
            terminate(pg_app, waiting[0].pid)
            sender.join(10)
    finally:
        holder.dispose()
    (status, text_), = answers
    assert status == 500 and json.loads(text_)["code"] == "internal_error"
    time.sleep(0.2)
    assert order_count(pg_app) == 0 and balance(pg_app, account_id) == parse_amount("100")
    status, text_ = post(pg_server, action="add", key=key, service=svc, quantity="100",
                         link="https://example.com/a")
    assert status == 200 and "order" in json.loads(text_), text_


@pytest.mark.parametrize("pg_config", [{"WRITE_WAIT_SECONDS": 1}])
def test_a_read_behind_a_lock_gets_503_busy(pg_app):
    """A read that waits for a lock (a migration holding the keys table, say) past the bound
    is 503 `busy`, as before; the next read works."""
    _, key = make_partner(pg_app)
    client = pg_app.test_client()
    assert client.post("/api/v1", data={"action": "balance", "key": key}).status_code == 200
    holder = create_engine(pg_app.config["DATABASE_URL"])
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))
            response = client.post("/api/v1", data={"action": "balance", "key": key})
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.get_json()["code"] == "busy"
    finally:
        holder.dispose()
    assert client.post("/api/v1", data={"action": "balance", "key": key}).status_code == 200


# ---------------------------------------------------------------- add

def rows(app, table, **where):
    from serva import schema
    t = schema.metadata.tables[table]
    with app.app_context(), db.read() as conn:
        return conn.execute(select(t).where(*(t.c[k] == v for k, v in where.items()))
                            .order_by(*t.primary_key.columns)).all()


def test_add_writes_the_order_and_its_charge_with_the_request_id(pg_app):
    """The order, its charge in the ledger (note, request id) and the balance, as the
    transaction wrote them."""
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    response = pg_app.test_client().post("/api/v1", data={
        "action": "add", "key": key, "service": svc, "link": "https://example.com/a",
        "quantity": "1000"})
    assert response.get_json() == {"order": "ORD-100001", "charge": "0.37", "currency": "USD",
                                   "balance": "99.63"}
    rid = response.headers["x-serva-request-id"]
    (order,) = rows(pg_app, "orders")
    assert (order.account_id, order.service_id, order.target, order.quantity, order.charge,
            order.remains, order.status, order.request_id, order.runs, order.runs_done,
            order.coupon_id, order.inputs_json) == (
        account_id, int(svc), "https://example.com/a", 1000, 370_000, 1000, "Pending", rid,
        None, None, None, None)
    charge = rows(pg_app, "ledger", kind="charge")
    assert [(r.account_id, r.amount, r.note, r.order_id, r.request_id) for r in charge] == \
        [(account_id, -370_000, "order ORD-100001", order.id, rid)]
    assert rows(pg_app, "dispatches") == []  # a manual service: no hand-over
    assert len(rows(pg_app, "purchase_guards")) == 1
    audit(pg_app)


def test_insufficient_balance_leaves_nothing_behind(pg_app):
    account_id, key = make_partner(pg_app, balance="0.36")
    svc = add_service(pg_app)
    client = pg_app.test_client()
    params = {"action": "add", "key": key, "service": svc, "link": "https://example.com/a",
              "quantity": "1000"}
    assert client.post("/api/v1", data=params).get_json()["code"] == "insufficient_balance"
    assert rows(pg_app, "orders") == [] and rows(pg_app, "purchase_guards") == []
    assert [r.kind for r in rows(pg_app, "ledger")] == ["topup"]
    assert balance(pg_app, account_id) == 360_000
    # no guard row stayed behind: the same order goes through once it can be paid
    make_partner_topup(pg_app, account_id, 10_000)
    assert client.post("/api/v1", data=params).get_json()["balance"] == "0"
    audit(pg_app)


def add_pricey_service(app):
    """A service whose charge for 10**8 units is above MAX_AMOUNT."""
    with app.app_context(), db.write() as conn:
        return str(services.add(conn, name="Pricey", category="Test",
                                rate=parse_amount("999999999999"), min_quantity=10,
                                max_quantity=10**9))


def make_partner_topup(app, account_id, amount):
    from serva import ledger
    with app.app_context(), db.write() as conn:
        ledger.post(conn, account_id, amount, "topup", "test top-up")


def test_a_charge_no_balance_can_cover(pg_app):
    """Above MAX_AMOUNT (it would not fit the column): insufficient_balance, after the guard."""
    account_id, key = make_partner(pg_app)
    svc = add_pricey_service(pg_app)
    client = pg_app.test_client()
    params = {"action": "add", "key": key, "service": svc, "link": "https://example.com/a",
              "quantity": str(10**8)}
    assert client.post("/api/v1", data=params).get_json()["code"] == "insufficient_balance"
    assert rows(pg_app, "orders") == [] and rows(pg_app, "purchase_guards") == []
    assert balance(pg_app, account_id) == 100_000_000


def test_duplicate_target_and_active_order_exist_leave_nothing_behind(pg_app):
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    client = pg_app.test_client()

    def add(quantity):
        return client.post("/api/v1", data={"action": "add", "key": key, "service": svc,
                                            "link": "https://example.com/a",
                                            "quantity": quantity}).get_json()
    assert "order" in add("1000")
    assert add("1000")["code"] == "duplicate_target"
    assert add("2000")["code"] == "active_order_exists"
    assert len(rows(pg_app, "orders")) == 1
    assert len(rows(pg_app, "purchase_guards")) == 1  # the refused one's guard row rolled back
    assert [r.kind for r in rows(pg_app, "ledger")] == ["topup", "charge"]
    assert balance(pg_app, account_id) == 100_000_000 - 370_000
    audit(pg_app)


def test_a_provider_service_writes_its_dispatch_row(pg_app):
    from serva import providers
    from serva.schema import services as services_table
    account_id, key = make_partner(pg_app)
    svc = add_service(pg_app)
    with pg_app.app_context(), db.write() as conn:
        provider_id = providers.add(conn, "upstream", "https://provider.example.com/api/v2", "k")
        conn.execute(services_table.update().where(services_table.c.id == int(svc)).values(
            provider_id=provider_id, provider_service="7"))
    answer = pg_app.test_client().post("/api/v1", data={
        "action": "add", "key": key, "service": svc, "link": "https://example.com/a",
        "quantity": "1000"}).get_json()
    (order,) = rows(pg_app, "orders")
    assert order.provider_id == provider_id and answer["order"] == "ORD-100001"
    assert [(d.order_id, d.kind, d.state, d.attempts, d.due_at == order.created_at)
            for d in rows(pg_app, "dispatches")] == [(order.id, "add", "due", 0, True)]


def test_dripfeed_and_fields_orders(pg_app):
    account_id, key = make_partner(pg_app)
    drip = add_service(pg_app, dripfeed=True)
    fields = add_service(pg_app, kind="fields",
                         fields_json=json.dumps([{"name": "player_id", "label": "Player",
                                                  "required": True}]))
    client = pg_app.test_client()
    first = client.post("/api/v1", data={"action": "add", "key": key, "service": drip,
                                         "link": "https://example.com/d", "quantity": "100",
                                         "runs": "3", "interval": "10"}).get_json()
    assert first["charge"] == "0.111"
    second = client.post("/api/v1", data={"action": "add", "key": key, "service": fields,
                                          "quantity": "10", "fields": '{"player_id": "77"}'}).get_json()
    assert "order" in second, second
    by_service = {r.service_id: r for r in rows(pg_app, "orders")}
    d, f = by_service[int(drip)], by_service[int(fields)]
    assert (d.quantity, d.runs, d.interval_minutes, d.runs_done) == (300, 3, 10, 0)
    assert (f.target, json.loads(f.inputs_json)) == ("player_id=77", {"player_id": "77"})
    audit(pg_app)


def test_answers_match_sqlite_request_for_request(pg_app, app):
    """The same requests on SQLite and PostgreSQL (the same function, `orders.place`): the same
    answers, including every refusal, and the same balances. Order numbers aside: a refused
    insert uses up a PostgreSQL sequence number (as it always did), not a SQLite rowid."""
    answers = {}
    for name, which in (("sqlite", app), ("postgresql", pg_app)):
        _, key = make_partner(which, balance="1")
        svc = add_service(which)
        big = add_pricey_service(which)
        client = which.test_client()
        got = []
        for service, link, quantity in (
                (svc, "https://example.com/a", "1000"),
                (svc, "https://example.com/a", "1000"),        # duplicate_target
                (svc, "https://example.com/a", "2000"),        # active_order_exists
                (svc, "https://example.com/b", "1000"),
                (svc, "https://example.com/c", "500"),
                (svc, "https://example.com/d", "1000"),        # insufficient_balance
                (big, "https://example.com/e", str(10**8)),    # above MAX_AMOUNT
                (svc, "https://example.com/f", "100")):
            answer = client.post("/api/v1", data={"action": "add", "key": key,
                                                  "service": service, "link": link,
                                                  "quantity": quantity}).get_json()
            if "order" in answer:
                answer["order"] = answer["order"][:4]
            got.append(answer)
        got.append(client.post("/api/v1", data={"action": "balance", "key": key}).get_json())
        answers[name] = got
    assert answers["sqlite"] == answers["postgresql"]
    assert [a.get("code") for a in answers["postgresql"]] == [
        None, "duplicate_target", "active_order_exists", None, None, "insufficient_balance",
        "insufficient_balance", None, None]
