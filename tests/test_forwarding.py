"""Refills and cancels of provider orders handed to the provider by the worker (serva.fulfilment.forwarding),
against a provider over real HTTP that misbehaves on purpose; SQLite and PostgreSQL. A reseller
and an upstream Serva over HTTP for refill, cancel and drip-feed end to end."""
import pytest
from sqlalchemy import select, update

from serva import db
from serva.ids import parse_order
from serva.schema import dispatches, refills, services
from serva.cli import cli as serva_cli

from test_two_servas import call, two_servas
from test_worker import app, audit, cli, faulty, linked, order, place, refunds, run  # noqa: F401


def requests_of(app, ident, kind):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(dispatches).where(dispatches.c.order_id == parse_order(ident),
                                                     dispatches.c.kind == kind)).all()


def refill_row(app, number=1):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(refills).where(refills.c.id == number)).first()


def completed_upstream(app, api, linked, link="https://example.com/post/1"):
    """A provider order the provider completed (and the worker synced)."""
    ident = place(api, link=link)
    run(app)
    linked.status_of[order(app, ident).provider_order] = {"status": "Completed", "remains": 0,
                                                          "start_count": 10}
    run(app)
    assert order(app, ident).status == "Completed"
    return ident


# ---------------------------------------------------------------- refill

def test_refill_is_handed_over_and_its_status_polled(app, api, linked):
    ident = completed_upstream(app, api, linked)
    provider_order = order(app, ident).provider_order
    assert api("refill", order=ident) == {"refill": "REF-5001"}
    assert [r.state for r in requests_of(app, ident, "refill")] == ["due"]
    run(app)
    assert linked.refills_asked == [provider_order]
    assert refill_row(app).provider_refill_id == "9001"
    assert [r.state for r in requests_of(app, ident, "refill")] == ["done"]
    assert api("refill_status", refill="REF-5001") == {"status": "Pending"}
    linked.refill_status_of["9001"] = "In progress"
    run(app)
    assert api("refill_status", refill="REF-5001") == {"status": "In progress"}
    linked.refill_status_of["9001"] = "Completed"
    run(app)
    assert api("refill_status", refill="REF-5001") == {"status": "Completed"}
    run(app)
    assert linked.refills_asked == [provider_order]  # never asked twice
    audit(app)


def test_a_refill_the_provider_refuses_is_rejected(app, api, linked):
    ident = completed_upstream(app, api, linked)
    linked.refill_script.append({"error": "Refill is not available for this order"})
    api("refill", order=ident)
    run(app)
    assert refill_row(app).status == "Rejected"
    assert api("refill_status", refill="REF-5001") == {"status": "Rejected"}
    assert api("refill", order=ident) == {"refill": "REF-5002"}  # the partner may ask again


def test_a_refill_refused_for_now_is_retried_then_rejected(app, api, linked):
    ident = completed_upstream(app, api, linked)
    linked.refill_script += [{"error": "Too many requests, retry later"}] * 3
    api("refill", order=ident)
    run(app)
    assert refill_row(app).status == "Pending"
    assert [r.state for r in requests_of(app, ident, "refill")] == ["due"]
    run(app)
    run(app)  # the third refusal is the last attempt (DISPATCH_MAX_ATTEMPTS = 3)
    assert len(linked.refills_asked) == 3
    assert refill_row(app).status == "Rejected"
    run(app)
    assert len(linked.refills_asked) == 3


@pytest.mark.parametrize("fault", ["500", "502", "429"])
def test_a_refill_answered_with_an_error_status_waits_for_the_operator(app, api, linked, fault):
    """The provider may have started the refill before its error: asked again, it could
    refuse the second one while the first runs."""
    ident = completed_upstream(app, api, linked)
    linked.refill_script.append(fault)
    api("refill", order=ident)
    run(app)
    run(app)
    assert [r.state for r in requests_of(app, ident, "refill")] == ["unknown"]
    assert len(linked.refills_asked) == 1 and refill_row(app).status == "Pending"


@pytest.mark.parametrize("fault", ["500", "slow"])
def test_a_cancel_without_an_answer_is_asked_again(app, api, linked, fault):
    """Asking twice cancels nothing twice."""
    ident = place(api)
    run(app)
    linked.cancel_script.append(fault)
    api("cancel", order=ident)
    run(app)
    assert [r.state for r in requests_of(app, ident, "cancel")] == ["due"]
    run(app)
    assert [r.state for r in requests_of(app, ident, "cancel")] == ["done"]
    assert len(linked.cancels_asked) == 2 and refunds(app, ident) == []


def test_a_refill_of_an_unknown_outcome_waits_for_the_operator(app, api, linked):
    ident = completed_upstream(app, api, linked)
    linked.refill_script.append("slow")  # reply after the read timeout
    api("refill", order=ident)
    run(app)
    assert [r.state for r in requests_of(app, ident, "refill")] == ["unknown"]
    assert refill_row(app).status == "Pending"
    run(app)
    assert len(linked.refills_asked) == 1  # not asked again by itself
    assert "REF-5001: Rejected" in cli(app, "refill", "set-status", "REF-5001", "Rejected")


def refills_upstream(app, api, linked, count):
    """`count` completed orders, each with a refill the provider accepted (still Pending)."""
    idents = [completed_upstream(app, api, linked, link=f"https://example.com/post/{i}")
              for i in range(count)]
    for i, ident in enumerate(idents):
        assert api("refill", order=ident) == {"refill": f"REF-{5001 + i}"}
    run(app)
    assert sorted(linked.refills_asked) == sorted(order(app, i).provider_order for i in idents)
    return [refill_row(app, n + 1).provider_refill_id for n in range(count)]


def test_several_refills_moving_in_one_pass_all_move(app, api, linked):
    """Each batch statement of the refill poll with several rows: moved, and seen unchanged."""
    theirs = refills_upstream(app, api, linked, 4)
    for refill_id in theirs[:2]:
        linked.refill_status_of[refill_id] = "In progress"
    for refill_id in theirs[2:]:
        linked.refill_status_of[refill_id] = "Mystery"  # unreadable: only seen
    run(app)
    assert [refill_row(app, n).status for n in (1, 2, 3, 4)] == \
        ["In progress", "In progress", "Pending", "Pending"]
    for refill_id in theirs:
        linked.refill_status_of[refill_id] = "Completed"
    result = app.test_cli_runner().invoke(serva_cli, args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert [api("refill_status", refill=f"REF-{5001 + n}") for n in range(4)] == \
        [{"status": "Completed"}] * 4
    audit(app)


# ---------------------------------------------------------------- cancel

def test_a_cancel_goes_to_the_provider_and_the_outcome_refunds_once(app, api, linked):
    ident = place(api)
    run(app)
    provider_order = order(app, ident).provider_order
    assert api("cancel", order=ident) == {"cancel": 1}
    assert api("cancel", orders=ident) == [{"order": ident, "cancel": 1}]  # asked again: one request
    run(app)
    assert linked.cancels_asked == [provider_order]
    assert order(app, ident).status == "Pending" and refunds(app, ident) == []  # not before the outcome
    linked.status_of[provider_order] = {"status": "Canceled", "remains": 1000}
    run(app)
    assert api("status", order=ident)["status"] == "Canceled"
    assert refunds(app, ident) == [890_000]
    run(app)
    assert refunds(app, ident) == [890_000] and linked.cancels_asked == [provider_order]
    audit(app)


def test_a_cancel_before_the_hand_over_cancels_at_once(app, api, linked):
    ident = place(api)
    assert api("cancel", order=ident) == {"cancel": 1}
    assert api("status", order=ident)["status"] == "Canceled"
    assert refunds(app, ident) == [890_000]
    run(app)
    assert linked.adds == [] and linked.cancels_asked == []
    audit(app)


def test_a_cancel_the_provider_refuses_leaves_the_order_running(app, api, linked):
    ident = place(api)
    run(app)
    linked.cancel_script.append({"error": "Cancel is not available for this order"})
    api("cancel", order=ident)
    run(app)
    assert [r.state for r in requests_of(app, ident, "cancel")] == ["canceled"]
    provider_order = order(app, ident).provider_order
    linked.status_of[provider_order] = {"status": "Completed", "remains": 0}
    run(app)
    assert order(app, ident).status == "Completed" and refunds(app, ident) == []


def test_a_dripfeed_orders_runs_done_come_from_the_provider(app, api, linked):
    with app.app_context(), db.write() as conn:
        conn.execute(update(services).where(services.c.id == 1234).values(dripfeed=True))
    ident = api("add", service="1234", link="https://example.com/d", quantity="100", runs="4",
                interval="10")["order"]
    run(app)
    provider_order = order(app, ident).provider_order
    linked.status_of[provider_order] = {"status": "In progress", "remains": 200, "runs_done": 2}
    run(app)
    assert (api("status", order=ident)["runs_done"], api("status", order=ident)["remains"]) == (2, 200)
    linked.status_of[provider_order] = {"status": "In progress", "remains": 100, "runs_done": 99}
    run(app)
    assert api("status", order=ident)["runs_done"] == 4  # clamped to the order's runs
    linked.status_of[provider_order] = {"status": "Completed", "remains": 0}
    run(app)
    assert api("status", order=ident)["runs_done"] == 4


# ---------------------------------------------------------------- two Servas

def test_refill_cancel_and_dripfeed_through_an_upstream_serva(tmp_path):
    with two_servas(tmp_path, upstream_balance="20", api_path="/api/v2") as (
            upstream, reseller, upstream_key, partner_key):
        def theirs(ident):
            with reseller.app_context(), db.read() as conn:
                return order_of(conn, ident).provider_order

        # drip-feed: charged for quantity x runs; the upstream receives runs and interval
        drip = call(reseller, partner_key, action="add", service="1234", link="https://e.com/d",
                    quantity="100", runs="3", interval="15")
        assert drip["charge"] == "0.267"
        run(reseller)
        upstream_status = call(upstream, upstream_key, action="status", order=theirs(drip["order"]))
        assert (upstream_status["runs"], upstream_status["charge"]) == (3, "0.267")
        cli(upstream, "order", "set-status", theirs(drip["order"]), "In progress",
            "--runs-done", "1", "--remains", "200")
        run(reseller)
        mine = call(reseller, partner_key, action="status", order=drip["order"])
        assert (mine["status"], mine["runs"], mine["runs_done"], mine["remains"]) == \
            ("In progress", 3, 1, 200)

        # refill: completed upstream, synced, refilled through the upstream's refill
        first = call(reseller, partner_key, action="add", service="1234",
                     link="https://e.com/r", quantity="1000")
        run(reseller)
        cli(upstream, "order", "set-status", theirs(first["order"]), "Completed")
        run(reseller)
        assert call(reseller, partner_key, action="refill", order=first["order"]) == \
            {"refill": "REF-5001"}
        run(reseller)
        listed = cli(upstream, "refill", "list", "--status", "Pending")
        assert listed.startswith(f"REF-5001\tPending\t{theirs(first['order'])}\treseller@example.com")
        cli(upstream, "refill", "set-status", "REF-5001", "Completed")
        run(reseller)
        assert call(reseller, partner_key, action="refill_status", refill="REF-5001") == \
            {"status": "Completed"}

        # cancel: accepted upstream as a request; the upstream operator confirms it
        second = call(reseller, partner_key, action="add", service="1234",
                      link="https://e.com/c", quantity="1000")
        run(reseller)
        assert call(reseller, partner_key, action="cancel", order=second["order"]) == {"cancel": 1}
        run(reseller)
        assert theirs(second["order"]) in cli(upstream, "order", "list", "--cancel-requested")
        cli(upstream, "order", "set-status", theirs(second["order"]), "Canceled")
        run(reseller)
        status = call(reseller, partner_key, action="status", order=second["order"])
        assert (status["status"], status["charge"]) == ("Canceled", "0")
        assert refunds(reseller, second["order"]) == [890_000]
        audit(upstream)
        audit(reseller)


def order_of(conn, ident):
    from serva.schema import orders
    return conn.execute(select(orders).where(orders.c.id == parse_order(ident))).first()


# ---------------------------------------------------------------- the simulated provider

def test_simulated_provider_refill_cancel_and_dripfeed(monkeypatch):
    """What the demo's 1234 (linked to sim://) promises in `services`, the simulator does."""
    from serva.fulfilment import provider_client as pc, simulated
    assert next(e for e in pc.call("sim://", "k", "services") if e["service"] == "1")[
        "dripfeed"] is True
    clock = [1_900_000_000.0]
    monkeypatch.setattr(simulated.time, "time", lambda: clock[0])
    drip = pc.call("sim://", "k", "add", {"service": "1", "link": "https://e.example/p",
                                          "quantity": "100", "runs": "3", "interval": "5"})["order"]
    with pytest.raises(pc.Refused):
        pc.call("sim://", "k", "refill", {"order": drip})  # not completed yet
    assert pc.call("sim://", "k", "cancel", {"orders": drip}) == [{"order": drip, "cancel": 1}]
    assert pc.call("sim://", "k", "status", {"order": drip})["status"] == "Canceled"
    assert pc.call("sim://", "k", "status", {"order": drip})["remains"] == 300  # the total
    done = pc.call("sim://", "k", "add", {"service": "1", "link": "https://e.example/q",
                                          "quantity": "100"})["order"]
    clock[0] += 10
    assert pc.call("sim://?partial=0&canceled=0", "k", "status", {"order": done})["status"] == "Completed"
    assert pc.call("sim://", "k", "cancel", {"orders": done})[0]["cancel"] == \
        {"error": "Cancel is not available for this order"}
    refill = pc.call("sim://?partial=0&canceled=0", "k", "refill", {"order": done})["refill"]
    assert pc.call("sim://", "k", "refill_status", {"refills": refill}) == \
        [{"refill": refill, "status": "Pending"}]
    clock[0] += 10
    assert pc.call("sim://", "k", "refill_status", {"refills": refill})[0]["status"] == "Completed"
