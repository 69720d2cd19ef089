"""An order's status history (order_history) and its hand-over attempts (handover_attempts):
written in the transaction of each change or recorded outcome — by the operator's command, the
console, the worker's sync, the partner's cancel — and none for a change that rolled back; the
provider's replies kept with its key masked, even when it echoes the key back; both on the
console's order page. And `serva audit` from the CLI recording what the overview shows."""
import pytest
from sqlalchemy import select, update

from serva import db, orders as orders_repo, providers
from serva.cli import cli as serva_cli
from serva.fulfilment import simulated, sync
from serva.ids import parse_order
from serva.schema import (HANDOVER_REPLY_LENGTH, accounts, activity, handover_attempts, ledger,
                          order_history)
from serva.webhooks import outbox

from console_support import post, signed_in_owner
from faulty_provider import KEY
from test_worker import (FAST, LINK, accepted, app, audit, cli, faulty, linked, order,  # noqa: F401
                         place, run)

MASKED = "fake…cdef"  # providers.mask_key(KEY)


def history(app, ident):
    """The order's history rows, oldest first."""
    with app.app_context(), db.read() as conn:
        return conn.execute(select(order_history).where(order_history.c.order_id == parse_order(ident))
                            .order_by(order_history.c.id)).all()


def moves(app, ident):
    return [(h.status_before, h.status_after, h.remains, h.start_count, h.actor)
            for h in history(app, ident)]


def attempts(app, ident):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(handover_attempts)
                            .where(handover_attempts.c.order_id == parse_order(ident))
                            .order_by(handover_attempts.c.id)).all()


# ---------------------------------------------------------------- the status history

def test_the_operators_commands_write_history_with_their_request_id(app, api, catalog):
    ident = place(api)  # a manual order: only the operator moves it
    assert history(app, ident) == []  # its creation is its created_at
    cli(app, "order", "set-status", ident, "In progress", "--start-count", "10", "--remains", "600")
    cli(app, "order", "set-status", ident, "Partial", "--remains", "100")
    assert moves(app, ident) == [("Pending", "In progress", 600, 10, "cli"),
                                 ("In progress", "Partial", 100, 10, "cli")]
    first, second = history(app, ident)
    assert first.request_id.startswith("cli:") and first.request_id != second.request_id
    with app.app_context(), db.read() as conn:
        refund = conn.execute(select(ledger.c.request_id).where(
            ledger.c.order_id == parse_order(ident), ledger.c.kind == "refund")).scalar()
        entry = conn.execute(select(activity.c.request_id).where(activity.c.action == "order.status")
                             .order_by(activity.c.id.desc())).scalar()
    assert second.request_id == refund == entry  # one command, one id on all its rows
    assert second.created_at >= first.created_at >= order(app, ident).created_at
    shown = [line.split()[3:] for line in cli(app, "order", "show", ident).splitlines()
             if line.startswith("history:")]  # oldest first, as the ledger lines
    assert shown == [["Pending", "->", "In", "progress", "remains=600", "start_count=10", "by=cli",
                      f"request_id={first.request_id}"],
                     ["In", "progress", "->", "Partial", "remains=100", "start_count=10",
                      "by=cli", f"request_id={second.request_id}"]]
    audit(app)


def test_a_status_change_that_rolls_back_leaves_no_history(app, api, catalog):
    ident = place(api)
    with pytest.raises(RuntimeError), app.app_context(), db.write() as conn:
        orders_repo.set_status(conn, parse_order(ident), "Canceled")
        assert conn.execute(select(order_history)).all() != []  # written in the transaction...
        raise RuntimeError("the rest of the change failed")
    assert history(app, ident) == [] and order(app, ident).status == "Pending"  # ...and gone
    # A refused command writes nothing either.
    result = app.test_cli_runner().invoke(serva_cli, ["order", "set-status", ident, "Partial"])
    assert result.exit_code == 2 and history(app, ident) == []


def test_the_workers_sync_writes_history_only_for_changes(app, api, linked):
    ident, = accepted(app, api, linked)
    assert history(app, ident) == []  # handed over: a hand-over is no status change
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 600}
    run(app)
    run(app)  # the same reply again: nothing new
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 250}
    run(app)
    linked.status_of["P5001"] = {"status": "Completed", "start_count": 10, "remains": 0}
    run(app)
    run(app)
    assert moves(app, ident) == [("Pending", "In progress", 600, 10, "worker"),
                                 ("In progress", "In progress", 250, 10, "worker"),
                                 ("In progress", "Completed", 0, 10, "worker")]
    assert {h.request_id for h in history(app, ident)} == {None}
    audit(app)


def test_the_sync_records_what_the_order_really_was(app, api, linked, monkeypatch):
    """The operator moves the order after the worker leased it: the row says what the batch's
    UPDATE replaced, not what the lease read."""
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 600}
    original = sync.apply_statuses

    def operator_first(rows, reply, config, key=None):
        cli(app, "order", "set-status", ident, "Processing", "--remains", "900")
        return original(rows, reply, config, key)
    monkeypatch.setattr(sync, "apply_statuses", operator_first)
    run(app)
    assert moves(app, ident) == [("Pending", "Processing", 900, None, "cli"),
                                 ("Processing", "In progress", 600, 10, "worker")]


def test_a_sync_batch_that_rolls_back_leaves_no_history(app, api, linked, monkeypatch):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 600}

    def broken(conn, ids):
        raise RuntimeError("the outbox failed")
    monkeypatch.setattr(outbox, "order_updated", broken)
    with app.app_context():
        with db.read() as conn:
            up = providers.require(conn, "up")
        with pytest.raises(RuntimeError, match="the outbox failed"):
            sync.sync_batch(up, [parse_order(ident)], FAST, (1.0, 0.5))
    assert history(app, ident) == [] and order(app, ident).status == "Pending"


def test_a_partners_cancel_before_the_hand_over_is_the_apis(app, api, linked):
    ident = place(api)
    assert api("cancel", order=ident) == {"cancel": 1}
    [row] = history(app, ident)
    assert (row.status_before, row.status_after, row.remains, row.actor) == \
        ("Pending", "Canceled", 1000, "api")
    assert row.request_id and not row.request_id.startswith("cli:")


def test_demo_orders_through_the_simulated_provider_have_history_and_attempts(app, monkeypatch):
    runner = app.test_cli_runner()
    result = runner.invoke(serva_cli, args=["demo"])
    assert result.exit_code == 0, result.output
    key = result.output.splitlines()[-1]
    app.config.update(FAST)
    client = app.test_client()
    placed = client.post("/api/v1", data={"action": "add", "key": key, "service": "1234",
                                          "link": LINK, "quantity": "1000"}).get_json()
    ident = placed["order"]
    assert run(app).handed == 1
    [tried] = attempts(app, ident)
    assert (tried.action, tried.outcome, tried.http_status) == ("add", "placed", None)
    assert order(app, ident).provider_order in tried.reply
    clock = simulated.time.time() + 60
    monkeypatch.setattr(simulated.time, "time", lambda: clock)
    run(app)
    final = order(app, ident).status
    assert final in ("Completed", "Partial", "Canceled")
    rows = history(app, ident)
    assert rows and rows[0].status_before == "Pending" and rows[-1].status_after == final
    assert {h.actor for h in rows} == {"worker"}
    assert all(a.status_after == b.status_before for a, b in zip(rows, rows[1:]))


# ---------------------------------------------------------------- hand-over attempts

def test_every_hand_over_attempt_is_kept_with_the_echoed_key_masked(app, api, linked):
    linked.add_script = [{"error": f"Not enough funds on balance (key {KEY})"}]
    ident = place(api)
    assert run(app).retrying == 1
    assert run(app).handed == 1
    first, second = attempts(app, ident)
    assert (first.action, first.outcome, first.http_status) == ("add", "refused_for_now", 200)
    assert KEY not in first.reply and MASKED in first.reply and "Not enough funds" in first.reply
    assert (second.action, second.outcome, second.http_status) == ("add", "placed", 200)
    assert '"P5001"' in second.reply
    assert first.dispatch_id == second.dispatch_id is not None


def test_a_long_reply_is_masked_before_it_is_cut(app, api, linked):
    linked.add_script = [{"error": "y" * (HANDOVER_REPLY_LENGTH - 40) + KEY + "z" * 3000}]
    ident = place(api)
    assert run(app).canceled == 1  # a refusal for good
    [tried] = attempts(app, ident)
    assert tried.outcome == "refused" and len(tried.reply) == HANDOVER_REPLY_LENGTH
    assert KEY[:8] not in tried.reply and MASKED in tried.reply
    assert [h.actor for h in history(app, ident)] == ["worker"]


def test_an_http_error_keeps_its_status_and_body(app, api, linked):
    linked.add_script = ["500"]
    ident = place(api)
    assert run(app).unknown == 1
    [tried] = attempts(app, ident)
    assert (tried.outcome, tried.http_status) == ("unknown", 500)


def test_a_forwarded_cancel_is_kept(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.cancel_script.append({"error": f"Cancel is not available for this order (key {KEY})"})
    api("cancel", order=ident)
    run(app)
    tried = [(a.action, a.outcome, a.http_status) for a in attempts(app, ident)]
    assert tried == [("add", "placed", 200), ("cancel", "retry", 200)]  # "key": for now
    assert KEY not in attempts(app, ident)[-1].reply


def test_a_status_poll_is_kept_only_when_it_flags_the_order(app, api, linked):
    ident, = accepted(app, api, linked)
    linked.status_of["P5001"] = {"status": "In progress", "remains": 400}
    run(app)
    linked.status_of["P5001"] = {"status": "In progress", "remains": 5000, "echo": KEY}
    run(app)
    run(app)  # flagged once, not again
    polls = [a for a in attempts(app, ident) if a.action == "status"]
    assert [(a.outcome, KEY in a.reply, MASKED in a.reply) for a in polls] == [("flagged", False, True)]
    flagged = order(app, ident).attention
    assert "makes no sense" in flagged and KEY not in flagged and MASKED in flagged


# ---------------------------------------------------------------- the console and the audit

def test_the_console_order_page_shows_history_and_attempts(app, api, linked):
    owner, _, _ = signed_in_owner(app)
    linked.add_script = [{"error": f"Not enough funds on balance (key {KEY})"}]
    ident = place(api)
    run(app)
    run(app)
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 600}
    run(app)
    page = f"/admin/orders/{ident}"
    response = post(owner, f"{page}/status", {"status": "Partial", "remains": "100"}, page=page,
                    follow_redirects=True)
    text = response.get_data(as_text=True)
    assert 'id="history"' in text and 'id="attempts"' in text
    assert "Pending → In progress" in text and "In progress → Partial" in text
    assert "operator:owner@example.com" in text and ">worker</td>" in text
    newest = history(app, ident)[-1]
    assert newest.actor == "operator:owner@example.com" and newest.request_id in text
    assert text.index("In progress → Partial") < text.index("Pending → In progress")  # newest first
    assert "refused_for_now" in text and "placed" in text and MASKED in text and KEY not in text
    assert "keeps no per-order status history" not in text


def test_the_clis_audit_is_the_last_audit_on_the_overview(app, api, catalog):
    owner, _, _ = signed_in_owner(app)
    assert "Not run yet" in owner.get("/admin/").get_data(as_text=True)
    result = app.test_cli_runner().invoke(serva_cli, ["audit"])
    assert result.exit_code == 0 and result.output.startswith("audit passed")
    text = owner.get("/admin/").get_data(as_text=True)
    assert "Last run" in text and ": passed" in text
    with app.app_context(), db.write() as conn:  # a balance off its ledger
        conn.execute(update(accounts).values(balance=accounts.c.balance + 1))
    result = app.test_cli_runner().invoke(serva_cli, ["audit"])
    assert result.exit_code == 1 and result.output.startswith("VIOLATION ")
    text = owner.get("/admin/").get_data(as_text=True)
    assert "1 violation(s): account partner@example.com" in text
