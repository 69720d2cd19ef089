"""Fixtures in the Flask tutorial's shape: `app` on a temp-file SQLite database, `client`,
`runner`; plus helpers to make partners and call the API, and a real waitress server."""
import json
import os
import signal
import subprocess
import threading
import uuid
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
from waitress.server import create_server

from serva import create_app
from sqlalchemy import create_engine, event, text

from serva import accounts, db, keys, ledger, services
from serva.demo import CATALOG
from serva.money import parse_amount


# Load tests of a real server subprocess send far more than a key's default 100/second: they
# are about money and concurrency, so they run without rate limits (tests/test_ratelimit.py).
NO_RATE_LIMITS = {"SERVA_RATE_LIMIT_PER_KEY": "", "SERVA_RATE_LIMIT_INVALID_KEYS": ""}


PG_CANDIDATE_URLS = ([os.environ["SERVA_TEST_POSTGRES_URL"]]
                     if os.environ.get("SERVA_TEST_POSTGRES_URL")
                     else ["postgresql+psycopg://postgres@127.0.0.1:5432/test",
                           "postgresql+psycopg://root@127.0.0.1:5432/test"])


def pg_server_url():
    """The test PostgreSQL server's URL (SERVA_TEST_POSTGRES_URL, a SQLAlchemy URL without
    query string, or database `test` on 127.0.0.1:5432); skips the test when it is absent."""
    pytest.importorskip("psycopg")
    errors = []
    for url in PG_CANDIDATE_URLS:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception as error:  # noqa: BLE001 - any failure means: no PostgreSQL here
            errors.append(f"{url}: {error.__class__.__name__}")
        finally:
            engine.dispose()
    pytest.skip("PostgreSQL is not reachable (" + "; ".join(errors) + ")")


@contextmanager
def pg_schema():
    """A throwaway schema on the test PostgreSQL server, so parallel runs don't clash: yields
    a DATABASE_URL whose search_path is that schema, and drops it afterwards."""
    base = pg_server_url()
    name = f"serva_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url():
    """A throwaway PostgreSQL schema's DATABASE_URL (skipped without PostgreSQL)."""
    with pg_schema() as url:
        yield url


@pytest.fixture
def app(tmp_path):
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serva.sqlite'}",
    })
    db.init_schema(app.extensions["serva.engine"])
    yield app
    app.extensions["serva.engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def make_partner(app, email="partner@example.com", balance="100", approved=True, password=None):
    """An account with a balance (as a ledger top-up) and an active key: (account_id, raw_key)."""
    with app.app_context(), db.write() as conn:
        account_id = accounts.create(conn, email, password, approved=approved)
        amount = parse_amount(balance)
        if amount:
            ledger.post(conn, account_id, amount, "topup", "test top-up")
        return account_id, keys.create_key(conn, account_id)


@pytest.fixture
def partner(app):
    return make_partner(app)


@pytest.fixture
def api(client, partner):
    """Call the API as the partner with a form POST; returns the JSON body."""
    def call(action, key=None, **params):
        response = client.post("/api/v1", data={"action": action, "key": key or partner[1], **params})
        assert response.status_code == 200
        return response.get_json()
    return call


@contextmanager
def serving(app):
    """The app under waitress on 127.0.0.1 (a random port), as in production: yields its URL
    and stops the server from inside its own loop thread, so no socket is closed under it."""
    server = create_server(app, host="127.0.0.1", port=0, threads=8, asyncore_loop_timeout=0.1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        def stop():
            for channel in list(server._map.values()):
                channel.close()

        try:
            server.trigger.pull_trigger(stop)
        except OSError:  # the loop has already ended and closed its trigger
            pass
        thread.join(timeout=5)
        if thread.is_alive():
            server.close()
        server.task_dispatcher.shutdown(timeout=5)


@pytest.fixture
def live_server(app):
    with serving(app) as url:
        yield url


@pytest.fixture
def catalog(app):
    """The demo catalog: one service of each kind (ids 1234, 1235, 1236, 7788)."""
    with app.app_context(), db.write() as conn:
        for entry in CATALOG:
            services.add(conn, **entry)


@pytest.fixture
def sql_log(app):
    """Every SQL statement text that reaches SQLite, via sqlite3's own trace callback on each
    DBAPI connection the pool hands out: what the app emits, and nothing else."""
    engine = app.extensions["serva.engine"]
    statements = []

    def trace(dbapi_connection, _record, _proxy):
        dbapi_connection.set_trace_callback(statements.append)
    event.listen(engine, "checkout", trace)
    yield statements
    event.remove(engine, "checkout", trace)
    engine.dispose()


def together(count, work, timeout=90):
    """Run work(i) for i in range(count) on `count` threads released at the same moment."""
    barrier = threading.Barrier(count, timeout=20)

    def task(i):
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(task, i) for i in range(count)]
        return [future.result(timeout=timeout) for future in futures]


def post(url, **data):
    """A form POST to a running server's /api/v1 (`headers=` passes headers): (status, text)."""
    headers = data.pop("headers", None)
    response = requests.post(f"{url}/api/v1", data=data, headers=headers, timeout=30)
    return response.status_code, response.text


def retrying_busy(send, attempts=40, pause=0.05):
    """`send()` (one HTTP request, returning the response), sent again as a partner's client
    would while the answer is 503 `busy` (a write found no free writer place in time: nothing
    was committed, the contract says retry). Tests that fire many writes at once at an
    8-thread server on a loaded CI machine get a few of those by design; what they check is
    the outcome once everything is answered."""
    for _ in range(attempts - 1):
        response = send()
        if response.status_code != 503 or '"busy"' not in response.text:
            return response
        time.sleep(pause)
    return send()


def post_retrying_busy(url, **data):
    """`post`, retried while the answer is 503 `busy` (`retrying_busy`)."""
    headers = data.pop("headers", None)
    response = retrying_busy(lambda: requests.post(f"{url}/api/v1", data=data, headers=headers,
                                                   timeout=30))
    return response.status_code, response.text


def wait_until_serving(url, key, deadline, process=None, describe=lambda: ""):
    """Poll `balance` until the server at `url` answers, failing fast if `process` exits."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{describe()}")
        try:
            status, text = post(url, action="balance", key=key)
            if status == 200 and "balance" in json.loads(text):
                return
        except (requests.ConnectionError, requests.Timeout, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"server at {url} did not answer:\n{describe()}")


@pytest.fixture
def fake_provider():
    """A provider panel over real HTTP on 127.0.0.1 (tests/faulty_provider.py)."""
    from faulty_provider import FaultyProvider
    provider = FaultyProvider().start()
    yield provider
    provider.stop()


def stop_process_group(process, wait: float = 20) -> None:
    """SIGTERM to a server started in its own process group (start_new_session), then SIGKILL
    if it has not ended within `wait` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
