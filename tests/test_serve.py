"""`serva serve --workers 2`: the multi-core production server (gunicorn), for real. A subprocess on a
free port against a temp-file database; orders placed from many threads land on both worker
processes, and the money invariants hold exactly as with one process: no overspend, every
loser refused for funds, balances and ledgers agree (audit). Every wait is bounded."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from serva import db, services
from serva.ids import parse_order
from serva.money import format_amount, parse_amount
from serva.schema import accounts, orders
from serva.cli import cli as serva_cli

from conftest import (NO_RATE_LIMITS, make_partner, post, post_retrying_busy, together,
                      wait_until_serving)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RATE = "0.37"  # per 1000; every order below is 1000 units
ACCOUNTS = 3
COVERED = 11  # orders each account can pay for
ATTEMPTS = 25  # orders each account tries


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def worker_pids(pid: int, count: int, deadline) -> list:
    """The master's worker processes, once there are `count` of them (gunicorn forks them one
    after another, and the first may answer before the last exists)."""
    while time.monotonic() < deadline:
        workers = _children(pid)
        if len(workers) == count:
            return workers
        time.sleep(0.1)
    pytest.fail(f"expected {count} workers, found {_children(pid)}")


def start_server(database_url, log_path, workers=2, env=None):
    """`serva serve --workers N` on a free port, its output into log_path; `env`: settings
    on top of the test environment's (no rate limits unless given)."""
    env = {**os.environ, **NO_RATE_LIMITS, "SERVA_DATABASE_URL": database_url,
           "SERVA_SECRET_KEY": "test-secret", **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "from serva.cli import main; main()",
               "serve", "--workers", str(workers), "--threads", "4", "--port", "0"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def server_url(process, log_path, deadline) -> str:
    """The address from the server's first log line (it was started on port 0)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serva serve exited with {process.returncode}:\n{log_path.read_text()}")
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        time.sleep(0.1)
    pytest.fail(f"serva serve did not start:\n{log_path.read_text()}")


def stop_server(process) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            pytest.fail("serva serve did not stop on SIGTERM")
    return process.returncode


def test_two_workers_place_orders_without_overspending(app, runner, tmp_path):
    charge = parse_amount(RATE)
    start = COVERED * charge + parse_amount("0.2")  # COVERED orders fit, one more does not
    partners = [make_partner(app, email=f"p{i}@example.com", balance=format_amount(start))
                for i in range(ACCOUNTS)]
    with app.app_context(), db.write() as conn:
        svc = str(services.add(conn, name="Followers", category="Test", rate=charge,
                               min_quantity=10, max_quantity=100_000))
    app.extensions["serva.engine"].dispose()  # the server processes own the database now

    log_path = tmp_path / "serve.log"
    process = start_server(app.config["DATABASE_URL"], log_path)
    try:
        deadline = time.monotonic() + 60
        url = server_url(process, log_path, deadline)
        wait_until_serving(url, partners[0][1], deadline)
        workers = worker_pids(process.pid, 2, deadline)
        before = {pid: _cpu_ticks(pid) for pid in workers}

        # Every request on a connection of its own, from 30 threads at once: the kernel spreads
        # the connections over both workers' sockets.
        def order(i):
            _, key = partners[i % ACCOUNTS]
            return post_retrying_busy(url, action="add", key=key, service=svc, quantity="1000",
                                      link=f"https://example.com/p/{i}")
        results = together(30, lambda t: [order(i) for i in range(t, ACCOUNTS * ATTEMPTS, 30)])
        results = [r for batch in results for r in batch]
        balances = together(20, lambda i: post(url, action="balance", key=partners[i % ACCOUNTS][1]))
        used = {pid: _cpu_ticks(pid) - before[pid] for pid in workers}
        assert sorted(_children(process.pid)) == sorted(workers)  # no worker died
    finally:
        code = stop_server(process)
    assert code == 0, log_path.read_text()
    assert all(used[pid] > 0 for pid in workers), f"a worker served nothing: {used}"

    assert all(status == 200 for status, _ in results + balances)
    bodies = [json.loads(text) for _, text in results]
    won = [b for b in bodies if "order" in b]
    lost = [b for b in bodies if "order" not in b]
    assert len(won) == ACCOUNTS * COVERED, [b for b in bodies][:5]
    assert {b.get("code") for b in lost} == {"insufficient_balance"}, lost[:3]
    assert len({b["order"] for b in won}) == len(won)
    assert all(json.loads(t) == {"balance": "0.2", "currency": "USD"} for _, t in balances)

    with app.app_context(), db.read() as conn:
        for account_id, _ in partners:
            left = conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()
            placed = conn.execute(select(func.count()).select_from(orders)
                                  .where(orders.c.account_id == account_id)).scalar()
            assert (left, placed) == (parse_amount("0.2"), COVERED)
    result = runner.invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output
    output = log_path.read_text(errors="replace")
    assert "database is locked" not in output
    assert "Traceback" not in output, output


def test_a_worker_killed_under_load_loses_no_acknowledged_order(app, runner, tmp_path):
    """kill -9 of one gunicorn worker while 8 threads place orders: the master replaces it,
    the server keeps answering, every order acknowledged to a client is in the database with
    its charge, an order whose answer was lost with the worker is at most one per failed
    request, and the audit is clean."""
    account_id, key = make_partner(app, balance="1000")
    with app.app_context(), db.write() as conn:
        svc = str(services.add(conn, name="Followers", category="Test", rate=parse_amount(RATE),
                               min_quantity=10, max_quantity=100_000))
    app.extensions["serva.engine"].dispose()

    log_path = tmp_path / "serve.log"
    process = start_server(app.config["DATABASE_URL"], log_path)
    acknowledged, failed, other = [], [], []
    stop = threading.Event()

    def place(t):
        for n in range(300):
            if stop.is_set():
                return
            try:
                status, text = post(url, action="add", key=key, service=svc, quantity="1000",
                                    link=f"https://example.com/k/{t}/{n}")
            except requests.RequestException as error:
                failed.append(error)
                continue
            body = json.loads(text)
            (acknowledged if status == 200 and "order" in body else other).append(body)

    try:
        deadline = time.monotonic() + 60
        url = server_url(process, log_path, deadline)
        wait_until_serving(url, key, deadline)
        victim, survivor = worker_pids(process.pid, 2, deadline)
        clients = [threading.Thread(target=place, args=(t,)) for t in range(8)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        time.sleep(1.5)
        stop.set()
        for client in clients:
            client.join(timeout=60)
        replaced = worker_pids(process.pid, 2, time.monotonic() + 30)
        assert victim not in replaced and survivor in replaced
        status, text = post(url, action="add", key=key, service=svc, quantity="1000",
                            link="https://example.com/after")
        assert status == 200 and "order" in json.loads(text), text
        acknowledged.append(json.loads(text))
    finally:
        stop.set()
        code = stop_server(process)
    assert code == 0, log_path.read_text()
    assert not other, other[:3]
    assert len(acknowledged) > 20, "too few orders went through for the test to mean anything"

    charge = parse_amount(RATE)
    with app.app_context(), db.read() as conn:
        stored = dict(conn.execute(select(orders.c.id, orders.c.charge)
                                   .where(orders.c.account_id == account_id)).all())
        left = conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()
    for body in acknowledged:
        order_id = parse_order(body["order"])
        assert stored.get(order_id) == charge == parse_amount(body["charge"]), body
    assert len(stored) - len(acknowledged) <= len(failed)
    assert left == parse_amount("1000") - charge * len(stored)
    result = runner.invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("ending", ["SIGKILL", "SIGTERM"])
def test_every_answered_request_has_its_access_log_line(app, tmp_path, ending):
    """The access-log line (with the request id a partner would quote) is written before the
    answer leaves: after kill -9 of the whole server right after the last answer, and after a
    SIGTERM, every answered request id is in the log."""
    _, key = make_partner(app)
    app.extensions["serva.engine"].dispose()
    log_path = tmp_path / "serve.log"
    process = start_server(app.config["DATABASE_URL"], log_path, workers=1)
    try:
        deadline = time.monotonic() + 60
        url = server_url(process, log_path, deadline)
        wait_until_serving(url, key, deadline)
        answered = together(8, lambda i: [
            requests.post(f"{url}/api/v1", data={"action": "balance", "key": key},
                          timeout=30).headers["x-serva-request-id"] for _ in range(25)])
        if ending == "SIGKILL":
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        stop_server(process)
    logged = set(re.findall(r"rid=([0-9a-f]{32})", log_path.read_text(errors="replace")))
    answered = [rid for batch in answered for rid in batch]
    assert len(answered) == 200
    missing = [rid for rid in answered if rid not in logged]
    assert not missing, f"{len(missing)} answered requests have no log line"


def test_hup_reloads_the_workers_gracefully(app, tmp_path):
    """kill -HUP: gunicorn starts new workers (new code, new config) and lets the old ones
    finish; requests sent throughout are all answered."""
    _, key = make_partner(app)
    app.extensions["serva.engine"].dispose()
    log_path = tmp_path / "serve.log"
    process = start_server(app.config["DATABASE_URL"], log_path)
    answers = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            answers.append(post(url, action="balance", key=key)[0])

    try:
        deadline = time.monotonic() + 60
        url = server_url(process, log_path, deadline)
        wait_until_serving(url, key, deadline)
        old = set(worker_pids(process.pid, 2, deadline))
        pollers = [threading.Thread(target=poll) for _ in range(4)]
        for poller in pollers:
            poller.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGHUP)
        while time.monotonic() < deadline and (set(_children(process.pid)) & old
                                               or len(_children(process.pid)) != 2):
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        for poller in pollers:
            poller.join(timeout=40)
        new = set(_children(process.pid))
    finally:
        stop.set()
        code = stop_server(process)
    assert code == 0
    assert len(new) == 2 and not new & old, (old, new)
    assert answers and set(answers) == {200}, answers


def test_logging_is_set_up_once_on_stderr_with_the_standard_library():
    """serva.logs.configure (serva serve, wsgi.py, serva worker): one StreamHandler on stderr,
    INFO and up, one line per record; configured again, still one handler (no doubled
    lines); an operator's own handlers on the root logger are left as they are."""
    script = """
import logging, sys
from serva import logs
logs.configure()
logs.configure()
root = logging.getLogger()
assert [type(h) for h in root.handlers] == [logging.StreamHandler], root.handlers
assert root.handlers[0].stream is sys.stderr and root.level == logging.INFO
logging.getLogger("serva.access").info("GET %s %s %.1fms rid=%s", "/api/v1", 200, 1.25, "ab")
logging.getLogger("serva.x").debug("not shown")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO serva\.access "
                        r"GET /api/v1 200 1\.2ms rid=ab\n", done.stderr), done.stderr

    own = """
import logging
logging.basicConfig(format="OWN %(message)s")
from serva import logs
logs.configure()
logging.getLogger("serva.access").warning("kept")
"""
    done = subprocess.run([sys.executable, "-c", own], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.stderr == "OWN kept\n", done.stderr


def test_a_worker_freezes_what_startup_made_out_of_the_collectors_way():
    """load_frozen (each gunicorn worker's and wsgi.py's app) moves every object alive after the
    app is made into the permanent generation: a full collection no longer walks the app, its
    modules and routes; what requests make is still collected."""
    import gc

    from serva import create_app
    from serva.serve import load_frozen

    class Cycle:
        pass

    assert gc.get_freeze_count() == 0
    try:
        app = load_frozen(lambda: create_app({"TESTING": True, "SECRET_KEY": "t",
                                              "DATABASE_URL": "sqlite://"}))
        frozen = gc.get_freeze_count()
        assert frozen > 1000 and gc.is_tracked(app.url_map)
        assert all(found is not app.url_map for found in gc.get_objects())  # in no generation
        later = Cycle()
        later.me = later
        assert any(found is later for found in gc.get_objects(generation=0))
        del later
        assert gc.collect() >= 1  # made after startup, a cycle is still found and freed
    finally:
        gc.unfreeze()
