"""`serva worker` killed with SIGKILL while it delivers webhooks, several rounds, on SQLite and
PostgreSQL: every event is delivered at least once, none is lost, and the receiver's
de-duplication by webhook-id leaves exactly one per event."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from serva import db, fulfilment, orders as orders_repo, services
from serva.ids import parse_order
from serva.auth import flush_key_uses
from serva.schema import webhook_events
from serva.webhooks import delivery

from conftest import pg_schema
from webhook_helpers import listening_partner, place, webhook_app
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow
EVENTS = 80
ENV = {"SERVA_SECRET_KEY": "test-secret", "SERVA_WEBHOOK_ALLOW_PRIVATE": "1",
       "SERVA_WEBHOOK_LEASE_SECONDS": "1", "SERVA_WEBHOOK_CONCURRENCY": "4"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serva.sqlite'}"
        return
    with pg_schema() as url:
        yield url


def start_worker(database):
    env = {**os.environ, **ENV, "SERVA_DATABASE_URL": database}
    serva = os.path.join(os.path.dirname(sys.executable), "serva")
    return subprocess.Popen([serva, "worker"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_sigkill_mid_delivery_loses_no_event(database):
    receiver = Receiver(delay=0.05).start()
    app = webhook_app(database, WEBHOOK_LEASE_SECONDS=1)
    try:
        with app.app_context(), db.write() as conn:
            services.add(conn, id=1234, name="Followers", rate=890_000, min_quantity=10,
                         max_quantity=10_000)
        _, key, _ = listening_partner(app, receiver.url)
        client = app.test_client()
        for _ in range(EVENTS):
            order_id = parse_order(place(client, key))
            with app.app_context(), db.write() as conn:
                orders_repo.set_status(conn, order_id, "Completed")
        kills = 0
        for _ in range(5):
            before = len(receiver.requests)
            process = start_worker(database)
            deadline = time.monotonic() + 20
            while len(receiver.requests) < before + 6 and time.monotonic() < deadline \
                    and process.poll() is None and len(receiver.unique()) < EVENTS:
                time.sleep(0.01)
            assert process.poll() is None, process.stderr.read()
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
            if len(receiver.unique()) >= EVENTS:
                break
        assert kills >= 2
        time.sleep(1.2)  # the dead workers' leases expire
        with app.app_context():
            delivery.delivery_pass("finisher", fulfilment.settings(), threading.Event())
        with app.app_context(), db.read() as conn:
            rows = conn.execute(select(webhook_events.c.msg_id, webhook_events.c.state)).all()
        assert len(rows) == EVENTS and {row.state for row in rows} == {"delivered"}
        assert receiver.unique() == {row.msg_id for row in rows}  # one per event, none lost
        assert len(receiver.requests) >= EVENTS
    finally:
        receiver.stop()
        flush_key_uses(app)
        app.extensions["serva.engine"].dispose()
