"""Crashes and races: `serva worker` processes killed with SIGKILL mid-pass, and two worker
processes on one queue — on SQLite and on PostgreSQL. Every order reaches the provider
exactly once (the provider counts), none is refunded, `audit` is clean."""
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from serva import create_app, db, fulfilment, providers
from serva.auth import flush_key_uses
from serva.schema import dispatches, ledger, orders, services
from serva.cli import cli as serva_cli

from conftest import make_partner, pg_schema
from faulty_provider import KEY, FaultyProvider

pytestmark = pytest.mark.slow
ORDERS = 60
ENV = {"SERVA_SECRET_KEY": "test-secret", "SERVA_SYNC_INTERVAL_SECONDS": "0",
       "SERVA_DISPATCH_RETRY_SECONDS": "0", "SERVA_DISPATCH_LEASE_SECONDS": "1",
       "SERVA_PROVIDER_READ_TIMEOUT": "5", "SERVA_WORKER_CONCURRENCY": "4"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serva.sqlite'}"
        return
    with pg_schema() as url:
        yield url


def prepare(database, provider):
    """A partner with ORDERS orders on a service fulfilled by `provider`."""
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": database,
                      "SYNC_INTERVAL_SECONDS": 0, "DISPATCH_RETRY_SECONDS": 0,
                      "DISPATCH_LEASE_SECONDS": 1, "PROVIDER_READ_TIMEOUT": 5.0,
                      "RATE_LIMIT_PER_KEY": ""})
    db.init_schema(app.extensions["serva.engine"])
    with app.app_context(), db.write() as conn:
        from serva import services as services_repo
        provider_id = providers.add(conn, "up", provider.url, KEY)
        services_repo.add(conn, id=1234, name="Followers", rate=890_000, min_quantity=10,
                          max_quantity=10_000)
        conn.execute(update(services).values(provider_id=provider_id, provider_service="1"))
    _, key = make_partner(app)
    client = app.test_client()
    for i in range(ORDERS):
        body = client.post("/api/v1", data={"action": "add", "key": key, "service": "1234",
                                            "link": f"https://example.com/p/{i}",
                                            "quantity": "100"}).get_json()
        assert "order" in body, body
    return app


def start_worker(database, **settings):
    env = {**os.environ, **ENV, "SERVA_DATABASE_URL": database, **settings}
    serva = os.path.join(os.path.dirname(sys.executable), "serva")
    return subprocess.Popen([serva, "worker"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_running(process):
    """Until the worker says it runs (its SIGTERM handler is in place)."""
    line = process.stdout.readline()
    assert line.startswith("worker running"), (line, process.stderr.read())


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="niceness is a Unix thing")
def test_the_worker_runs_below_the_api_in_cpu_priority(tmp_path):
    """`serva worker` adds SERVA_WORKER_NICE to its niceness: the API's requests come first
    on a machine both share."""
    database = f"sqlite:///{tmp_path / 'serva.sqlite'}"
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": database})
    db.init_schema(app.extensions["serva.engine"])
    app.extensions["serva.engine"].dispose()
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    worker = start_worker(database, SERVA_WORKER_NICE="7")
    try:
        wait_running(worker)
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, mine + 7)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)


def expected_keys(app):
    with app.app_context(), db.read() as conn:
        return {fulfilment.idempotency_key(row.id, row.created_at): row.id
                for row in conn.execute(select(orders.c.id, orders.c.created_at))}


def states(app):
    with app.app_context(), db.read() as conn:
        return dict(conn.execute(select(dispatches.c.state, func.count())
                                 .group_by(dispatches.c.state)).all())


def settle(app, provider):
    """What the operator does with unknown hand-overs: look at the provider, then resolve."""
    keys = expected_keys(app)
    placed = {keys[entry["idempotency_key"]]: entry["order"] for entry in provider.adds}
    with app.app_context(), db.read() as conn:
        unknown = conn.execute(select(dispatches.c.order_id)
                               .where(dispatches.c.state == "unknown")).scalars().all()
    for order_id in unknown:
        with app.app_context(), db.write() as conn:
            if order_id in placed:
                fulfilment.resolve(conn, order_id, provider_order=placed[order_id])
            else:
                fulfilment.resolve(conn, order_id, resend=True)
    return len(unknown)


def finish(app, provider):
    for _ in range(5):  # a reset connection is an unknown outcome too: the operator settles it
        with app.app_context():
            fulfilment.run_pass()
        settle(app, provider)
        if set(states(app)) == {"done"}:
            break
    assert states(app) == {"done": ORDERS}
    keys = expected_keys(app)
    received = [entry["idempotency_key"] for entry in provider.adds]
    assert sorted(received) == sorted(keys), "every order reaches the provider exactly once"
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(func.count()).select_from(ledger)
                            .where(ledger.c.kind == "refund")).scalar() == 0
        rows = conn.execute(select(orders.c.id, orders.c.provider_order)).all()
    by_key = {entry["idempotency_key"]: entry["order"] for entry in provider.adds}
    reverse = {order_id: key for key, order_id in keys.items()}
    assert all(row.provider_order == by_key[reverse[row.id]] for row in rows)
    result = app.test_cli_runner().invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("idempotent", [False, True], ids=["panel", "serva"])
def test_sigkill_mid_pass_never_sends_twice(database, idempotent):
    provider = FaultyProvider(idempotent=idempotent, delay=0.05).start()
    app = prepare(database, provider)
    try:
        kills = 0
        for _ in range(5):
            before = len(provider.adds)
            process = start_worker(database)
            deadline = time.monotonic() + 20
            while len(provider.adds) < before + 4 and time.monotonic() < deadline \
                    and process.poll() is None and len(provider.adds) < ORDERS:
                time.sleep(0.01)
            assert process.poll() is None, process.stderr.read()
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
            if len(provider.adds) >= ORDERS:
                break
        assert kills >= 2
        time.sleep(1.2)  # the dead workers' leases expire
        with app.app_context():
            fulfilment.run_pass()
        unknown = settle(app, provider)
        if idempotent:
            assert unknown == 0  # resent automatically: the provider replays its first answer
        finish(app, provider)
    finally:
        provider.stop()
        flush_key_uses(app)
        app.extensions["serva.engine"].dispose()


def test_two_worker_processes_on_one_queue(database):
    provider = FaultyProvider(delay=0.02).start()
    app = prepare(database, provider)
    processes = []
    try:
        processes = [start_worker(database), start_worker(database)]
        for process in processes:
            wait_running(process)
        deadline = time.monotonic() + 60
        while states(app).get("done", 0) < ORDERS and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), processes[0].stderr.read()
            time.sleep(0.1)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=20) == 0
        assert states(app) == {"done": ORDERS}
        finish(app, provider)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        provider.stop()
        flush_key_uses(app)
        app.extensions["serva.engine"].dispose()
