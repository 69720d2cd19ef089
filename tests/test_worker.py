"""The fulfilment worker against a provider over real HTTP that misbehaves on purpose: every
outcome of a hand-over, every kind of status reply; for each, the order's state and the ledger.
Every test runs on SQLite and on PostgreSQL (skipped when PostgreSQL is not reachable)."""
import json
import threading
from contextlib import ExitStack, contextmanager

import pytest
from sqlalchemy import select, update

from serva import create_app, db, fulfilment, orders as orders_repo, providers
from serva.fulfilment import claim, sync
from serva.auth import flush_key_uses
from serva.ids import parse_order
from serva.schema import dispatches, ledger, orders, services
from serva.cli import cli as serva_cli

from conftest import pg_schema
from faulty_provider import KEY, FaultyProvider

LINK = "https://example.com/post/1"
FAST = {"SYNC_INTERVAL_SECONDS": 0, "DISPATCH_RETRY_SECONDS": 0, "DISPATCH_MAX_ATTEMPTS": 3,
        "PROVIDER_CONNECT_TIMEOUT": 1.0, "PROVIDER_READ_TIMEOUT": 0.5, "WORKER_CONCURRENCY": 4,
        "DISPATCH_LEASE_SECONDS": 60}


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, tmp_path):
    """The app on a temp-file SQLite database, or in a throwaway PostgreSQL schema."""
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'serva.sqlite'}" if request.param == "sqlite"
               else stack.enter_context(pg_schema()))
        app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": url,
                          "RATE_LIMIT_PER_KEY": ""})  # some tests place 130 orders at once
        try:
            db.init_schema(app.extensions["serva.engine"])
            yield app
        finally:
            flush_key_uses(app)  # the keys' last-used times, before the schema goes
            app.extensions["serva.engine"].dispose()


def link_service(app, service_id, provider_name, provider_service="1"):
    with app.app_context(), db.write() as conn:
        provider = providers.require(conn, provider_name)
        conn.execute(update(services).where(services.c.id == service_id).values(
            provider_id=provider.id, provider_service=provider_service))


def add_provider(app, name, url, key=KEY):
    with app.app_context(), db.write() as conn:
        return providers.add(conn, name, url, key)


@pytest.fixture
def faulty():
    provider = FaultyProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def linked(app, catalog, faulty):
    """The demo catalog with Followers (1234) and the comments service (1236) fulfilled by the
    faulty provider; fast settings."""
    app.config.update(FAST)
    add_provider(app, "up", faulty.url)
    link_service(app, 1234, "up", "11")
    link_service(app, 1236, "up", "13")
    return faulty


def run(app):
    with app.app_context():
        return fulfilment.run_pass()


def order(app, ident):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(orders).where(orders.c.id == parse_order(ident))).first()


def handover(app, ident):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(dispatches).where(dispatches.c.order_id == parse_order(ident))).first()


def refunds(app, ident):
    with app.app_context(), db.read() as conn:
        return [r.amount for r in conn.execute(select(ledger.c.amount).where(
            ledger.c.order_id == parse_order(ident), ledger.c.kind == "refund"))]


def audit(app):
    result = app.test_cli_runner().invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output


def cli(app, *args):
    result = app.test_cli_runner().invoke(serva_cli, args=[str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def place(api, link=LINK, quantity="1000"):
    body = api("add", service="1234", link=link, quantity=quantity)
    assert "order" in body, body
    return body["order"]


# ---------------------------------------------------------------- hand-over outcomes

def test_manual_services_get_no_handover(app, api, linked):
    ident = api("add", service="1235", link=LINK)["order"]  # the package stays manual
    assert handover(app, ident) is None
    run(app)
    assert linked.adds == [] and order(app, ident).status == "Pending"


@pytest.mark.parametrize("mode,expected", [("ok", "P5001"), ("int", "5001")])
def test_accepted_keeps_the_providers_order_id(app, api, linked, mode, expected):
    linked.add_default = mode
    ident = place(api)
    assert handover(app, ident).state == "due"  # written with the charge
    report = run(app)
    assert report.handed == 1
    row = order(app, ident)
    assert (row.provider_order, row.status, row.refunded) == (expected, "Pending", 0)
    assert handover(app, ident).state == "done"
    sent = linked.adds[0]
    assert (sent["service"], sent["link"], sent["quantity"]) == ("11", LINK, "1000")
    assert sent["idempotency_key"] == fulfilment.idempotency_key(row.id, row.created_at)
    run(app)
    assert len(linked.adds) == 1  # never sent twice
    audit(app)


def test_comments_are_handed_over_as_lines(app, api, linked):
    ident = api("add", service="1236", link=LINK, comments="great\nnice\n")["order"]
    run(app)
    assert linked.adds[0]["comments"] == "great\nnice" and "quantity" not in linked.adds[0]
    assert order(app, ident).provider_order == "P5001"


def test_read_timeout_is_unknown_and_never_resent(app, api, linked, partner):
    linked.add_script = ["slow"]
    ident = place(api)
    assert run(app).unknown == 1
    assert (handover(app, ident).state, order(app, ident).status) == ("unknown", "Pending")
    run(app)
    run(app)
    assert len(linked.adds) == 1 and refunds(app, ident) == []
    listed = cli(app, "order", "unknown")
    assert listed.startswith(f"{ident}\tup\tqty 1000\t{LINK}\t") and "read timeout" in listed
    assert cli(app, "order", "list", "--unknown").split("\t")[0] == ident
    # The operator checks at the provider: it was placed.
    out = cli(app, "order", "resolve", ident, "--provider-order", linked.adds[0]["order"])
    assert "placed" in out
    linked.status_of["P5001"] = {"status": "In progress", "remains": "400", "start_count": "12"}
    run(app)
    row = order(app, ident)
    assert (row.status, row.remains, row.start_count) == ("In progress", 400, 12)
    assert len(linked.adds) == 1
    audit(app)


def test_malformed_reply_is_unknown(app, api, linked):
    linked.add_script = ["malformed"]
    ident = place(api)
    run(app)
    assert handover(app, ident).state == "unknown" and len(linked.adds) == 1
    assert cli(app, "order", "resolve", ident, "--cancel") == f"{ident}: Canceled, refunded 0.89\n"
    assert refunds(app, ident) == [890_000] and order(app, ident).status == "Canceled"
    result = app.test_cli_runner().invoke(serva_cli, args=["order", "resolve", ident, "--resend"])
    assert result.exit_code == 2 and "no hand-over of unknown outcome" in result.stderr
    audit(app)


def test_resolve_resend_hands_it_over_again(app, api, linked):
    linked.add_script = ["reset"]
    ident = place(api)
    run(app)
    assert handover(app, ident).state == "unknown"
    cli(app, "order", "resolve", ident, "--resend")
    run(app)
    assert handover(app, ident).state == "done" and len(linked.adds) == 2


def test_a_refusal_for_now_is_retried_then_canceled_with_a_full_refund(app, api, linked, client,
                                                                      partner):
    """Each answer says nothing was placed, so giving up past the limit refunds for certain."""
    funds = "Not enough funds on balance"
    linked.add_default = {"error": funds}
    ident = place(api)
    for attempt in (1, 2):
        assert run(app).retrying == 1
        state = handover(app, ident)
        assert (state.state, state.attempts, state.last_message) == ("due", attempt, funds)
        assert order(app, ident).status == "Pending" and refunds(app, ident) == []
    assert run(app).canceled == 1
    assert refunds(app, ident) == [890_000]
    assert handover(app, ident).last_message == f"gave up after 3 attempts: {funds}"
    status = api("status", order=ident)
    assert status == {"charge": "0", "start_count": None, "status": "Canceled", "remains": 1000,
                      "currency": "USD"}
    run(app)
    assert refunds(app, ident) == [890_000] and linked.add_requests == 3 and linked.adds == []
    audit(app)


def test_retries_back_off_exponentially(app, api, linked):
    app.config["DISPATCH_RETRY_SECONDS"] = 30
    app.config["DISPATCH_MAX_ATTEMPTS"] = 10
    linked.add_default = {"error": "Too many requests, retry later"}
    ident = place(api)
    for attempt, delay in ((1, 30), (2, 60), (3, 120)):
        before = db.now()
        run(app)
        state = handover(app, ident)
        assert state.attempts == attempt
        assert before + delay <= state.due_at <= db.now() + delay
        run(app)  # not due yet: nothing sent
        assert handover(app, ident).attempts == attempt
        with app.app_context(), db.write() as conn:  # time passes
            conn.execute(update(dispatches).values(due_at=db.now()))
    assert claim.backoff(30, 20) == 6 * 3600


def test_refusal_for_good_cancels_and_keeps_the_message_from_the_partner(app, api, linked):
    linked.add_script = [{"error": "Incorrect link"}]
    ident = place(api)
    assert run(app).canceled == 1
    assert (order(app, ident).status, refunds(app, ident)) == ("Canceled", [890_000])
    assert handover(app, ident).last_message == "Incorrect link"
    assert "Incorrect link" not in str(api("status", order=ident))
    show = cli(app, "order", "show", ident)
    assert "last provider message: Incorrect link" in show and "provider: up" in show
    audit(app)


@pytest.mark.parametrize("message", [
    "Not enough funds on balance",
    "You have active order with this link. Please wait until order being completed.",
    "Duplicate order for this target is blocked"])
def test_refusals_for_now_wait_pending(app, api, linked, message):
    linked.add_script = [{"error": message}]
    ident = place(api)
    assert run(app).retrying == 1
    assert (order(app, ident).status, handover(app, ident).state) == ("Pending", "due")
    assert refunds(app, ident) == []
    run(app)
    assert order(app, ident).provider_order == "P5001"


def test_not_enough_funds_waits_until_retry(app, api, linked):
    app.config["DISPATCH_RETRY_SECONDS"] = 3600
    linked.add_script = [{"error": "Not enough funds on balance"}]
    ident = place(api)
    run(app)
    line = cli(app, "provider", "list")
    assert "waiting 1" in line and "last error Not enough funds on balance at " in line
    assert "balance 100.5 USD" in line
    run(app)
    assert handover(app, ident).attempts == 1  # not due before the backoff
    assert cli(app, "provider", "retry", "up") == "provider up: 1 waiting hand-overs due now\n"
    assert run(app).handed == 1
    assert order(app, ident).provider_order == "P5001"
    assert "waiting 0\tin flight 1\tunknown 0" in cli(app, "provider", "list")


def test_disabled_provider_is_refused_for_now(app, api, linked):
    cli(app, "provider", "disable", "up")
    ident = place(api)
    run(app)
    assert handover(app, ident).last_message == "provider disabled" and linked.adds == []
    cli(app, "provider", "enable", "up")
    run(app)
    assert order(app, ident).provider_order == "P5001"


def test_connection_refused_is_refused_for_now(app, api, linked):
    linked.stop()
    ident = place(api)
    run(app)
    state = handover(app, ident)
    assert state.state == "due" and "connection failed" in state.last_message
    assert order(app, ident).status == "Pending"


@pytest.mark.parametrize("status", ["Canceled", "Completed"])
def test_a_waiting_handover_is_withdrawn_by_the_operators_final_status(app, api, linked, status):
    ident = place(api)
    cli(app, "order", "set-status", ident, status)
    state = handover(app, ident)  # withdrawn in the same transaction: no worker can claim it
    assert (state.state, state.last_message) == ("canceled", f"withdrawn: the operator set {status}")
    run(app)
    run(app)
    assert linked.adds == [] and handover(app, ident).state == "canceled"
    assert refunds(app, ident) == ([890_000] if status == "Canceled" else [])
    audit(app)


def charges(app, ident):
    with app.app_context(), db.read() as conn:
        return [r.amount for r in conn.execute(select(ledger.c.amount).where(
            ledger.c.order_id == parse_order(ident), ledger.c.kind == "charge"))]


@contextmanager
def held_handover(app, linked):
    """A pass in another thread whose `add` reached the provider, its reply held back until
    the block ends; yields the list that receives the pass's report."""
    app.config["PROVIDER_READ_TIMEOUT"] = 15.0  # the held reply must not time out
    linked.add_script = ["hold"]
    reports = []
    passing = threading.Thread(target=lambda: reports.append(run(app)))
    passing.start()
    try:
        assert linked.held.wait(10), "the hand-over never reached the provider"
        yield reports
    finally:
        linked.release.set()
        passing.join(20)
    assert not passing.is_alive()


@pytest.mark.parametrize("status", ["Canceled", "Partial", "Completed"])
def test_operator_cannot_settle_an_order_while_it_is_handed_over(app, api, linked, status):
    ident = place(api)
    with held_handover(app, linked) as reports:
        result = app.test_cli_runner().invoke(
            serva_cli, args=["order", "set-status", ident, status, "--remains", "10"])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == (f"error: order {ident} is being handed over to its provider right "
                                 f"now; wait for the worker's pass to record the answer, then try "
                                 f"again\n")
        assert (order(app, ident).status, handover(app, ident).state) == ("Pending", "sending")
    assert reports[0].handed == 1 and len(linked.adds) == 1
    row = order(app, ident)
    assert (row.status, row.provider_order, row.refunded, row.attention) == ("Pending", "P5001", 0, None)
    assert charges(app, ident) == [-890_000] and refunds(app, ident) == []
    audit(app)


def test_an_order_settled_behind_the_workers_back_is_flagged_not_accepted(app, api, linked):
    """The provider places an order that became final meanwhile by a path that skips the
    guard (here: `orders.move` directly): the reply is kept and flagged, never recorded as
    a hand-over of an active order."""
    ident = place(api)
    with held_handover(app, linked) as reports:
        with app.app_context(), db.write() as conn:
            orders_repo.move(conn, order(app, ident), "Canceled", remains=1000, next_sync_at=None,
                             by=orders_repo.CLI)
    assert reports[0].flagged == 1 and reports[0].handed == 0
    row = order(app, ident)
    assert (row.status, row.provider_order, row.next_sync_at) == ("Canceled", "P5001", None)
    assert row.attention == ("the provider placed it as P5001 after it was settled here; "
                             "cancel it at the provider")
    assert refunds(app, ident) == [890_000]
    run(app)
    assert linked.status_calls == [] and refunds(app, ident) == [890_000]
    audit(app)


def test_operator_cannot_settle_an_order_of_unknown_outcome(app, api, linked):
    linked.add_script = ["slow"]
    ident = place(api)
    assert run(app).unknown == 1
    result = app.test_cli_runner().invoke(serva_cli, args=["order", "set-status", ident, "Canceled"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"error: order {ident} was sent to its provider with no answer "
                             f"(outcome unknown); check at the provider and settle it with "
                             f"`serva order resolve {ident}` (--provider-order PID, --resend or "
                             f"--cancel)\n")
    assert order(app, ident).status == "Pending" and refunds(app, ident) == []
    cli(app, "order", "resolve", ident, "--cancel")
    assert refunds(app, ident) == [890_000] and len(linked.adds) == 1
    audit(app)


def test_serva_provider_unknown_outcome_is_resent_with_the_same_key(app, api, catalog):
    provider = FaultyProvider(idempotent=True).start()
    try:
        app.config.update(FAST)
        add_provider(app, "serva", provider.url)
        link_service(app, 1234, "serva")
        provider.add_script = ["slow"]
        ident = place(api)
        run(app)  # learns from the balance reply that it is a Serva; the add times out
        assert handover(app, ident).state == "due"
        run(app)  # resent: the provider replays its first answer
        assert handover(app, ident).state == "done"
        assert len(provider.adds) == 1 and order(app, ident).provider_order == "P5001"
    finally:
        provider.stop()


def test_connection_refused_every_time_cancels_with_a_full_refund(app, api, linked):
    linked.stop()
    ident = place(api)
    for _ in range(3):
        run(app)
    assert (order(app, ident).status, refunds(app, ident)) == ("Canceled", [890_000])
    assert handover(app, ident).last_message.startswith("gave up after 3 attempts: connection failed")
    audit(app)


def test_a_serva_unreachable_after_a_lost_reply_is_never_refunded_by_itself(app, api, catalog):
    """The first call may have placed the order; the later ones never arrived: only the
    operator can tell, so past the limit it is unknown, not refunded."""
    provider = FaultyProvider(idempotent=True).start()
    app.config.update(FAST)
    add_provider(app, "serva", provider.url)
    link_service(app, 1234, "serva")
    provider.add_script = ["slow"]
    ident = place(api)
    run(app)
    assert handover(app, ident).state == "due"
    provider.stop()
    run(app)
    run(app)
    state = handover(app, ident)
    assert (state.state, state.attempts) == ("unknown", 3)
    assert state.last_message.startswith("gave up after 3 attempts: connection failed")
    assert order(app, ident).status == "Pending" and refunds(app, ident) == []
    assert len(provider.adds) == 1
    audit(app)


# ---------------------------------------------------------------- status sync

def accepted(app, api, linked, count=1, quantity="1000"):
    idents = [place(api, link=f"{LINK}/{i}", quantity=quantity) for i in range(count)]
    assert run(app).handed == count
    return idents


def test_status_moves_and_completed_is_never_polled_again(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 600}
    run(app)
    assert api("status", order=ident) == {"charge": "0.89", "start_count": 10,
                                          "status": "In progress", "remains": 600, "currency": "USD"}
    linked.status_of["P5001"] = {"status": "Completed", "start_count": 10, "remains": 0}
    run(app)
    assert (order(app, ident).status, order(app, ident).next_sync_at) == ("Completed", None)
    calls = len(linked.status_calls)
    run(app)
    assert len(linked.status_calls) == calls and refunds(app, ident) == []
    audit(app)


def test_partial_refunds_exactly_once(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "Partial", "remains": "333"}
    run(app)
    assert refunds(app, ident) == [296_370]
    assert api("status", order=ident)["charge"] == "0.59363"
    run(app)
    assert refunds(app, ident) == [296_370]
    audit(app)


def test_refunded_means_canceled(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "Refunded", "remains": 0}
    run(app)
    row = order(app, ident)
    assert (row.status, row.remains, refunds(app, ident)) == ("Canceled", 1000, [890_000])
    run(app)
    assert refunds(app, ident) == [890_000]
    audit(app)


def test_incorrect_order_id_flags_and_refunds_nothing(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"error": "Incorrect order ID"}
    assert run(app).flagged == 1
    row = order(app, ident)
    assert (row.status, row.attention, refunds(app, ident)) == \
        ("Pending", "provider: Incorrect order ID", [])
    assert cli(app, "order", "list", "--attention").split("\t")[0] == ident
    assert "attention: provider: Incorrect order ID" in cli(app, "order", "show", ident)


@pytest.mark.parametrize("status,remains,expected_status,expected_remains", [
    ("In progress", 400, "In progress", 400),
    ("In progress", None, "In progress", 1000),  # no remains yet: the last value stays
    ("Completed", 7, "Completed", 0),
    ("Delivering", 5, "Pending", 1000),  # an unknown status changes nothing
])
def test_sensible_remains_and_unknown_statuses(app, api, linked, status, remains,
                                               expected_status, expected_remains):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": status, "remains": remains}
    run(app)
    row = order(app, ident)
    assert (row.status, row.remains, row.attention, refunds(app, ident)) == \
        (expected_status, expected_remains, None, [])
    audit(app)


@pytest.mark.parametrize("status,remains", [
    ("In progress", -5), ("In progress", 5000), ("Partial", -5), ("Partial", 5000),
    ("Partial", "many"), ("Partial", "12.5"), ("Partial", None), ("Partial", {"left": 3})])
def test_remains_that_make_no_sense_change_nothing_and_flag_the_order_once(
        app, api, linked, caplog, status, remains):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "In progress", "remains": 400, "start_count": 7}
    run(app)
    reply = {"status": status, "remains": remains, "start_count": 99}
    linked.status_of["P5001"] = reply
    caplog.set_level("WARNING", logger="serva.worker")
    assert run(app).flagged == 1
    for _ in range(2):
        assert run(app).flagged == 0
    row = order(app, ident)
    assert (row.status, row.remains, row.start_count, row.refunded) == ("In progress", 400, 7, 0)
    assert refunds(app, ident) == [] and row.next_sync_at is not None
    assert row.attention.startswith("provider reply makes no sense") and len(row.attention) <= 255
    assert json.dumps(remains) in row.attention  # the provider's words, kept for the operator
    assert cli(app, "order", "list", "--attention").split("\t")[0] == ident
    assert [r.getMessage() for r in caplog.records if ident in r.getMessage()] == \
        [f"order {ident}: {row.attention}; flagged for the operator"]
    linked.status_of["P5001"] = {"status": "Completed", "remains": 0}
    run(app)
    assert (order(app, ident).status, refunds(app, ident)) == ("Completed", [])
    audit(app)


def test_a_long_odd_reply_is_kept_truncated(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "Partial", "remains": "x" * 1000}
    run(app)
    attention = order(app, ident).attention
    assert len(attention) == 255 and attention.endswith("…") and "xxxx" in attention
    assert order(app, ident).status == "Pending" and refunds(app, ident) == []


def test_a_batch_with_mixed_results(app, api, linked):
    idents = accepted(app, api, linked, count=6, quantity="100")
    by_provider = {order(app, i).provider_order: i for i in idents}
    assert sorted(by_provider) == [f"P{5001 + i}" for i in range(6)]
    linked.status_of.update({
        "P5001": {"status": "Completed", "remains": 0},
        "P5002": {"status": "Partial", "remains": 25},
        "P5003": {"error": "Incorrect order ID"},
        "P5004": {"status": "Canceled"},
        "P5005": {"status": "Mystery"},
        # P5006 missing from the reply
    })
    linked.status_of["P5006"] = None
    run(app)
    assert len(linked.status_calls) >= 1
    assert len(linked.status_calls[-1].split(",")) == 6  # one call for the batch
    states = {p: (order(app, i).status, refunds(app, i), order(app, i).attention)
              for p, i in by_provider.items()}
    assert states == {
        "P5001": ("Completed", [], None),
        "P5002": ("Partial", [22_250], None),     # 0.089 x 25 / 100
        "P5003": ("Pending", [], "provider: Incorrect order ID"),
        "P5004": ("Canceled", [89_000], None),
        "P5005": ("Pending", [], None),
        "P5006": ("Pending", [], None),
    }
    audit(app)


def test_every_batch_statement_of_the_sync_with_several_rows(app, api, linked):
    """Several orders in each kind of change in one reply: progress, rescheduled (missing or
    unknown), flagged, final; each group is written by one statement with several rows."""
    idents = accepted(app, api, linked, count=8, quantity="100")
    theirs = {order(app, i).provider_order: i for i in idents}
    replies = [{"status": "In progress", "remains": 40, "start_count": 3},
               {"status": "In progress", "remains": 60, "start_count": 4},
               None, {"status": "Mystery"},
               {"error": "Incorrect order ID"}, {"status": "Partial", "remains": 500},
               {"status": "Completed", "remains": 0}, {"status": "Partial", "remains": 10}]
    for provider_order, reply in zip(sorted(theirs), replies):
        linked.status_of[provider_order] = reply
    report = run(app)
    assert (report.synced, report.flagged, report.refunded) == (4, 2, 1)
    rows = [order(app, theirs[p]) for p in sorted(theirs)]
    assert [(r.status, r.remains, r.start_count) for r in rows] == [
        ("In progress", 40, 3), ("In progress", 60, 4), ("Pending", 100, None),
        ("Pending", 100, None), ("Pending", 100, None), ("Pending", 100, None),
        ("Completed", 0, None), ("Partial", 10, None)]
    assert [r.attention is not None for r in rows] == [False] * 4 + [True, True] + [False] * 2
    assert all(r.next_sync_at is not None for r in rows[:6])
    assert [refunds(app, theirs[p]) for p in sorted(theirs)] == [[]] * 7 + [[8_900]]
    audit(app)


@pytest.mark.parametrize("fault", ["500", "malformed"])
def test_a_failed_status_call_changes_nothing(app, api, linked, fault):
    ident, = accepted(app, api, linked)
    linked.status_script = [fault]
    run(app)
    row = order(app, ident)
    assert (row.status, row.next_sync_at is not None, refunds(app, ident)) == ("Pending", True, [])
    assert "status:" in cli(app, "provider", "list")
    linked.status_of["P5001"] = {"status": "Completed", "remains": 0}
    run(app)
    assert order(app, ident).status == "Completed"


def test_batches_hold_at_most_100_orders(app, api, linked, partner):
    with app.app_context(), db.write() as conn:
        conn.execute(update(services).where(services.c.id == 1234).values(min_quantity=1))
    idents = accepted(app, api, linked, count=130, quantity="1")
    before = len(linked.status_calls)
    run(app)
    sizes = sorted(len(call.split(",")) for call in linked.status_calls[before:])
    assert sizes == [30, 100]
    assert all(order(app, i).status == "Pending" for i in idents[:3])


def test_sync_interval_grows_with_age():
    assert sync.sync_interval(60, 0) == 60
    assert sync.sync_interval(60, 3600) == 180
    assert sync.sync_interval(60, 86_400) == 2940
    assert sync.sync_interval(60, 10 ** 7) == 3600
    assert sync.sync_interval(0, 10 ** 7) == 0


def test_worker_once_command(app, api, linked):
    place(api)
    result = app.test_cli_runner().invoke(serva_cli, args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("handed over 1, retrying 0, canceled 0, unknown 0;")


def test_demo_orders_complete_through_the_simulated_provider(app, monkeypatch):
    from serva.fulfilment import simulated
    runner = app.test_cli_runner()
    for _ in range(2):  # again: repairs, never duplicates
        result = runner.invoke(serva_cli, args=["demo"])
        assert result.exit_code == 0, result.output
    key = result.output.splitlines()[-1]
    assert "fulfilled by the simulated provider" in result.output
    assert runner.invoke(serva_cli, args=["provider", "list"]).output.count("sim://") == 1
    app.config.update(FAST)
    client = app.test_client()
    placed = client.post("/api/v1", data={"action": "add", "key": key, "service": "1234",
                                          "link": LINK, "quantity": "1000"}).get_json()
    manual = client.post("/api/v1", data={"action": "add", "key": key, "service": "7788",
                                          "quantity": "10", "fields[player_id]": "1",
                                          "fields[server_id]": "2"}).get_json()
    assert run(app).handed == 1
    assert order(app, placed["order"]).provider_order and handover(app, manual["order"]) is None
    clock = simulated.time.time() + 60
    monkeypatch.setattr(simulated.time, "time", lambda: clock)
    run(app)
    status = client.post("/api/v1", data={"action": "status", "key": key,
                                          "order": placed["order"]}).get_json()
    assert status["status"] in ("Completed", "Partial", "Canceled")
    audit(app)


def test_serva_provider_unknown_past_the_limit_stays_unknown(app, api, catalog):
    """Never refunded without the provider's word: a hand-over that timed out every time may
    have been placed, so past the limit it goes to the operator, not to a refund."""
    provider = FaultyProvider(idempotent=True).start()
    try:
        app.config.update(FAST)
        add_provider(app, "serva", provider.url)
        link_service(app, 1234, "serva")
        provider.add_default = "malformed_unplaced"
        ident = place(api)
        for _ in range(3):
            run(app)
        assert handover(app, ident).state == "unknown" and refunds(app, ident) == []
    finally:
        provider.stop()


def test_dripfeed_orders_are_handed_over_per_run(app, api, linked):
    with app.app_context(), db.write() as conn:
        conn.execute(update(services).where(services.c.id == 1234).values(dripfeed=True))
    body = api("add", service="1234", link=LINK, quantity="100", runs="3", interval="10")
    assert "order" in body, body
    run(app)
    sent = linked.adds[0]
    assert (sent["quantity"], sent["runs"], sent["interval"]) == ("100", "3", "10")
    assert order(app, body["order"]).quantity == 300


# ---------------------------------------------------------------- replies of unknown outcome

def placed_as(app, linked):
    """partner order id -> the provider order id it was placed as (by its idempotency key)."""
    with app.app_context(), db.read() as conn:
        keys = {fulfilment.idempotency_key(row.id, row.created_at): row.id
                for row in conn.execute(select(orders.c.id, orders.c.created_at))}
    return {keys[entry["idempotency_key"]]: entry["order"] for entry in linked.adds}


@pytest.mark.parametrize("fault", ["500 placed", "502 placed"])
def test_a_5xx_after_placing_is_unknown_and_never_sent_again(app, api, linked, fault):
    """A panel whose code fails after it stored the order, or a proxy that lost the reply:
    each partner order stays one upstream order however many passes run, waits for the
    operator, and is never refunded by itself."""
    linked.add_default = fault
    idents = [place(api, link=f"{LINK}/{i}") for i in range(3)]
    assert run(app).unknown == 3
    for _ in range(5):
        run(app)
    assert linked.add_requests == 3 and len(linked.adds) == 3
    listed = cli(app, "order", "unknown").splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(idents)
    assert all(f"HTTP {fault[:3]}" in line for line in listed)
    assert all(order(app, i).status == "Pending" and refunds(app, i) == [] for i in idents)
    placed = placed_as(app, linked)
    for ident in idents:
        theirs = placed[parse_order(ident)]
        assert "placed" in cli(app, "order", "resolve", ident, "--provider-order", theirs)
        linked.status_of[theirs] = {"status": "Completed", "remains": 0, "start_count": 5}
    assert cli(app, "order", "unknown") == "none\n"
    linked.add_default = "ok"
    run(app)
    run(app)
    assert linked.add_requests == 3 and len(linked.adds) == 3
    assert all(order(app, i).status == "Completed" and refunds(app, i) == [] for i in idents)
    audit(app)


@pytest.mark.parametrize("fault", ["500", "429", "404"])
def test_an_error_status_without_placing_is_unknown_too_and_the_operator_decides(
        app, api, linked, fault):
    linked.add_default = fault
    resent, canceled = place(api, link=f"{LINK}/1"), place(api, link=f"{LINK}/2")
    for _ in range(5):
        run(app)
    assert linked.add_requests == 2 and linked.adds == []
    listed = cli(app, "order", "unknown")
    assert resent in listed and canceled in listed and f"HTTP {fault}" in listed
    assert refunds(app, resent) == refunds(app, canceled) == []
    linked.add_default = "ok"
    cli(app, "order", "resolve", resent, "--resend")
    assert cli(app, "order", "resolve", canceled, "--cancel") == \
        f"{canceled}: Canceled, refunded 0.89\n"
    run(app)
    run(app)
    assert linked.add_requests == 3 and len(linked.adds) == 1
    assert order(app, resent).provider_order == linked.adds[0]["order"]
    assert (order(app, canceled).status, refunds(app, canceled)) == ("Canceled", [890_000])
    audit(app)


@pytest.mark.parametrize("fault", ["500 placed", "502", "429"])
def test_a_serva_answering_an_error_status_is_asked_again_with_the_same_key(app, api, catalog, fault):
    """A Serva replays the first answer to a repeated Idempotency-Key: asking again is safe."""
    provider = FaultyProvider(idempotent=True).start()
    try:
        app.config.update(FAST)
        add_provider(app, "serva", provider.url)
        link_service(app, 1234, "serva")
        provider.add_script = [fault]
        ident = place(api)
        run(app)
        assert handover(app, ident).state == "due"
        run(app)
        assert handover(app, ident).state == "done" and provider.add_requests == 2
        assert len(provider.adds) == 1 and order(app, ident).provider_order == "P5001"
        assert len(set(provider.keys_received())) == 1
    finally:
        provider.stop()
