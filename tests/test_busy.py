"""Reads never wait for writes; a write waits a bounded time and then gets 503 `busy`; a full
or read-only database is the same 503, never a 500; the servers refuse a database they cannot
write. Against a real server (waitress, as in production) with another *process* holding
SQLite's write lock. Every wait is bounded (SERVA_WRITE_WAIT_SECONDS is 1 or 2 here)."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import event, func, select

from serva import create_app, db
from serva.auth import flush_key_uses
from serva.demo import CATALOG
from serva.schema import api_keys, ledger, orders
from serva import services
from serva.cli import cli as serva_cli

from conftest import NO_RATE_LIMITS, make_partner, serving

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BUSY = {"error": "Service temporarily unavailable, retry after 1 s", "code": "busy"}


def make_app(tmp_path, wait=1, **config):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "WRITE_WAIT_SECONDS": wait,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'serva.sqlite'}", **config})
    db.init_schema(app.extensions["serva.engine"])
    with app.app_context(), db.write() as conn:
        for entry in CATALOG:
            services.add(conn, **entry)
    return app


@pytest.fixture
def busy_app(tmp_path):
    app = make_app(tmp_path)
    yield app
    app.extensions["serva.engine"].dispose()


def db_file(app) -> str:
    return app.config["DATABASE_URL"].removeprefix("sqlite:///")


@contextmanager
def write_lock_held(path, seconds=10):
    """Another process holds SQLite's write lock on `path` (BEGIN IMMEDIATE) until the block
    ends, `seconds` at most."""
    code = ("import select, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "select.select([sys.stdin], [], [], float(sys.argv[2]))\n"
            "c.execute('ROLLBACK')\n")
    holder = subprocess.Popen([sys.executable, "-c", code, path, str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=seconds + 5)


def timed_post(url, **data):
    started = time.monotonic()
    # Connection: close, so that a burst of requests does not pile up idle keep-alive
    # connections against waitress's connection limit (100).
    response = requests.post(f"{url}/api/v1", data=data, timeout=30,
                             headers={"Connection": "close"})
    return time.monotonic() - started, response


def order(url, key, n):
    return timed_post(url, action="add", key=key, service="1234", quantity="100",
                      link=f"https://example.com/post/{n}")


def money(app, account_id):
    """(balance, ledger sum, ledger rows, orders) of an account."""
    from serva.schema import accounts
    with app.app_context(), db.read() as conn:
        balance = conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()
        total, rows = conn.execute(select(func.coalesce(func.sum(ledger.c.amount), 0), func.count())
                                   .where(ledger.c.account_id == account_id)).one()
        placed = conn.execute(select(func.count()).select_from(orders)
                              .where(orders.c.account_id == account_id)).scalar()
    return balance, total, rows, placed


def assert_busy(response):
    assert response.status_code == 503, response.text
    assert response.json() == BUSY
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-serva-request-id"]


def audit_passes(app):
    result = app.test_cli_runner().invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- the write lock held elsewhere

def test_reads_answer_and_orders_get_503_while_another_process_holds_the_write_lock(busy_app):
    app = busy_app
    used_id, used_key = make_partner(app, "used@example.com")
    fresh_id, fresh_key = make_partner(app, "fresh@example.com")  # never used: last_used is NULL
    with app.test_client() as client:
        client.post("/api/v1", data={"action": "balance", "key": used_key})
    flush_key_uses(app)
    before = money(app, used_id)

    with serving(app) as url, write_lock_held(db_file(app)):
        for key in (fresh_key, used_key):
            elapsed, response = timed_post(url, action="balance", key=key)
            assert response.status_code == 200 and response.json()["balance"] == "100"
            assert elapsed < 1, f"a balance waited {elapsed:.2f}s behind the write lock"
        elapsed, response = order(url, used_key, 0)
        assert_busy(response)
        assert 0.9 <= elapsed < 3, f"the order waited {elapsed:.2f}s, the bound is 1s"
        services_elapsed, response = timed_post(url, action="services", key=fresh_key)
        assert response.status_code == 200 and services_elapsed < 1
        assert money(app, used_id) == before  # nothing charged, no ledger row, no order

    # Released: orders work again, and the fresh key's first use, skipped while the database
    # was busy, is recorded by the background timer.
    with serving(app) as url:
        _, response = order(url, used_key, 1)
        assert response.status_code == 200 and "order" in response.json(), response.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with app.app_context(), db.read() as conn:
            if conn.execute(select(api_keys.c.last_used_at)
                            .where(api_keys.c.account_id == fresh_id)).scalar() is not None:
                break
        time.sleep(0.1)
    else:
        pytest.fail("the fresh key's use was never recorded")
    balance, total, rows, placed = money(app, used_id)
    assert (balance, placed, rows) == (before[0] - 89000, 1, before[2] + 1) and balance == total
    audit_passes(app)


# ---------------------------------------------------------------- disk full

def test_a_full_disk_answers_503_and_loses_nothing(busy_app):
    """SQLite's `max_page_count` caps the database file at its current size on every
    connection of the server: an insert that needs one more page fails with SQLITE_FULL,
    the same result code and the same code path as a file system with no space left. Orders
    from 8 threads go on until the database is full."""
    app = busy_app
    account_id, key = make_partner(app, balance="1000")
    engine = app.extensions["serva.engine"]

    def cap(dbapi_connection, _record):
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")
    engine.dispose()
    event.listen(engine, "connect", cap)
    with serving(app) as url:
        def place(t):
            results = []
            for n in range(t, 400, 8):
                results.append(order(url, key, n)[1])
                if results[-1].status_code != 200:
                    break
            return results
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = [r for batch in pool.map(place, range(8)) for r in batch]
    event.remove(engine, "connect", cap)
    engine.dispose()

    refused = [r for r in answers if r.status_code != 200]
    assert refused, "the database never filled up: the test proved nothing"
    for response in refused:
        assert_busy(response)
    won = [r.json() for r in answers if r.status_code == 200]
    assert all("order" in body for body in won), won[:3]
    balance, total, rows, placed = money(app, account_id)
    assert placed == len(won) == rows - 1  # every acknowledged order is there, nothing else
    assert balance == total == 1000_000_000 - 89000 * len(won)
    audit_passes(app)


# ---------------------------------------------------------------- read-only

@contextmanager
def immutable(path):
    """The file made immutable (`chattr +i`): even root cannot open it for writing, as with a
    file on a read-only mount. The tests run as root, which file modes do not stop, so this
    is the honest way to get a database the server really cannot write. SQLite then opens it
    read-only, and every write fails with SQLITE_READONLY."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"the file system does not support immutable files: {done.stderr.strip()}")
    try:
        with pytest.raises(PermissionError):
            open(path, "r+b").close()
        yield
    finally:
        subprocess.run(["chattr", "-i", path], check=True)


def test_a_read_only_database_answers_503_and_reads_still_work(busy_app):
    app = busy_app
    account_id, key = make_partner(app)
    engine = app.extensions["serva.engine"]
    with immutable(db_file(app)):
        engine.dispose()  # connections opened from now on find the file read-only
        with serving(app) as url:
            _, response = order(url, key, 1)
            assert_busy(response)
            _, response = timed_post(url, action="balance", key=key)
            assert response.status_code == 200 and response.json()["balance"] == "100"
        engine.dispose()
    assert money(app, account_id)[3] == 0


def _env(app):
    return {**os.environ, **NO_RATE_LIMITS, "SERVA_DATABASE_URL": app.config["DATABASE_URL"],
            "SERVA_SECRET_KEY": "t",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize("command", [
    ["-c", "from serva.cli import main; main()", "serve", "--workers", "1", "--port", "0"],
    ["-c", "import wsgi"],  # what `make run` serves (waitress-serve wsgi:app)
    ["-c", "from serva.cli import main; main()", "demo"],  # `make run` writes the demo first
], ids=["serva serve", "wsgi (make run)", "serva demo"])
def test_the_servers_refuse_a_database_they_cannot_write(busy_app, command):
    app = busy_app
    app.extensions["serva.engine"].dispose()
    with immutable(db_file(app)):
        done = subprocess.run([sys.executable, *command], env=_env(app), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "readonly database" in lines[0] and "Traceback" not in done.stderr
    if "demo" not in command:
        assert "cannot write the database" in lines[0] and db_file(app) in lines[0]


def test_a_busy_database_at_start_is_not_refused(busy_app):
    """A lock held by someone else is transient: the start-up check lets it pass."""
    app = busy_app
    with write_lock_held(db_file(app)):
        started = time.monotonic()
        db.check_writable(app.extensions["serva.engine"])
        assert time.monotonic() - started < 3


def test_a_database_that_cannot_be_opened_answers_503(tmp_path):
    """The database's directory moved away under a running server (a lost mount): new
    connections fail with "unable to open database file", answered 503 `busy`, not 500."""
    home = tmp_path / "data"
    home.mkdir()
    app = make_app(home)
    _, key = make_partner(app)
    engine = app.extensions["serva.engine"]
    try:
        with serving(app) as url:
            engine.dispose()
            home.rename(tmp_path / "moved")
            try:
                _, response = order(url, key, 1)
                assert_busy(response)
            finally:
                (tmp_path / "moved").rename(home)
            engine.dispose()
            _, response = order(url, key, 2)
            assert response.status_code == 200 and "order" in response.json(), response.text
    finally:
        engine.dispose()
