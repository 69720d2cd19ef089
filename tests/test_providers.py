"""Providers: the operator's CLI (keys stored, never shown in full), the HTTP client's fault
classes against a real server that misbehaves, and the built-in simulated provider."""
import logging
import socket
import sqlite3

import pytest

from serva import providers
from serva.fulfilment import provider_client as pc, simulated
from serva import db
from serva.cli import cli as serva_cli

from faulty_provider import KEY, FaultyProvider
from test_order_cli import cli, ok

SECRET = "sk_live_abcdEFGH0123456789wxyz"
TIMEOUTS = (1.0, 0.5)


@pytest.fixture
def fake():
    provider = FaultyProvider().start()
    yield provider
    provider.stop()


# ---------------------------------------------------------------- the CLI

def test_add_list_disable_enable(app, runner, caplog):
    caplog.set_level(logging.DEBUG)
    output = ok(runner, "provider", "add", "upstream", "--url", "https://panel.example/api/v2",
                "--key", SECRET)
    assert output == "provider upstream added (key sk_l…wxyz)\n"
    ok(runner, "provider", "add", "sim", "--url", "sim://", "--key", "x" * 20)
    lines = ok(runner, "provider", "list").splitlines()
    assert lines[0].split("\t") == ["sim", "enabled", "sim://", "key xxxx…xxxx", "balance ?",
                                    "waiting 0", "in flight 0", "unknown 0", "no error"]
    assert lines[1].startswith("upstream\tenabled\thttps://panel.example/api/v2\tkey sk_l…wxyz\t")
    assert ok(runner, "provider", "disable", "upstream") == "provider upstream disabled\n"
    assert ok(runner, "provider", "list").splitlines()[1].split("\t")[1] == "disabled"
    ok(runner, "provider", "enable", "upstream")
    assert ok(runner, "provider", "list").splitlines()[1].split("\t")[1] == "enabled"
    with app.app_context(), db.read() as conn:
        assert providers.require(conn, "upstream").api_key == SECRET  # stored: it must be sent
    everything = "".join(r.getMessage() for r in caplog.records)
    assert SECRET not in everything and SECRET[4:-4] not in ok(runner, "provider", "list")


@pytest.mark.parametrize("args,message", [
    (("p", "--url", "ftp://x.example", "--key", "k"), "http(s)"),
    (("p", "--url", "not a url", "--key", "k"), "http(s)"),
    (("p q", "--url", "https://x.example", "--key", "k"), "name"),
    (("p", "--url", "https://x.example", "--key", " "), "key"),
])
def test_add_refuses_bad_definitions(runner, args, message):
    result = cli(runner, "provider", "add", *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_duplicate_and_unknown_names(runner):
    ok(runner, "provider", "add", "p", "--url", "https://x.example/api", "--key", SECRET)
    result = cli(runner, "provider", "add", "p", "--url", "https://y.example/api", "--key", "other")
    assert result.exit_code == 2 and "exists" in result.stderr
    for command in ("disable", "enable", "retry"):
        result = cli(runner, "provider", command, "nope")
        assert result.exit_code == 2 and result.stderr == "error: no provider named nope\n"


@pytest.mark.parametrize("key,masked", [(SECRET, "sk_l…wxyz"), ("0123456789", "…89"),
                                        ("abc", "…"), ("", "-")])
def test_mask_key_never_shows_a_short_key(key, masked):
    assert providers.mask_key(key) == masked


# ---------------------------------------------------------------- the client

def test_client_posts_form_fields_and_decodes_json(fake):
    reply = pc.request(fake.url, KEY, "add", {"service": 1, "link": "https://e.example/x",
                                              "quantity": 100, "fields": {"player_id": "7"}},
                       idempotency_key="ORD-1", timeouts=TIMEOUTS)
    assert reply == pc.Reply({"order": "P5001"}, False)
    assert fake.adds == [{"action": "add", "service": "1", "link": "https://e.example/x",
                          "quantity": "100", "fields[player_id]": "7", "idempotency_key": "ORD-1",
                          "order": "P5001"}]
    assert pc.call(fake.url, KEY, "balance", timeouts=TIMEOUTS) == {"balance": "100.5", "currency": "USD"}


def test_client_reports_a_serva_by_its_request_id_header():
    fake = FaultyProvider(idempotent=True).start()
    try:
        assert pc.request(fake.url, KEY, "balance", timeouts=TIMEOUTS).serva is True
    finally:
        fake.stop()


def test_refusal_carries_the_providers_message(fake):
    with pytest.raises(pc.Refused) as caught:
        pc.call(fake.url, "wrong", "balance", timeouts=TIMEOUTS)
    assert caught.value.message == "Invalid API key"


def test_connection_refused_is_not_sent():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(pc.NotSent):
        pc.call(f"http://127.0.0.1:{port}/api/v2", KEY, "balance", timeouts=TIMEOUTS)


@pytest.mark.parametrize("mode,error", [("slow", pc.OutcomeUnknown), ("malformed", pc.OutcomeUnknown),
                                        ("reset", pc.OutcomeUnknown), ("500", pc.HttpError)])
def test_fault_classes(fake, mode, error):
    fake.add_script = [mode]
    with pytest.raises(error) as caught:
        pc.call(fake.url, KEY, "add", {"service": 1}, timeouts=TIMEOUTS)
    assert KEY not in str(caught.value)
    if mode == "500":
        assert caught.value.status == 500


def test_the_key_never_appears_in_an_error(fake):
    with pytest.raises(pc.NotSent) as caught:
        pc.call(f"http://no-such-host.invalid/api?key={KEY}", KEY, "balance", timeouts=TIMEOUTS)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


# ---------------------------------------------------------------- the simulated provider

def test_simulated_provider_catalog_add_status_balance(monkeypatch):
    catalog = pc.call("sim://", "k", "services")
    assert {entry["type"] for entry in catalog} == {"Default", "Package", "Custom Comments", "Poll"}
    assert pc.call("sim://", "k", "balance") == {"balance": "1000", "currency": "USD"}
    clock = [1_900_000_000.0]
    monkeypatch.setattr(simulated.time, "time", lambda: clock[0])
    order = pc.call("sim://", "k", "add", {"service": "1", "link": "https://e.example/p",
                                           "quantity": "300"})["order"]
    comments = pc.call("sim://", "k", "add", {"service": "3", "link": "https://e.example/p",
                                              "comments": "nice\n\ngreat\n"})["order"]
    assert pc.call("sim://", "k", "status", {"order": order})["status"] == "Pending"
    clock[0] += 3
    middle = pc.call("sim://", "k", "status", {"order": order})
    assert middle["status"] == "In progress" and 0 < middle["remains"] < 300
    clock[0] += 10
    batch = pc.call("sim://?partial=100&canceled=0", "k", "status", {"orders": f"{order},{comments},x"})
    assert batch[order] == {"charge": "0", "start_count": 100, "status": "Partial", "remains": 100,
                            "currency": "USD"}
    assert batch[comments]["status"] == "Partial" and batch[comments]["remains"] == 1  # of 2 lines
    assert batch["x"] == {"error": "Incorrect order ID"}
    assert pc.call("sim://?partial=0&canceled=0", "k", "status", {"order": order})["status"] == "Completed"
    assert pc.call("sim://?partial=0&canceled=100", "k", "status", {"order": order})["status"] == "Canceled"


@pytest.mark.parametrize("params,message", [
    ({"service": "99", "link": "https://e.example", "quantity": "100"}, "Incorrect service ID"),
    ({"service": "1", "link": "nope", "quantity": "100"}, "Incorrect link"),
    ({"service": "1", "link": "https://e.example", "quantity": "5"}, "Quantity less than minimal 10"),
])
def test_simulated_provider_refuses_like_a_panel(params, message):
    with pytest.raises(pc.Refused) as caught:
        pc.call("sim://", "k", "add", params)
    assert caught.value.message == message


# ---------------------------------------------------------------- the schema revision

def test_a_first_release_database_keeps_every_row_through_the_fulfilment_revision(tmp_path):
    """The revision rebuilds `services` and `orders` on SQLite: every row survives, up and down."""
    from alembic import command
    from sqlalchemy import select, text
    from serva import migrations
    from test_migrations import cli_app, differences, make_first_release_db
    path = tmp_path / "old.sqlite"
    make_first_release_db(path)
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO services (id, name, rate, min_quantity, max_quantity, created_at) "
                "VALUES (1234, 'Old followers', 890000, 10, 1000, 1)")
    raw.execute("INSERT INTO orders (account_id, service_id, target, target_key, quantity, charge, "
                "status, remains, created_at, updated_at) VALUES (1, 1234, 'https://e.example', "
                "'k', 100, 5, 'Pending', 100, 1, 1)")
    raw.execute("INSERT INTO ledger (account_id, amount, kind, order_id, created_at) "
                "VALUES (1, -5, 'charge', 1, 1)")
    raw.execute("UPDATE accounts SET balance = 0")
    raw.commit()
    raw.close()
    app = cli_app(path)
    assert app.test_cli_runner().invoke(serva_cli, args=["init-db"]).exit_code == 0
    engine = app.extensions["serva.engine"]
    assert differences(engine) == []
    with db.read(engine) as conn:
        assert conn.execute(text("SELECT id, name, rate, provider_id FROM services")).all() == \
            [(1234, "Old followers", 890000, None)]
        assert conn.execute(text("SELECT id, service_id, charge, status, provider_order, "
                                 "next_sync_at FROM orders")).all() == [(1, 1234, 5, "Pending", None, None)]
    assert app.test_cli_runner().invoke(serva_cli, args=["audit"]).exit_code == 0
    with db.migrating(engine) as conn:
        command.downgrade(migrations.config(conn), "first_release")
    with db.read(engine) as conn:
        assert conn.execute(text("SELECT id, service_id, charge FROM orders")).all() == [(1, 1234, 5)]
        assert conn.execute(text("SELECT count(*) FROM services")).scalar() == 1
        columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(orders)")}
        assert "provider_id" not in columns
    engine.dispose()
